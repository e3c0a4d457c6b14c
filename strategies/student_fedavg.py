"""Example-weighted FedAvg of the quantum student, with a per-client seam.

:class:`StudentFedAvg` is Flower's :class:`~flwr.serverapp.strategy.FedAvg`
with three decisions split out as small methods, so that a guided strategy
overrides a decision, not a whole round:

- :meth:`select_nodes`: which connected nodes train this round;
- :meth:`step_budget`: each selected node's local optimizer steps, and why;
- :meth:`should_stop`: whether the federation stops after a round, and why.

Each selected node gets its own ``Message`` with its own ``ConfigRecord``
(``server-round``, ``local-steps``, ``student-lr``, ``projection-lr``,
``temperature``, ``alpha``). Aggregation is FedAvg's example-weighted mean of the replies'
arrays (weighted by ``num-examples``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from config.messages import TrainInstructions
from config.run_config import RunConfig

logger = logging.getLogger(__name__)


class StudentFedAvg(FedAvg):
    """FedAvg of the student with per-node messages and a fixed step budget.

    Parameters
    ----------
    local_steps : int
        Student optimizer steps every selected client runs each round.
    student_lr, projection_lr, temperature, alpha : float
        Sent to each client in its ``ConfigRecord``.
    fraction_train : float (default: 1.0)
        Fraction of connected nodes that train each round.
    min_train_nodes : int (default: 1)
        Train at least this many nodes (or all, if fewer are connected).
    seed : int (default: 42)
        Seeds node sampling (one generator per round, so runs repeat).
    """

    def __init__(
        self,
        *,
        local_steps: int,
        student_lr: float,
        projection_lr: float,
        temperature: float,
        alpha: float,
        fraction_train: float = 1.0,
        min_train_nodes: int = 1,
        seed: int = 42,
    ) -> None:
        super().__init__(
            fraction_train=fraction_train,
            fraction_evaluate=0.0,
            min_train_nodes=min_train_nodes,
            min_evaluate_nodes=0,
            min_available_nodes=1,
        )
        self.local_steps = local_steps
        self.student_lr = student_lr
        self.projection_lr = projection_lr
        self.temperature = temperature
        self.alpha = alpha
        self.seed = seed
        # What the last round decided and received, for the results writer.
        self.last_plan: dict[int, dict[str, Any]] = {}
        self.last_client_metrics: list[dict[str, Any]] = []
        self.last_failures: list[dict[str, Any]] = []

    @classmethod
    def from_config(cls, config: RunConfig) -> StudentFedAvg:
        """Build the strategy from the run's typed configuration."""
        return cls(
            local_steps=config.student.local_steps,
            student_lr=config.student.lr,
            projection_lr=config.student.projection_lr,
            temperature=config.student.temperature,
            alpha=config.student.alpha,
            fraction_train=config.federation.fraction_train,
            min_train_nodes=config.federation.min_nodes,
            seed=config.federation.seed,
        )

    # ------------------------------------------------------------ decisions
    def select_nodes(self, server_round: int, node_ids: Sequence[int]) -> list[int]:
        """Sample ``fraction_train`` of the nodes (at least ``min_train_nodes``)."""
        wanted = max(int(len(node_ids) * self.fraction_train), self.min_train_nodes)
        wanted = min(wanted, len(node_ids))
        rng = np.random.default_rng([self.seed, server_round])
        # Choose positions, not IDs: node IDs are unsigned 64-bit and do not survive numpy.
        ordered = sorted(int(n) for n in node_ids)
        return sorted(ordered[i] for i in rng.choice(len(ordered), size=wanted, replace=False))

    def step_budget(self, server_round: int, node_id: int) -> tuple[int, str]:
        """Local optimizer steps for ``node_id`` this round, and the reason."""
        return self.local_steps, "fixed"

    def should_stop(self, server_round: int, history: Sequence[Mapping[str, Any]]) -> str | None:
        """Reason to stop after ``server_round`` (``history``: rounds.jsonl records), or None."""
        return None

    # ------------------------------------------------------------ Flower phases
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One message per selected node, each with its own ConfigRecord."""
        selected = self.select_nodes(server_round, list(grid.get_node_ids()))
        self.last_plan = {}
        messages = []
        for node_id in selected:
            steps, reason = self.step_budget(server_round, node_id)
            self.last_plan[node_id] = {"steps": steps, "reason": reason}
            node_config = ConfigRecord(dict(config))
            node_config.update(
                TrainInstructions(
                    server_round=server_round,
                    local_steps=int(steps),
                    student_lr=float(self.student_lr),
                    projection_lr=float(self.projection_lr),
                    temperature=float(self.temperature),
                    alpha=float(self.alpha),
                ).to_record()
            )
            content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: node_config})
            messages.append(
                Message(content=content, dst_node_id=node_id, message_type=MessageType.TRAIN)
            )
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Example-weighted FedAvg; keeps each client's metrics and each failure."""
        replies = list(replies)
        self.last_client_metrics = [
            {"node-id": int(r.metadata.src_node_id), **dict(_metrics(r))}
            for r in replies
            if not r.has_error()
        ]
        self.last_failures = [
            {
                "node-id": int(r.metadata.src_node_id),
                "code": int(r.error.code),
                "reason": str(r.error.reason).strip().splitlines()[-1][:300],
            }
            for r in replies
            if r.has_error()
        ]
        return super().aggregate_train(server_round, replies)


def _metrics(reply: Message) -> MetricRecord:
    return next(iter(reply.content.metric_records.values()))
