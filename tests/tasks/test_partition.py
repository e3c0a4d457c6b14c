"""Partitioning: disjoint, covering, seeded; Dirichlet is non-IID; local splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from config.errors import ConfigError
from tasks.datasets import load_task
from tasks.partition import partition_indices, sample_rows, train_val_split
from tasks.splits import client_datasets, server_dataset

LABELS = np.random.default_rng(1).integers(0, 3, size=600)


def _all(scheme: str, seed: int, n: int = 4, alpha: float = 0.5) -> list[np.ndarray]:
    return [
        partition_indices(LABELS, n, i, scheme=scheme, alpha=alpha, seed=seed) for i in range(n)
    ]


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_disjoint_covering_and_seeded(scheme: str) -> None:
    parts = _all(scheme, seed=3)
    joined = np.concatenate(parts)
    assert len(joined) == len(LABELS) == len(set(joined.tolist()))
    assert all(np.array_equal(a, b) for a, b in zip(parts, _all(scheme, seed=3), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(parts, _all(scheme, seed=4), strict=True))


def test_iid_sizes_are_equal_and_mixed() -> None:
    parts = _all("iid", seed=0)
    assert [len(p) for p in parts] == [150, 150, 150, 150]
    assert not np.array_equal(parts[0], np.arange(150))  # shuffled, not the first rows


def test_dirichlet_is_non_iid() -> None:
    shares = np.array(
        [np.bincount(LABELS[p], minlength=3) / len(p) for p in _all("dirichlet", 0, alpha=0.1)]
    )
    iid = np.array([np.bincount(LABELS[p], minlength=3) / len(p) for p in _all("iid", 0)])
    assert (shares.max(axis=0) - shares.min(axis=0)).max() > 0.5
    assert (iid.max(axis=0) - iid.min(axis=0)).max() < 0.15


def test_partition_errors() -> None:
    with pytest.raises(ConfigError, match="partitioner='shards'"):
        partition_indices(LABELS, 2, 0, scheme="shards")
    with pytest.raises(ConfigError, match="partition-id=5"):
        partition_indices(LABELS, 2, 5)
    with pytest.raises(ConfigError, match="num-partitions=0"):
        partition_indices(LABELS, 0, 0)


def test_sample_rows() -> None:
    rows = sample_rows(100, 10, seed=0)
    assert len(rows) == 10 and np.all(np.diff(rows) > 0)
    assert np.array_equal(rows, sample_rows(100, 10, seed=0))
    assert np.array_equal(sample_rows(5, 0, seed=0), np.arange(5))


def test_train_val_split() -> None:
    rows = np.arange(100, 200)
    train, val = train_val_split(rows, np.repeat([0, 1], 100), 0.2, seed=0)
    assert len(val) == 20 and len(train) == 80
    assert set(train) | set(val) == set(rows) and not set(train) & set(val)
    small_train, small_val = train_val_split(np.array([3, 4]), np.zeros(10, int), 0.2, seed=0)
    assert len(small_train) == 1 and len(small_val) == 1


def test_client_and_server_splits_on_shared_data(shared_data: Path) -> None:
    full = load_task("tweeteval", "train", str(shared_data / "tweeteval_sentiment"))
    splits = [
        client_datasets(full, i, 3, scheme="iid", alpha=0.5, max_rows=300, val_fraction=0.2, seed=0)
        for i in range(3)
    ]
    texts = [t for train, val in splits for t in train.texts + val.texts]
    assert len(texts) == 300
    assert all(len(train) == 80 and len(val) == 20 for train, val in splits)
    test = load_task("tweeteval", "test", str(shared_data / "tweeteval_sentiment"))
    held_out = server_dataset(test, 100, seed=0)
    assert len(held_out) == 100 and held_out.num_classes == 3


def test_empty_partition_is_a_clear_error(shared_data: Path) -> None:
    full = load_task("tweeteval", "train", str(shared_data / "tweeteval_sentiment"))
    with pytest.raises(ConfigError, match="partition 0 of 3 has 1 row"):
        client_datasets(full, 0, 3, scheme="iid", alpha=0.5, max_rows=3, val_fraction=0.2, seed=0)
