"""One client's data and its per-node caches.

Everything expensive a client computes once is kept in Flower's per-node
``context.state`` (it persists across the rounds of a run, in simulation and
in deployment): the frozen-base embeddings of its train and validation rows,
and, after its first participation, its fine-tuned teacher's logits and
validation metrics. With ``teacher-cache`` on, both also go to the node's disk
cache (``llm.cache``), so that a restarted client or a later run reuses them.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord

from client_app.runtime import runtime
from llm.cache import NodeCache, embeddings_key, teacher_key
from llm.teacher import (
    TeacherOutputs,
    build_teacher_model,
    finetune_teacher,
    load_trainable_arrays,
    pooled_embeddings,
)
from quantum.executor import Executor
from quantum.student import QuantumStudent, build_student
from tasks.datasets import TextDataset

logger = logging.getLogger(__name__)

_FEATURES = "features"
_TEACHER = "teacher"
_TEACHER_METRICS = "teacher-metrics"
_DEVICE = "device"
_TEACHER_ARRAYS = "teacher-arrays"


@dataclass(frozen=True)
class TeacherView:
    """The cached teacher outputs a round needs."""

    train_logits: np.ndarray
    val_logits: np.ndarray
    val_loss: float
    val_accuracy: float
    untrained_val_loss: float
    seconds_this_round: float


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
        self.state = context.state
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
        if _DEVICE not in self.state.config_records:
            self.state[_DEVICE] = ConfigRecord({})
        return self.runtime.executor(self.state.config_records[_DEVICE])

    def student(
        self, in_features: int, arrays: Mapping[str, np.ndarray], server_round: int
    ) -> QuantumStudent:
        """A student holding ``arrays`` (the global student), metering afresh.

        Shot-based sampling is seeded by (seed, round, partition, job).
        """
        executor = self.executor
        student = build_student(
            self.config.student, in_features, executor, self.config.federation.seed
        )
        student.set_arrays(arrays)
        executor.reset_meter()
        executor.reseed(server_round, self.partition_id)
        return student

    def _embed(self, texts: list[str]) -> np.ndarray:
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
        """Frozen-base embeddings of the (train, validation) rows; cached."""
        if _FEATURES not in self.state.array_records:
            started = time.perf_counter()
            train, val = self.splits
            logger.info(
                "%s: %d train and %d validation rows; embedding them with the frozen %s",
                self.name,
                len(train),
                len(val),
                self.config.teacher.model,
            )
            self.state[_FEATURES] = ArrayRecord(
                {"train": Array(self._embed(train.texts)), "val": Array(self._embed(val.texts))}
            )
            self.seconds["embed"] = time.perf_counter() - started
        record = self.state.array_records[_FEATURES]
        return record["train"].numpy(), record["val"].numpy()

    def _remember_teacher(self, out: TeacherOutputs, version: int = 0) -> None:
        self.state[_TEACHER] = ArrayRecord(
            {"train": Array(out.train_logits), "val": Array(out.val_logits)}
        )
        self.state[_TEACHER_ARRAYS] = ArrayRecord({k: Array(v) for k, v in out.arrays.items()})
        self.state[_TEACHER_METRICS] = MetricRecord(
            {
                "val-loss": out.val_loss,
                "val-accuracy": out.val_accuracy,
                "untrained-val-loss": out.untrained_val_loss,
                "steps": out.steps,
                "version": version,
            }
        )

    def _teacher_seed(self) -> int:
        # Federated adapters must start alike on every client; local ones differ.
        seed = self.config.federation.seed
        return seed if self.config.teacher.federation == "fedavg" else seed + self.partition_id

    def teacher(self) -> TeacherView:
        """The fine-tuned teacher's outputs; fine-tunes (or reads the cache) on first call."""
        seconds = 0.0
        if _TEACHER not in self.state.array_records:
            train, val = self.splits
            cfg, seed = self.config.teacher, self._teacher_seed()
            key = teacher_key(cfg, seed, train.texts, train.labels, val.texts, val.labels)
            # A federated teacher depends on the other clients: never cached.
            cache = self.cache if cfg.federation == "local" else None
            out = cache.load_teacher(key) if cache else None
            if out is None:
                logger.info("%s: fine-tuning its teacher (%s)", self.name, cfg.peft_method)
                out = finetune_teacher(train, val, cfg, seed=seed, name=self.name)
                seconds = out.seconds
                if cache:
                    cache.save_teacher(key, out)
            else:
                self.cache_hits += 1
            self._remember_teacher(out)
        self.seconds["teacher"] = seconds
        return self._view(seconds)

    def teacher_model(self) -> tuple[Any, Any]:
        """(model, tokenizer) of this node's fine-tuned teacher, rebuilt from its state.

        For scoring the teacher on other rows (``bench/quality.py``); call after
        the node has trained its teacher.
        """
        train, _ = self.splits
        model, tokenizer = build_teacher_model(
            self.config.teacher, train.num_classes, self._teacher_seed()
        )
        record = self.state.array_records[_TEACHER_ARRAYS]
        load_trainable_arrays(model, {k: a.numpy() for k, a in record.items()})
        return model, tokenizer

    def federated_teacher(
        self, received: dict[str, np.ndarray] | None, teacher_round: int, final: bool
    ) -> tuple[TeacherView, dict[str, np.ndarray] | None]:
        """Teacher federation (``teacher-federation=fedavg``) for one round.

        Round ``teacher_round`` <= ``teacher-fedavg-rounds``: start from the
        ``received`` average (fresh, seeded alike on all clients, in round 1),
        fine-tune for ``teacher-epochs``, keep the new logits and return the
        trained adapters and head for the server to average. ``final``: load
        the final average, keep its logits and return no arrays.
        """
        train, val = self.splits
        out = finetune_teacher(
            train,
            val,
            self.config.teacher,
            seed=self._teacher_seed(),
            initial=received,
            epochs=0.0 if final else None,
            name=self.name,
        )
        self._remember_teacher(out, version=teacher_round)
        self.seconds["teacher"] = out.seconds
        return self._view(out.seconds), None if final else out.arrays

    @property
    def teacher_version(self) -> int:
        """The teacher round whose adapters gave the cached logits (0: local teacher)."""
        if _TEACHER_METRICS not in self.state.metric_records:
            return -1
        metrics = self.state.metric_records[_TEACHER_METRICS]
        return int(_stored(metrics, "version")) if "version" in metrics else 0

    def _view(self, seconds: float) -> TeacherView:
        logits = self.state.array_records[_TEACHER]
        metrics = self.state.metric_records[_TEACHER_METRICS]
        return TeacherView(
            train_logits=logits["train"].numpy(),
            val_logits=logits["val"].numpy(),
            val_loss=_stored(metrics, "val-loss"),
            val_accuracy=_stored(metrics, "val-accuracy"),
            untrained_val_loss=_stored(metrics, "untrained-val-loss"),
            seconds_this_round=seconds,
        )


def _stored(metrics: MetricRecord, key: str) -> float:
    """A number this node stored in its state."""
    value = metrics[key]
    assert isinstance(value, int | float), (key, value)
    return float(value)
