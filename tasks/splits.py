"""What each party trains and evaluates on."""

from __future__ import annotations

from config.errors import ConfigError
from tasks.datasets import TextDataset
from tasks.partition import partition_indices, sample_rows, train_val_split


def client_datasets(
    full_train: TextDataset,
    partition_id: int,
    num_partitions: int,
    *,
    scheme: str,
    alpha: float,
    max_rows: int,
    val_fraction: float,
    seed: int,
) -> tuple[TextDataset, TextDataset]:
    """A client's (train, validation) rows.

    The train split is first capped at ``max_rows`` (the same seeded pool for
    every client), then partitioned, then the partition is split into local
    train and validation rows.
    """
    pool = sample_rows(len(full_train), max_rows, seed)
    positions = partition_indices(
        full_train.labels[pool],
        num_partitions,
        partition_id,
        scheme=scheme,
        alpha=alpha,
        seed=seed,
    )
    if len(positions) < 2:
        raise ConfigError(
            f"partition {partition_id} of {num_partitions} has {len(positions)} row(s): "
            "lower num-partitions, raise max-train-rows or raise dirichlet-alpha"
        )
    rows = pool[positions]
    train_rows, val_rows = train_val_split(
        rows, full_train.labels, val_fraction, seed + partition_id
    )
    return full_train.subset(train_rows), full_train.subset(val_rows)


def server_dataset(full_test: TextDataset, max_rows: int, seed: int) -> TextDataset:
    """The server's held-out rows for global evaluation (a seeded subset of the test split)."""
    return full_test.subset(sample_rows(len(full_test), max_rows, seed))
