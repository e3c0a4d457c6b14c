"""One client's data, caches and teacher, read from a Flower ``Context``.

Everything expensive a client computes is kept in its node state
(``client_app.state.NodeState``, which persists across the rounds of a run in
simulation and in deployment): the frozen-base embeddings of its train and
validation rows, and its teacher's adapters, logits and figures. The teacher
is trained in chunks: each round's instructions say how many more epochs to
train it (``teacher_epochs``; 0 keeps it as it is), and a chunk continues
from the adapters the last one left. A node trains what it is told and no
more: one that lost its teacher rebuilds it only with the restore budget the
server sends once it learns of the loss (``teacher_restore_steps``). With
``teacher-cache`` on, embeddings and every teacher chunk also go to the
node's disk cache (``llm.cache``), keyed by everything that decides them, so
a restarted client or a later run with the same settings reuses them.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import Context

from client_app.runtime import runtime
from client_app.state import NodeState, TeacherView
from config.messages import teacher_steps as epochs_to_steps
from llm.cache import NodeCache, embeddings_key, teacher_key
from llm.inference import pooled_embeddings
from llm.probe import is_head, probe_accuracy
from llm.teacher import TeacherOutputs, finetune_teacher, probe_teacher
from llm.teacher_model import build_teacher_model, load_trainable_arrays
from quantum.executor import Executor
from quantum.student import QuantumStudent, build_student
from tasks.datasets import TextDataset

logger = logging.getLogger(__name__)


class ClientNode:
    """One message's view of a node: its run-long runtime and its per-node state.

    Parameters
    ----------
    context : Context
        Flower's node context: the run and node configs, and ``state``, which
        persists across the run's messages.
    """

    def __init__(self, context: Context) -> None:
        self.runtime = runtime(context)
        self.config = self.runtime.config
        self.node = self.runtime.node
        self.partition_id = self.node.partition_id
        self.store = NodeState(context.state)
        self.seconds: dict[str, float] = {}
        self.cache_hits = 0

    @property
    def name(self) -> str:
        """How logs name this client."""
        return f"client {self.partition_id}"

    @property
    def splits(self) -> tuple[TextDataset, TextDataset]:
        """(train, validation) rows of this client's partition."""
        return self.runtime.splits

    @property
    def optimizer(self) -> str:
        """The student optimizer on this node's device."""
        return self.runtime.optimizer

    @functools.cached_property
    def cache(self) -> NodeCache | None:
        """This node's on-disk cache, unless ``teacher-cache`` is off."""
        return NodeCache(self.node.cache_dir) if self.config.teacher.cache else None

    @property
    def executor(self) -> Executor:
        """Runs this node's student circuits on its device and meters the cost."""
        return self.runtime.executor(self.store.text)

    def student(
        self,
        in_features: int,
        arrays: Mapping[str, np.ndarray],
        server_round: int,
        *,
        shots: int = 0,
    ) -> QuantumStudent:
        """A student holding ``arrays`` (the global student), metering afresh.

        Shot-based sampling is seeded by (seed, round, partition, job), with
        ``shots`` per row (0: the node's ``shots`` setting).
        """
        executor = self.executor
        student = build_student(
            self.config.student, in_features, executor, self.config.federation.seed
        )
        student.set_arrays(arrays)
        executor.reset_meter()
        executor.reseed(server_round, self.partition_id)
        executor.set_shots(shots)
        return student

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Frozen-base embeddings of ``texts`` (the disk cache first)."""
        teacher = self.config.teacher
        key = embeddings_key(teacher.model, teacher.max_length, texts)
        cached = self.cache.load_embeddings(key) if self.cache else None
        if cached is not None:
            return cached
        features = pooled_embeddings(
            teacher.model,
            texts,
            max_length=teacher.max_length,
            batch_size=teacher.embed_batch_size,
        )
        if self.cache:
            self.cache.save_embeddings(key, features)
        return features

    def features(self) -> tuple[np.ndarray, np.ndarray]:
        """Frozen-base embeddings of the (train, validation) rows; computed once."""
        stored = self.store.arrays("features")
        if not stored:
            started = time.perf_counter()
            train, val = self.splits
            logger.info(
                "%s: %d train and %d validation rows; embedding them with the frozen %s",
                self.name,
                len(train),
                len(val),
                self.config.teacher.model,
            )
            stored = {"train": self._embed(train.texts), "val": self._embed(val.texts)}
            self.store.put_arrays("features", stored)
            self.seconds["embed"] = time.perf_counter() - started
        return stored["train"], stored["val"]

    def probe_val_accuracy(self) -> float:
        """A linear probe of the frozen embeddings on the validation rows; computed once."""
        numbers = self.store.numbers()
        if "probe-val-accuracy" not in numbers:
            (train_x, val_x), (train, val) = self.features(), self.splits
            accuracy = probe_accuracy(
                (train_x, train.labels), (val_x, val.labels), train.num_classes
            )
            self.store.put_numbers(**{"probe-val-accuracy": accuracy})
            return accuracy
        return float(numbers["probe-val-accuracy"])

    def _teacher_seed(self) -> int:
        # Federated adapters must start alike on every client; local ones differ.
        seed = self.config.federation.seed
        return seed if self.config.teacher.federation == "fedavg" else seed + self.partition_id

    def teacher_steps(self, epochs: float) -> int:
        """Optimizer steps that ``epochs`` over this client's train rows take."""
        train, _ = self.splits
        return epochs_to_steps(epochs, len(train), self.config.teacher.batch_size)

    @property
    def held_teacher_steps(self) -> int:
        """Fine-tuning steps of the teacher this node holds (0: none)."""
        if not self.store.arrays("teacher"):
            return 0
        return int(self.store.numbers().get("teacher-steps", 0))

    def teacher(self, epochs: float, restore_steps: int = 0) -> TeacherView:
        """The teacher after ``epochs`` more epochs of fine-tuning (0: as it is).

        A node holding fewer than ``restore_steps`` steps (it lost its state)
        first rebuilds its teacher with that many. A node with no teacher and
        no budget to build one refuses, before any training.

        Raises
        ------
        RuntimeError
            When the node holds no teacher and was sent no steps to build one.
        """
        has_teacher, held = bool(self.store.arrays("teacher")), self.held_teacher_steps
        restore = restore_steps if held < restore_steps else 0
        steps = self.teacher_steps(epochs)
        if not has_teacher and restore == 0 and steps == 0:
            raise RuntimeError(
                "this node holds no teacher (its state was lost) and was sent no steps to "
                "build one; after this failure the server sends it a restore budget"
            )
        seconds = 0.0
        total = 0 if restore else held
        for chunk in (restore, steps):
            if chunk == 0:
                continue
            out, trained = self._train_teacher(chunk, total)
            self._remember_teacher(out, total + chunk, first=total == 0)
            seconds += out.seconds if trained else 0.0
            total += chunk
        self.seconds["teacher"] = seconds
        return self._view(seconds, steps, restore)

    def _train_teacher(self, steps: int, total: int) -> tuple[TeacherOutputs, bool]:
        """``steps`` more steps from the adapters left at ``total`` (see :meth:`_fine_tune`)."""
        train, val = self.splits
        cfg, seed = self.config.teacher, self._teacher_seed()
        held = self.teacher_schedule if total else []
        schedule = [*held, total + steps]
        key = teacher_key(cfg, seed, train.texts, train.labels, val.texts, val.labels, schedule)
        # Chunks on top of federated adapters are keyed by their start (federated_teacher).
        cache = self.cache if cfg.federation == "local" else None
        initial = self.store.arrays("adapters") if total else None
        out, trained = self._fine_tune(key, cache, steps, initial, total, cfg.head == "probe")
        self.store.text["teacher-schedule"] = schedule
        return out, trained

    def _fine_tune(
        self,
        key: str,
        cache: NodeCache | None,
        steps: int,
        initial: Mapping[str, np.ndarray] | None,
        start_step: int,
        probe: bool,
    ) -> tuple[TeacherOutputs, bool]:
        """The one way this node fine-tunes a teacher chunk, local or federated: ``steps``
        steps from ``initial`` (None: fresh, seeded), the disk cache first (``key``).

        Returns the teacher and whether it was trained here (False: read from the cache).
        """
        out = cache.load_teacher(key) if cache else None
        if out is not None:
            self.cache_hits += 1
            return out, False
        cfg = self.config.teacher
        logger.info(
            "%s: fine-tuning its teacher (%s), steps %d to %d",
            self.name,
            cfg.peft_method,
            start_step + 1,
            start_step + steps,
        )
        train, val = self.splits
        out = finetune_teacher(
            train,
            val,
            cfg,
            self._teacher_seed(),
            initial=dict(initial) if initial is not None else None,
            steps=steps,
            start_step=start_step,
            name=self.name,
            probe_features=self.features() if probe else None,
        )
        if cache:
            cache.save_teacher(key, out)
        return out, True

    @property
    def teacher_schedule(self) -> list[int]:
        """Total steps at the end of each chunk of the local teacher held (its cache key)."""
        return [int(s) for s in self.store.text.get("teacher-schedule", [])]  # type: ignore[union-attr]

    def _remember_teacher(
        self, out: TeacherOutputs, total_steps: int, *, first: bool, version: int = 0
    ) -> None:
        self.store.put_arrays("teacher", {"train": out.train_logits, "val": out.val_logits})
        self.store.put_arrays("adapters", out.arrays)
        before = self.store.numbers().get("teacher-untrained-val-loss", out.untrained_val_loss)
        self.store.put_numbers(
            **{
                "teacher-val-loss": out.val_loss,
                "teacher-val-accuracy": out.val_accuracy,
                "teacher-untrained-val-loss": out.untrained_val_loss if first else before,
                "teacher-steps": total_steps,
                "teacher-version": version,
            }
        )

    def teacher_model(self) -> tuple[Any, Any]:
        """(model, tokenizer) of this node's fine-tuned teacher, rebuilt from its state.

        For scoring the teacher on other rows (``bench/quality.py``); call after
        the node has trained its teacher.
        """
        train, _ = self.splits
        model, tokenizer = build_teacher_model(
            self.config.teacher, train.num_classes, self._teacher_seed()
        )
        load_trainable_arrays(model, self.store.arrays("adapters"))
        return model, tokenizer

    def federated_teacher(
        self,
        received: dict[str, np.ndarray] | None,
        teacher_round: int,
        final: bool,
        epochs: float,
    ) -> tuple[TeacherView, dict[str, np.ndarray] | None]:
        """Teacher federation (``teacher-federation=fedavg``) for one round.

        Round ``teacher_round`` <= ``teacher-fedavg-rounds``: start from the
        ``received`` average (fresh, seeded alike on all clients, in round 1;
        with the server's pooled probe head when it sends one),
        fine-tune for ``epochs`` (the budget sent; 0 only evaluates), keep the
        new logits and return the adapters and head for the server to average.
        ``final``: load the final average, keep its logits and return no arrays (a
        node whose last adapters are that average already, as when every client
        kept its start, keeps what it has and computes nothing).
        The teacher's total steps count every chunk this node trained. With the
        disk cache on, a chunk is reused when the same rows, settings, steps and
        received adapters come again (a restarted node, a repeated run).
        """
        if final and received is not None and self._holds(received):
            self.store.put_numbers(**{"teacher-version": teacher_round})
            self.seconds["teacher"] = 0.0
            return self._view(0.0, 0, 0), None
        if final and received is not None and is_head(received):
            return self._final_head(received, teacher_round), None
        train, val = self.splits
        cfg, seed = self.config.teacher, self._teacher_seed()
        fresh = received is None or is_head(received)  # round 1: no adapters yet
        before = 0 if fresh else self.held_teacher_steps
        steps = 0 if final else self.teacher_steps(epochs)
        key = teacher_key(
            cfg, seed, train.texts, train.labels, val.texts, val.labels, [steps], start=received
        )
        probe = cfg.head == "probe" and fresh
        out, trained = self._fine_tune(key, self.cache, steps, received, 0, probe)
        seconds = out.seconds if trained else 0.0
        self._remember_teacher(out, before + out.steps, first=fresh, version=teacher_round)
        self.seconds["teacher"] = seconds
        return self._view(seconds, out.steps, 0), None if final else out.arrays

    def _final_head(self, head: dict[str, np.ndarray], teacher_round: int) -> TeacherView:
        """The final federated teacher is a probe head alone (``teacher-policy=validated``
        kept the teachers' start): its logits from the embeddings this node holds."""
        out = probe_teacher(head, self.features(), self.splits[1].labels)
        self._remember_teacher(out, self.held_teacher_steps, first=True, version=teacher_round)
        self.seconds["teacher"] = out.seconds
        logger.info(
            "%s: the final teacher is the pooled probe, val loss %.4f", self.name, out.val_loss
        )
        return self._view(out.seconds, 0, 0)

    def _holds(self, arrays: Mapping[str, np.ndarray]) -> bool:
        """Whether this node's teacher has exactly these adapters and head."""
        held = self.store.arrays("adapters")
        return set(held) == set(arrays) and all(np.array_equal(held[k], arrays[k]) for k in arrays)

    @property
    def teacher_version(self) -> int:
        """The teacher round whose adapters gave the stored logits (0: local; -1: none yet)."""
        if not self.store.arrays("teacher"):
            return -1
        return int(self.store.numbers().get("teacher-version", 0))

    def _view(self, seconds: float, steps: int, restore_steps: int) -> TeacherView:
        logits, numbers = self.store.arrays("teacher"), self.store.numbers()
        return TeacherView(
            train_logits=logits["train"],
            val_logits=logits["val"],
            val_loss=numbers["teacher-val-loss"],
            val_accuracy=numbers["teacher-val-accuracy"],
            untrained_val_loss=numbers["teacher-untrained-val-loss"],
            seconds_this_round=seconds,
            steps_this_round=steps,
            restore_steps=restore_steps,
            total_steps=int(numbers["teacher-steps"]),
            version=int(numbers.get("teacher-version", 0)),
        )
