"""The server's rows: the validation split that steers every decision and the test rows
scored once, embedded by the frozen base model, and the global student scored on them."""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord

from config.run_config import RunConfig
from llm.inference import pooled_embeddings
from quantum.distill import evaluate_student
from quantum.student import QuantumStudent
from tasks.datasets import DataSource, TextDataset
from tasks.splits import server_datasets

logger = logging.getLogger(__name__)


@dataclass
class ServerSplit:
    """Server rows as student features: the validation split, or the test split."""

    name: str  # "val" or "test"
    features: np.ndarray
    labels: np.ndarray
    num_classes: int
    majority_rate: float


class ServerData:
    """The server's two roles of rows (see ``tasks.splits``), embedded by the frozen base.

    :attr:`val` steers every decision and every per-round curve; :attr:`test`
    is embedded only when first scored (at the end, or each round with
    ``test-every-round``) and is read by no policy.
    """

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.test_embed_seconds = 0.0
        source = DataSource.from_config(config.data)
        val_rows, self.test_rows = server_datasets(source, config.data, config.federation.seed)
        self.val_rows = val_rows
        logger.info(
            "data: %s, %d classes; server validation %d rows (%s), test %d rows (scored at "
            "the end); embedding the validation rows with the frozen %s",
            source.description,
            val_rows.num_classes,
            len(val_rows),
            "the task's own" if source.has_split("validation") else "carved from train",
            len(self.test_rows),
            config.teacher.model,
        )
        self.val = embed_split(config, val_rows, "val")

    @functools.cached_property
    def test(self) -> ServerSplit:
        """The test rows (embedded on first use; the seconds go to ``test_embed_seconds``)."""
        started = time.perf_counter()
        split = embed_split(self.config, self.test_rows, "test")
        self.test_embed_seconds = time.perf_counter() - started
        return split


def embed_split(config: RunConfig, rows: TextDataset, name: str) -> ServerSplit:
    """``rows`` as student features: the frozen base model's pooled embeddings."""
    teacher = config.teacher
    features = pooled_embeddings(
        teacher.model, rows.texts, teacher.max_length, teacher.embed_batch_size
    )
    return ServerSplit(name, features, rows.labels, rows.num_classes, rows.majority_rate())


def evaluate_global(
    student: QuantumStudent, arrays: ArrayRecord, split: ServerSplit
) -> dict[str, float]:
    """Cross-entropy (nats) and accuracy of the global student ``arrays`` on ``split``."""
    student.set_arrays({k: a.numpy() for k, a in arrays.items()})
    loss, accuracy = evaluate_student(student, split.features, split.labels)
    return {"loss": loss, "accuracy": accuracy}
