"""The run's QPU bill: priced before round 1, held to ``max-qpu-seconds`` while it runs.

On IBM hardware every job and every shot is billed QPU time, and the free
plan gives minutes a month. Before the first round, from each node's
``query.stats`` reply (its device, rows and estimated seconds per shot on its
backend), :class:`QpuBudget` prices a round and the run with
:func:`quantum.cost.message_cost` and logs one line of jobs, shots and QPU
seconds: the ``num_to_select`` dearest clients each at ``local-steps`` and
the strategy's shot budget (a guided strategy may plan other budgets), and the
round's evaluate phase (``fraction-evaluate`` of the clients, the dearest,
each scoring the student on its validation rows once).

With ``max-qpu-seconds`` set, a run priced above it at ``local-steps`` is
refused before round 1 (nothing trained, nothing billed). Each round is then
priced at the budgets the strategy planned for it, steps and shots per
client, with its evaluate phase (:meth:`QpuBudget.round_stop`): a round whose
plan would take the spending past the cap is not sent, and the run stops before
it. Spent seconds are the train and evaluate jobs' billed ``qpu-seconds`` where
the backend reports them, else their ``estimated-qpu-seconds`` (local testing
mode bills nothing). A node on a billed device that reports no price per shot
is priced at
:data:`quantum.sampler.FALLBACK_SHOT_SECONDS` a shot, with one warning line:
never at zero.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from config.errors import ConfigError
from config.messages import COST_METRICS
from config.run_config import RunConfig
from quantum.cost import describe, message_cost
from quantum.devices import DeviceSpec
from quantum.metering import CostMeter
from quantum.optimizers import resolve_optimizer
from quantum.sampler import FALLBACK_SHOT_SECONDS
from quantum.student import device_spec
from server_app.round_record import cost_rows
from strategies.evaluation import evaluate_count
from strategies.student_fedavg import StudentFedAvg

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeFacts:
    """What pricing a client's messages needs, from its ``query.stats`` reply."""

    device: DeviceSpec
    optimizer: str
    train_rows: int
    val_rows: int
    seconds_per_shot: float


class QpuBudget:
    """Prices rounds for ``config``'s clients and holds the run to ``max-qpu-seconds``.

    Parameters
    ----------
    config : RunConfig
    clients : sequence of mapping
        Each node's ``query.stats`` report (``partition-id``, ``num-examples``,
        ``val-examples``, ``seconds-per-shot``) with its ``device``.
    """

    def __init__(self, config: RunConfig, clients: Sequence[Mapping[str, Any]]) -> None:
        student = config.student
        self.limit = float(student.max_qpu_seconds)
        self.num_rounds = config.federation.num_rounds
        self.fraction_evaluate = config.federation.fraction_evaluate
        self.batch_size = student.batch_size
        self.used = 0.0  # QPU seconds spent by the recorded rounds (see :meth:`observe`)
        self.nodes: dict[int, NodeFacts] = {}
        for client in clients:
            device = device_spec(student, str(client.get("device", "")))
            partition = int(client["partition-id"])
            per_shot = float(client.get("seconds-per-shot", 0.0))
            if device.bills_qpu and not per_shot > 0:
                logger.warning(
                    "client %d on %s reported no QPU seconds per shot: priced at %g s a shot",
                    partition,
                    device.name,
                    FALLBACK_SHOT_SECONDS,
                )
                per_shot = FALLBACK_SHOT_SECONDS
            self.nodes[partition] = NodeFacts(
                device=device,
                optimizer=resolve_optimizer(student.optimizer, device),
                train_rows=int(client["num-examples"]),
                val_rows=int(client.get("val-examples", 0)),
                seconds_per_shot=per_shot,
            )

    @property
    def priced(self) -> bool:
        """True when some node runs on an ``ibm:`` device or a ``fake:`` replica of one."""
        return any(node.device.bills_qpu for node in self.nodes.values())

    def message_cost(self, partition: int, steps: int, shots: int) -> CostMeter:
        """One train message of ``partition`` at ``steps`` and ``shots`` (0: its own shots)."""
        node = self.nodes[partition]
        return message_cost(
            optimizer=node.optimizer,
            steps=steps,
            shots=shots or node.device.shots,
            train_rows=node.train_rows,
            val_rows=node.val_rows,
            batch_size=self.batch_size,
            seconds_per_shot=node.seconds_per_shot,
            batched=node.device.batched,
        )

    def evaluate_cost(self, partition: int) -> CostMeter:
        """One evaluate message of ``partition`` (its validation rows once, its own shots)."""
        node = self.nodes[partition]
        return message_cost(
            optimizer=node.optimizer,
            steps=0,
            shots=node.device.shots,
            train_rows=0,
            val_rows=node.val_rows,
            batch_size=self.batch_size,
            seconds_per_shot=node.seconds_per_shot,
            batched=node.device.batched,
            validations=1,
        )

    def evaluation_cost(self) -> CostMeter:
        """A round's evaluate phase (``fraction-evaluate``): its dearest clients'
        evaluate messages, as many as the phase asks."""
        costs = [self.evaluate_cost(p) for p in sorted(self.nodes)]
        return _dearest(costs, evaluate_count(len(costs), self.fraction_evaluate))

    def round_cost(self, strategy: StudentFedAvg, server_round: int) -> CostMeter:
        """The price of ``server_round`` before it is planned: its dearest
        ``num_to_select`` clients at ``local-steps`` and the strategy's shot budget,
        and its evaluate phase."""
        costs = [
            self.message_cost(p, strategy.local_steps, strategy.shot_budget(server_round, p)[0])
            for p in sorted(self.nodes)
        ]
        return _dearest(costs, strategy.num_to_select(len(costs))) + self.evaluation_cost()

    def run_cost(self, strategy: StudentFedAvg, first_round: int) -> CostMeter:
        """The price of rounds ``first_round`` .. ``num-server-rounds`` (see :meth:`round_cost`)."""
        total = CostMeter()
        for server_round in range(first_round, self.num_rounds + 1):
            total = total + self.round_cost(strategy, server_round)
        return total

    def plan_cost(self, plan: Mapping[int, Mapping[str, Any]]) -> CostMeter:
        """The price of a planned round: each client at its planned steps and shots,
        and the round's evaluate phase."""
        total = self.evaluation_cost()
        for partition, budget in plan.items():
            if partition in self.nodes:
                total = total + self.message_cost(
                    partition, int(budget["steps"]), int(budget.get("shots", 0))
                )
        return total

    def observe(self, rounds: Sequence[Mapping[str, Any]]) -> None:
        """Take the spending of the recorded ``rounds`` (after each round is written)."""
        self.used = self.spent(rounds)

    def round_stop(self, server_round: int, plan: Mapping[int, Mapping[str, Any]]) -> str | None:
        """Why the planned ``server_round`` must not be sent: its price at the planned
        steps and shots would take the spending past ``max-qpu-seconds`` (None: send it)."""
        if self.limit <= 0 or not self.priced:
            return None
        needed = self.plan_cost(plan).estimated_qpu_seconds
        if self.used + needed <= self.limit:
            return None
        return (
            f"max-qpu-seconds={self.limit:g}: {self.used:.1f} QPU s used and round "
            f"{server_round} would need ~{needed:.1f} more at its planned budgets"
        )

    def check_before(
        self, strategy: StudentFedAvg, first_round: int, rounds: Sequence[Mapping[str, Any]]
    ) -> None:
        """Log the price of the run; refuse it (one line) when it would pass ``max-qpu-seconds``.

        Raises
        ------
        ConfigError
            Naming ``max-qpu-seconds``, the price and what to lower.
        """
        if not self.priced or first_round > self.num_rounds:
            return
        spent = self.spent(rounds)
        self.used = spent
        per_round = self.round_cost(strategy, first_round)
        run = self.run_cost(strategy, first_round)
        rounds_left = self.num_rounds - first_round + 1
        limit = f"max-qpu-seconds={self.limit:g}" if self.limit > 0 else "max-qpu-seconds=off"
        logger.info(
            "QPU cost estimate: round %d %s; %d round(s) %s%s; %s",
            first_round,
            describe(per_round),
            rounds_left,
            describe(run),
            f", {spent:.0f} s already spent" if spent else "",
            limit,
        )
        if self.limit > 0 and spent + run.estimated_qpu_seconds > self.limit:
            raise ConfigError(
                f"max-qpu-seconds={self.limit:g}: this run is estimated at "
                f"~{spent + run.estimated_qpu_seconds:.0f} QPU s ({describe(run)} over "
                f"{rounds_left} rounds); raise max-qpu-seconds or lower num-server-rounds, "
                "local-steps or shots (or use shots-policy=ramp)"
            )

    def spent(self, rounds: Sequence[Mapping[str, Any]]) -> float:
        """QPU seconds the recorded rounds used: billed where reported, else estimated."""
        billed, estimated = COST_METRICS["qpu_seconds"], COST_METRICS["estimated_qpu_seconds"]
        total = 0.0
        for record in rounds:
            if record.get("round", 0) < 1:
                continue
            for client in cost_rows(record):  # train and evaluate replies
                paid = float(client.get(billed, 0.0) or 0.0)
                total += paid if paid > 0 else float(client.get(estimated, 0.0) or 0.0)
        return total

    def stop_reason(self, server_round: int) -> str | None:
        """Why the run must stop after ``server_round``: ``max-qpu-seconds`` is used up.
        (A round that would pass it is caught when planned: :meth:`round_stop`.)"""
        if self.limit <= 0 or not self.priced or server_round >= self.num_rounds:
            return None
        if self.used >= self.limit:
            return f"max-qpu-seconds={self.limit:g} reached: {self.used:.1f} QPU s used"
        return None


def _dearest(costs: list[CostMeter], count: int) -> CostMeter:
    """The sum of the ``count`` dearest of ``costs`` (by estimated QPU seconds, then shots)."""
    ordered = sorted(costs, key=lambda c: (c.estimated_qpu_seconds, c.shots), reverse=True)
    total = CostMeter()
    for cost in ordered[:count]:
        total = total + cost
    return total
