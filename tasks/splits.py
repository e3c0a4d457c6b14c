"""The three roles of a task's rows, always disjoint and the same on every party.

1. **Client partitions**: a seeded pool of the train split (``max-train-rows``),
   cut into one partition per client, each split into local train and local
   validation rows (``val-fraction``).
2. **The server's validation split**: the task's validation split when it has
   one (TweetEval's ``val_*`` files), capped at ``server-val-rows``; else
   ``server-val-rows`` rows (10% of train if 0) carved from the train split
   before the client pool is drawn, so no client ever trains on them. Every
   decision and every per-round curve reads this split.
3. **The test split**, capped at ``test-rows``: scored once at the end (and,
   with ``test-every-round``, each round for the plots), never read by a policy.

Server and clients compute the same roles from the same data, settings and
seed; nothing about the rows is sent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from config.errors import ConfigError
from config.run_config import DataConfig
from tasks.datasets import DataSource, TextDataset
from tasks.partition import partition_indices, sample_rows, train_val_split

#: Share of the train split carved for the server when the task has no validation split
#: and ``server-val-rows`` is 0.
CARVED_SHARE = 0.1
_CARVE_SALT = 0x5EED  # the carved rows and the client pool use different seeded draws


@dataclass(frozen=True)
class DataRoles:
    """Positions in the train split: the clients' pool and the rows carved for the server.

    Attributes
    ----------
    pool : np.ndarray
        Sorted train positions partitioned among the clients.
    carved : np.ndarray
        Sorted train positions the server validates on; empty when the task
        has its own validation split. Disjoint from ``pool``.
    """

    pool: np.ndarray
    carved: np.ndarray


def data_roles(source: DataSource, data: DataConfig, seed: int) -> DataRoles:
    """The roles of ``source``'s train rows under the run's settings (seeded)."""
    n_train = len(source.load("train").labels)
    carved = np.empty(0, dtype=np.int64)
    if not source.has_split("validation"):
        rows = data.server_val_rows or max(1, int(CARVED_SHARE * n_train))
        if rows >= n_train:
            raise ConfigError(
                f"server-val-rows={data.server_val_rows}: the task has no validation split and "
                f"only {n_train} train rows to carve it from; lower server-val-rows"
            )
        carved = sample_rows(n_train, rows, seed ^ _CARVE_SALT)
    remaining = np.setdiff1d(np.arange(n_train), carved)
    pool = remaining[sample_rows(len(remaining), data.max_train_rows, seed)]
    return DataRoles(pool=np.sort(pool), carved=carved)


def client_datasets(
    source: DataSource,
    data: DataConfig,
    partition_id: int,
    num_partitions: int,
    seed: int,
) -> tuple[TextDataset, TextDataset]:
    """A client's (train, local validation) rows: its partition of the pool, split."""
    full_train = source.load("train")
    pool = data_roles(source, data, seed).pool
    positions = partition_indices(
        full_train.labels[pool],
        num_partitions,
        partition_id,
        scheme=data.partitioner,
        alpha=data.dirichlet_alpha,
        seed=seed,
    )
    if len(positions) < 2:
        raise ConfigError(
            f"partition {partition_id} of {num_partitions} has {len(positions)} row(s): "
            "lower num-partitions, raise max-train-rows or raise dirichlet-alpha"
        )
    train_rows, val_rows = train_val_split(
        pool[positions], full_train.labels, data.val_fraction, seed + partition_id
    )
    return full_train.subset(train_rows), full_train.subset(val_rows)


def server_datasets(
    source: DataSource, data: DataConfig, seed: int
) -> tuple[TextDataset, TextDataset]:
    """The server's (validation, test) rows; see the module docstring."""
    if source.has_split("validation"):
        full_val = source.load("validation")
        val = full_val.subset(sample_rows(len(full_val), data.server_val_rows, seed))
    else:
        val = source.load("train").subset(data_roles(source, data, seed).carved)
    full_test = source.load("test")
    return val, full_test.subset(sample_rows(len(full_test), data.test_rows, seed))
