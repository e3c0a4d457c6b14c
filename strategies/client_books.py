"""Which node serves which client, and what the server knows of each client and of the student.

:class:`ClientBooks` is a mixin of :class:`~strategies.student_fedavg.StudentFedAvg`:
a client is its partition ID (``partition-id`` in its node config), stable
across restarts and runs, where Flower's node IDs are not (a restarted
SuperNode gets a new one). The server tells the strategy which node serves
which partition (:meth:`ClientBooks.bind_nodes`); every decision and
everything remembered is keyed by partition, and only the messages name
node IDs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from strategies.memory import ClientMemory


class ClientBooks:
    """The strategy's books of its clients and of the global student (see the module docstring)."""

    def _reset_clients(self) -> None:
        # Which node serves which client (partition): told by the server, kept up to date.
        self.partitions: dict[int, int] = {}
        # The rows each client declared before training (its query.stats reply), by partition.
        self.declared_examples: dict[int, int] = {}
        # What is known of each client (partition -> its last reply) and of the global student.
        self.clients: dict[int, ClientMemory] = {}
        self.val_history: list[dict[str, Any]] = []

    def bind_nodes(self, partitions: Mapping[int, int]) -> None:
        """Learn which node serves which partition (a node ID seen again is re-bound)."""
        for node, partition in partitions.items():
            for stale in [n for n, p in self.partitions.items() if p == partition and n != node]:
                del self.partitions[stale]  # a restarted node took the partition over
            self.partitions[int(node)] = int(partition)

    def declare_examples(self, examples: Mapping[int, int]) -> None:
        """Record the rows each partition declared before training (a reply may not exceed it)."""
        self.declared_examples.update({int(p): int(n) for p, n in examples.items()})

    def observe_val(self, server_round: int, metrics: Mapping[str, float]) -> None:
        """Record the global student's validation figures after ``server_round`` (0 = initial)."""
        self.val_history.append({"round": server_round, **metrics})

    @property
    def val_loss(self) -> float:
        """The global student's latest loss on the server's validation split (NaN before any)."""
        return float(self.val_history[-1]["loss"]) if self.val_history else float("nan")
