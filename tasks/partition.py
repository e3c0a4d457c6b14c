"""Row sampling, client partitioning (flwr-datasets partitioners) and local splits."""

from __future__ import annotations

import warnings

import numpy as np

from config.errors import ConfigError

SCHEMES = ("iid", "dirichlet")


def sample_rows(n_rows: int, max_rows: int, seed: int) -> np.ndarray:
    """A seeded, sorted subset of ``range(n_rows)`` of size ``max_rows`` (all if ``<= 0``)."""
    if max_rows <= 0 or max_rows >= n_rows:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=max_rows, replace=False))


def partition_indices(
    labels: np.ndarray,
    num_partitions: int,
    partition_id: int,
    *,
    scheme: str = "iid",
    alpha: float = 0.5,
    seed: int = 42,
) -> np.ndarray:
    """Positions (into ``labels``) of partition ``partition_id``, sorted.

    ``iid`` shuffles the rows with ``seed`` and cuts them into equal
    contiguous shards (flwr-datasets ``IidPartitioner``); ``dirichlet`` splits
    each label's rows among partitions in Dirichlet(``alpha``) proportions
    (``DirichletPartitioner``, seeded). Partitions are disjoint and cover the rows.
    """
    from datasets import Dataset
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner

    if scheme not in SCHEMES:
        raise ConfigError(f"partitioner={scheme!r}: must be one of {', '.join(SCHEMES)}")
    if num_partitions < 1 or num_partitions > len(labels):
        raise ConfigError(
            f"num-partitions={num_partitions}: must be in [1, {len(labels)}] (rows available); "
            "raise max-train-rows or use fewer nodes"
        )
    if not 0 <= partition_id < num_partitions:
        raise ConfigError(f"partition-id={partition_id}: must be in [0, {num_partitions - 1}]")
    rows = np.arange(len(labels))
    if scheme == "iid":
        rows = np.random.default_rng(seed).permutation(len(labels))
        partitioner: IidPartitioner | DirichletPartitioner = IidPartitioner(num_partitions)
    else:
        partitioner = DirichletPartitioner(
            num_partitions,
            partition_by="label",
            alpha=alpha,
            min_partition_size=1,
            self_balancing=False,
            seed=seed,
        )
    partitioner.dataset = Dataset.from_dict(
        {"label": np.asarray(labels)[rows].tolist(), "row": rows.tolist()}
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            partition = partitioner.load_partition(partition_id)
    except ValueError as err:
        raise ConfigError(
            f"dirichlet-alpha={alpha}: no split gave every client a row ({err}); "
            "raise dirichlet-alpha or max-train-rows, or use fewer nodes"
        ) from None
    return np.sort(np.asarray(partition["row"], dtype=np.int64))


def train_val_split(
    indices: np.ndarray, labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` into seeded (train, validation) parts, stratified by label.

    ``labels`` is the full label array that ``indices`` point into. With two or
    more rows, each side gets at least one.
    """
    indices = np.asarray(indices, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if len(indices) < 2:
        return indices, indices[:0]
    val: list[int] = []
    for label in np.unique(labels[indices]):
        rows = rng.permutation(indices[labels[indices] == label])
        val.extend(rows[: int(round(len(rows) * val_fraction))].tolist())
    val_set = set(val)
    if not val_set:
        val_set = {int(rng.choice(indices))}
    if len(val_set) == len(indices):
        val_set.discard(int(rng.choice(sorted(val_set))))
    val_rows = np.array(sorted(val_set), dtype=np.int64)
    train_rows = np.array(sorted(set(indices.tolist()) - val_set), dtype=np.int64)
    return train_rows, val_rows
