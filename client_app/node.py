"""One client's data and its per-node caches.

Everything expensive a client computes once is kept in Flower's per-node
``context.state`` (it persists across the rounds of a run, in simulation and
in deployment): the frozen-base embeddings of its train and validation rows,
and, after its first participation, its fine-tuned teacher's logits and
validation metrics.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, Context, MetricRecord

from config.errors import ConfigError
from config.messages import metric_float
from config.run_config import RunConfig
from llm.teacher import finetune_teacher, pooled_embeddings
from quantum.devices import check_ibm_credentials, parse_device
from quantum.optimizers import resolve_optimizer
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
        try:
            self.partition_id = int(context.node_config["partition-id"])
            self.num_partitions = int(context.node_config["num-partitions"])
        except KeyError as err:
            raise ConfigError(
                f"node config lacks {err.args[0]!r}: start the SuperNode with "
                '--node-config "partition-id=<i> num-partitions=<n>"'
            ) from None
        self.seconds: dict[str, float] = {}
        # A node may run its student on its own device (e.g. one site on a QPU).
        self.device = str(context.node_config.get("device", config.student.device))
        device = parse_device(self.device)
        self.optimizer = resolve_optimizer(config.student.optimizer, device)
        if device.is_hardware:  # before any data is loaded or teacher trained
            check_ibm_credentials()
        if self.device != config.student.device:
            logger.info("node %d: device %s from its node config", self.partition_id, self.device)

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
            self.num_partitions,
            scheme=data.partitioner,
            alpha=data.dirichlet_alpha,
            max_rows=data.max_train_rows,
            val_fraction=data.val_fraction,
            seed=self.config.federation.seed,
        )

    def features(self) -> tuple[np.ndarray, np.ndarray]:
        """Frozen-base embeddings of the (train, validation) rows; cached."""
        if _FEATURES not in self.state.array_records:
            started = time.perf_counter()
            teacher = self.config.teacher
            train, val = self.splits
            embed = functools.partial(
                pooled_embeddings,
                teacher.model,
                max_length=teacher.max_length,
                batch_size=teacher.embed_batch_size,
            )
            self.state[_FEATURES] = ArrayRecord(
                {"train": Array(embed(train.texts)), "val": Array(embed(val.texts))}
            )
            self.seconds["embed"] = time.perf_counter() - started
        record = self.state.array_records[_FEATURES]
        return record["train"].numpy(), record["val"].numpy()

    def teacher(self) -> TeacherView:
        """The fine-tuned teacher's outputs; fine-tunes on first call of the run."""
        seconds = 0.0
        if _TEACHER not in self.state.array_records:
            train, val = self.splits
            out = finetune_teacher(
                train,
                val,
                self.config.teacher,
                seed=self.config.federation.seed + self.partition_id,
            )
            seconds = out.seconds
            self.state[_TEACHER] = ArrayRecord(
                {"train": Array(out.train_logits), "val": Array(out.val_logits)}
            )
            self.state[_TEACHER_METRICS] = MetricRecord(
                {
                    "val-loss": out.val_loss,
                    "val-accuracy": out.val_accuracy,
                    "untrained-val-loss": out.untrained_val_loss,
                    "steps": out.steps,
                }
            )
        self.seconds["teacher"] = seconds
        logits = self.state.array_records[_TEACHER]
        metrics = self.state.metric_records[_TEACHER_METRICS]
        return TeacherView(
            train_logits=logits["train"].numpy(),
            val_logits=logits["val"].numpy(),
            val_loss=metric_float(metrics, "val-loss"),
            val_accuracy=metric_float(metrics, "val-accuracy"),
            untrained_val_loss=metric_float(metrics, "untrained-val-loss"),
            seconds_this_round=seconds,
        )
