"""Partitioning: disjoint, covering, seeded; Dirichlet is non-IID; local splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from config.errors import ConfigError
from config.run_config import DataConfig
from tasks.datasets import DataSource
from tasks.partition import partition_indices, sample_rows, train_val_split
from tasks.splits import client_datasets, data_roles, server_datasets

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
    source = DataSource("tweeteval", str(shared_data / "tweeteval_sentiment"))
    data = DataConfig(max_train_rows=300, server_val_rows=100, test_rows=50)
    splits = [client_datasets(source, data, i, 3, seed=0) for i in range(3)]
    texts = [t for train, val in splits for t in train.texts + val.texts]
    assert len(texts) == 300
    assert all(len(train) == 80 and len(val) == 20 for train, val in splits)
    val, test = server_datasets(source, data, seed=0)
    assert (len(val), len(test), val.num_classes) == (100, 50, 3)
    # TweetEval has its own validation split: the server's rows come from val_*.txt.
    val_texts = set((shared_data / "tweeteval_sentiment" / "val_text.txt").read_text().split("\n"))
    assert set(val.texts) <= val_texts
    assert len(data_roles(source, data, seed=0).carved) == 0


def test_without_a_validation_split_the_server_rows_are_carved_from_train(
    shared_data: Path,
) -> None:
    source = DataSource("genomic", str(shared_data / "genomic_nontata_promoters"))
    data = DataConfig(task="genomic", max_train_rows=0, server_val_rows=300)
    roles = data_roles(source, data, seed=3)
    assert len(roles.carved) == 300 and len(roles.pool) == 7227 - 300
    assert not set(roles.carved) & set(roles.pool)  # no client ever trains on them
    val, test = server_datasets(source, data, seed=3)
    train = source.load("train")
    assert val.texts == [train.texts[i] for i in roles.carved] and len(test) == 1807
    clients = [client_datasets(source, data, i, 4, seed=3) for i in range(4)]
    client_texts = {t for a, b in clients for t in a.texts + b.texts}
    assert not client_texts & set(val.texts)
    assert data_roles(source, data, seed=3).carved.tolist() == roles.carved.tolist()  # seeded


def test_empty_partition_is_a_clear_error(shared_data: Path) -> None:
    source = DataSource("tweeteval", str(shared_data / "tweeteval_sentiment"))
    with pytest.raises(ConfigError, match="partition 0 of 3 has 1 row"):
        client_datasets(source, DataConfig(max_train_rows=3), 0, 3, seed=0)
