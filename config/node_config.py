"""A node's own settings, read once from Flower's ``context.node_config``.

In simulation Flower sets ``partition-id`` and ``num-partitions``; on the
deployment engine they come from ``flower-supernode --node-config``. A node
may also set its own quantum ``device`` (one site on a QPU, the others
simulating) and its ``cache-dir`` for fine-tuned teachers and embeddings.
No other module reads raw node-config keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.errors import ConfigError

#: Where a node caches teachers and embeddings when neither its node config nor the
#: LLMQFL_CACHE_DIR environment variable says otherwise.
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "llmqfl"


@dataclass(frozen=True)
class NodeConfig:
    """What a node says about itself.

    Attributes
    ----------
    partition_id : int
        This client's partition, in ``[0, num_partitions)``: its stable identity,
        the same across restarts and runs (Flower's node ID is not).
    num_partitions : int
        How many partitions the data is cut into (>= 1).
    device : str
        The node's own quantum device name, or "" for the run config's ``device``.
    cache_dir : Path
        Where this node keeps its teacher and embedding cache: ``cache-dir``, else
        ``$LLMQFL_CACHE_DIR``, else ``~/.cache/llmqfl``.
    slowdown : float
        ``slowdown``: an emulated slower machine for benchmarks. The node reports
        every seconds figure multiplied by it (>= 1; nothing sleeps). Default 1.
    """

    partition_id: int
    num_partitions: int
    device: str = ""
    cache_dir: Path = DEFAULT_CACHE_DIR
    slowdown: float = 1.0

    @classmethod
    def from_flat(cls, node_config: Mapping[str, Any]) -> NodeConfig:
        """Read Flower's node config.

        Raises
        ------
        ConfigError
            One line naming the missing or bad key and the ``--node-config`` fix.
        """
        try:
            partition_id = int(node_config["partition-id"])
            num_partitions = int(node_config["num-partitions"])
        except KeyError as err:
            raise ConfigError(
                f"node config lacks {err.args[0]!r}: start the SuperNode with "
                '--node-config "partition-id=<i> num-partitions=<n>"'
            ) from None
        except (TypeError, ValueError):
            raise ConfigError(
                "node config: partition-id and num-partitions must be integers "
                '(--node-config "partition-id=<i> num-partitions=<n>")'
            ) from None
        if num_partitions < 1 or not 0 <= partition_id < num_partitions:
            raise ConfigError(
                f"node config partition-id={partition_id}: must be in "
                f"[0, num-partitions - 1] = [0, {num_partitions - 1}]"
            )
        cache = node_config.get("cache-dir") or os.environ.get("LLMQFL_CACHE_DIR")
        slowdown = node_config.get("slowdown", 1.0)
        if isinstance(slowdown, bool) or not isinstance(slowdown, int | float) or slowdown < 1:
            raise ConfigError(f"node config slowdown={slowdown!r}: must be a number >= 1")
        return cls(
            partition_id=partition_id,
            num_partitions=num_partitions,
            device=str(node_config.get("device", "")),
            cache_dir=Path(str(cache)).expanduser() if cache else DEFAULT_CACHE_DIR,
            slowdown=float(slowdown),
        )
