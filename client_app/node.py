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

import numpy as np
from flwr.app import Array, ArrayRecord, Context, MetricRecord

from config.node_config import NodeConfig
from config.run_config import RunConfig
from llm.cache import NodeCache, embeddings_key, teacher_key
from llm.teacher import TeacherOutputs, finetune_teacher, pooled_embeddings
from quantum.devices import make_executor
from quantum.executor import Executor
from quantum.optimizers import resolve_optimizer
from quantum.student import QuantumStudent, build_student, circuit_spec, device_spec
from tasks.datasets import TextDataset, load_task
from tasks.splits import client_datasets

logger = logging.getLogger(__name__)

_FEATURES = "features"
_TEACHER = "teacher"
_TEACHER_METRICS = "teacher-metrics"


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
    """A client's partition and caches, read from a Flower ``Context``."""

    def __init__(self, context: Context, config: RunConfig) -> None:
        self.config = config
        self.state = context.state
        self.node = NodeConfig.from_flat(context.node_config)
        self.partition_id = self.node.partition_id
        self.seconds: dict[str, float] = {}
        self.cache_hits = 0
        # A node may run its student on its own device (e.g. one site on a QPU).
        self.device = device_spec(config.student, self.node.device)
        self.optimizer = resolve_optimizer(config.student.optimizer, self.device)
        self.device.check_access()  # before any data is loaded or teacher trained
        if self.node.device:
            logger.info(
                "node %d: device %s from its node config", self.partition_id, self.node.device
            )

    @functools.cached_property
    def splits(self) -> tuple[TextDataset, TextDataset]:
        """(train, validation) rows of this client's partition."""
        data = self.config.data
        full = load_task(
            data.task, "train", data.data_dir, kmer=data.kmer, kmer_stride=data.kmer_stride
        )
        return client_datasets(
            full,
            self.partition_id,
            self.node.num_partitions,
            scheme=data.partitioner,
            alpha=data.dirichlet_alpha,
            max_rows=data.max_train_rows,
            val_fraction=data.val_fraction,
            seed=self.config.federation.seed,
        )

    @functools.cached_property
    def cache(self) -> NodeCache | None:
        """This node's on-disk cache, unless ``teacher-cache`` is off."""
        return NodeCache(self.node.cache_dir) if self.config.teacher.cache else None

    @functools.cached_property
    def executor(self) -> Executor:
        """Runs this node's student circuits on its device and meters the cost."""
        train, _ = self.splits
        circuit = circuit_spec(self.config.student, train.num_classes)
        return make_executor(self.device, circuit, seed=self.config.federation.seed)

    def student(self, in_features: int, arrays: Mapping[str, np.ndarray]) -> QuantumStudent:
        """A student holding ``arrays`` (the global student), metering afresh."""
        student = build_student(
            self.config.student, in_features, self.executor, self.config.federation.seed
        )
        student.set_arrays(arrays)
        self.executor.reset_meter()
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
                out = finetune_teacher(train, val, cfg, seed=seed)
                seconds = out.seconds
                if cache:
                    cache.save_teacher(key, out)
            else:
                self.cache_hits += 1
            self._remember_teacher(out)
        self.seconds["teacher"] = seconds
        return self._view(seconds)

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
