"""Example-weighted FedAvg of the quantum student, with a per-client seam.

:class:`StudentFedAvg` is Flower's :class:`~flwr.serverapp.strategy.FedAvg`
with three decisions split out as small methods, so that a guided strategy
overrides a decision, not a whole round:

- :meth:`select_nodes`: which connected nodes train this round;
- :meth:`step_budget`: each selected node's local optimizer steps, and why;
- :meth:`should_stop`: whether the federation stops after a round, and why.

Each selected node gets its own ``Message`` with its own ``ConfigRecord``
(``server-round``, ``local-steps``, ``student-lr``, ``projection-lr``,
``temperature``, ``alpha``, ``proximal-mu``). Aggregation is FedAvg's
example-weighted mean of the replies' arrays (weighted by ``num-examples``),
or, with ``aggregation="fednova"``, FedNova's normalised averaging, which
stays unbiased when clients ran different numbers of steps.

The strategy remembers each client's last reply (:class:`ClientMemory`) and
the global student's figures per round (:meth:`observe_global`), so that a
guided subclass can decide from them; :meth:`state` / :meth:`load_state`
round-trip all of it through JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from config.messages import CONFIG_KEY, METRICS_KEY, STUDENT_KEY, TrainInstructions, TrainReport
from config.run_config import RunConfig
from strategies.memory import ClientMemory

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
    aggregation : str (default: "fedavg")
        ``"fedavg"`` (example-weighted mean) or ``"fednova"`` (each client's
        update divided by its steps, then scaled by the weighted mean steps).
    proximal_mu : float (default: 0.0)
        Sent to clients: FedProx's proximal weight (0 = FedAvg).
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
        aggregation: str = "fedavg",
        proximal_mu: float = 0.0,
    ) -> None:
        # The server evaluates the global student itself, so federated evaluation is off;
        # FedAvg warns about that on every construction, which would only be noise here.
        flwr_logger = logging.getLogger("flwr")
        level = flwr_logger.level
        flwr_logger.setLevel(logging.ERROR)
        try:
            super().__init__(
                fraction_train=fraction_train,
                fraction_evaluate=0.0,
                min_train_nodes=min_train_nodes,
                min_evaluate_nodes=0,
                min_available_nodes=1,
                arrayrecord_key=STUDENT_KEY,
                configrecord_key=CONFIG_KEY,
            )
        finally:
            flwr_logger.setLevel(level)
        self.local_steps = local_steps
        self.student_lr = student_lr
        self.projection_lr = projection_lr
        self.temperature = temperature
        self.alpha = alpha
        self.seed = seed
        self.aggregation = aggregation
        self.proximal_mu = proximal_mu
        # What is known of each client (node ID -> its last reply) and of the global student.
        self.clients: dict[int, ClientMemory] = {}
        self.global_history: list[dict[str, Any]] = []
        # What the last round decided and received, for the results writer.
        self.last_selection_reason = ""
        self.last_plan: dict[int, dict[str, Any]] = {}
        self.last_reports: dict[int, TrainReport] = {}  # node ID -> its reply this round
        self.last_failures: list[dict[str, Any]] = []
        self._sent: ArrayRecord | None = None
        self._sent_messages: list[Message] = []

    @classmethod
    def from_config(cls, config: RunConfig) -> StudentFedAvg:
        """Build the strategy from the run's typed configuration."""
        return cls(**cls.config_kwargs(config))

    @staticmethod
    def config_kwargs(config: RunConfig) -> dict[str, Any]:
        """This class's constructor arguments from a run configuration."""
        return dict(
            local_steps=config.student.local_steps,
            student_lr=config.student.lr,
            projection_lr=config.student.projection_lr,
            temperature=config.student.temperature,
            alpha=config.student.alpha,
            fraction_train=config.federation.fraction_train,
            min_train_nodes=config.federation.min_train_nodes,
            seed=config.federation.seed,
            aggregation=config.policy.aggregation,
        )

    # ------------------------------------------------------------ decisions
    def num_to_select(self, available: int) -> int:
        """``fraction_train`` of ``available`` nodes, at least ``min_train_nodes``, at most all."""
        return min(max(int(available * self.fraction_train), self.min_train_nodes), available)

    def select_nodes(self, server_round: int, node_ids: Sequence[int]) -> list[int]:
        """Sample ``fraction_train`` of the nodes (at least ``min_train_nodes``)."""
        wanted = self.num_to_select(len(node_ids))
        self.last_selection_reason = f"random {wanted} of {len(node_ids)}"
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

    def observe_global(self, server_round: int, metrics: Mapping[str, float]) -> None:
        """Record the global student's server-split figures after ``server_round`` (0 = initial)."""
        self.global_history.append({"round": server_round, **metrics})

    @property
    def global_loss(self) -> float:
        """The latest global loss on the server split (NaN before any)."""
        return float(self.global_history[-1]["loss"]) if self.global_history else float("nan")

    def state(self) -> dict[str, Any]:
        """Everything the strategy learned, JSON-serialisable (see :meth:`load_state`)."""
        return {
            "clients": {str(n): c.to_dict() for n, c in self.clients.items()},
            "global-history": list(self.global_history),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        self.clients = {int(n): ClientMemory.from_dict(c) for n, c in state["clients"].items()}
        self.global_history = [dict(r) for r in state["global-history"]]

    # ------------------------------------------------------------ Flower phases
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One message per selected node, each with its own ConfigRecord."""
        selected = self.select_nodes(server_round, list(grid.get_node_ids()))
        self._sent = arrays
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
                    proximal_mu=float(self.proximal_mu),
                ).to_record()
            )
            content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: node_config})
            messages.append(
                Message(content=content, dst_node_id=node_id, message_type=MessageType.TRAIN)
            )
        self._sent_messages = messages  # the grid gives them IDs; replies name those IDs
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Example-weighted FedAvg (or FedNova); remembers each client's metrics and failure."""
        replies = list(replies)
        self.last_reports = {
            int(r.metadata.src_node_id): TrainReport.from_mapping(_metrics(r))
            for r in replies
            if not r.has_error()
        }
        self.last_failures = [
            {
                "node-id": reply_node(r, self._sent_messages),
                "code": int(r.error.code),
                "reason": str(r.error.reason).strip().splitlines()[-1][:300],
            }
            for r in replies
            if r.has_error()
        ]
        for node_id, report in self.last_reports.items():
            self.clients[node_id] = ClientMemory.from_reply(
                report, server_round, self.clients.get(node_id)
            )
        if self.aggregation == "fednova":
            ok = [r for r in replies if not r.has_error()]
            return (fednova(self._sent, ok) if ok and self._sent is not None else None), None
        return super().aggregate_train(server_round, replies)


def _metrics(reply: Message) -> MetricRecord:
    return reply.content.metric_records[METRICS_KEY]


def fednova(sent: ArrayRecord, replies: Sequence[Message]) -> ArrayRecord | None:
    """FedNova's normalised average (Wang et al., 2020) of the replies' arrays.

    With ``p_i = n_i / sum n`` (``num-examples``) and ``tau_i`` the steps
    client ``i`` ran, the new model is ``w - tau_eff * sum_i p_i (w - w_i) /
    tau_i`` with ``tau_eff = sum_i p_i tau_i``. With equal steps this is
    FedAvg; with unequal steps a client that ran many steps no longer pulls
    the average further than its share. Replies with 0 steps changed nothing
    and are left out.
    """
    reports = [(r, TrainReport.from_mapping(_metrics(r))) for r in replies]
    used = [(r, report) for r, report in reports if report.steps > 0]
    if not used:
        return None
    examples = np.array([float(report.num_examples) for _, report in used])
    steps = np.array([float(report.steps) for _, report in used])
    weights = examples / examples.sum()
    tau_eff = float(weights @ steps)
    out = {}
    for key, array in sent.items():
        start = array.numpy().astype(np.float64)
        direction = sum(
            p * (start - r.content.array_records[STUDENT_KEY][key].numpy()) / tau
            for p, tau, (r, _) in zip(weights, steps, used, strict=True)
        )
        out[key] = Array((start - tau_eff * direction).astype(array.numpy().dtype))
    return ArrayRecord(out)


def reply_node(reply: Message, instructions: Iterable[Message]) -> int:
    """The node a reply is about: its sender, or, for an error reply the SuperLink
    wrote itself (e.g. "Node Unavailable", sent from the SuperLink's own ID), the
    destination of the instruction it answers."""
    for instruction in instructions:
        message_id = instruction.metadata.message_id
        if message_id and message_id == reply.metadata.reply_to_message_id:
            return int(instruction.metadata.dst_node_id)
    return int(reply.metadata.src_node_id)
