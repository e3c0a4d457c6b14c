"""Example-weighted FedAvg of the quantum student, with a per-client seam.

:class:`StudentFedAvg` is Flower's :class:`~flwr.serverapp.strategy.FedAvg`
with three decisions split out as small methods, so that a guided strategy
overrides a decision, not a whole round:

- :meth:`select_clients`: which connected clients train this round;
- :meth:`step_budget`: each selected client's local optimizer steps, and why;
- :meth:`should_stop`: whether the federation stops after a round, and why.

The decisions live in mixins with one job each: the round's plan in
:class:`~strategies.planning.RoundPlanner`, the teacher's books and budgets
in :class:`~strategies.teacher_books.TeacherBooks`, Flower's evaluate phase
in :class:`~strategies.evaluation.FederatedEvaluation`, which node serves
which client (partition) and what is known of each in
:class:`~strategies.client_books.ClientBooks`; this module holds the reply
checks and the train phase.

Every reply is checked before it counts (:mod:`strategies.robust`): a reply
with arrays unlike those sent, non-finite values, more rows than its node
declared, more steps than its budget or metrics out of range is recorded as
a failure, like a crashed client.

Each selected client gets its own ``Message`` with its own ``ConfigRecord``
(:class:`~config.messages.TrainInstructions`). The accepted arrays are
combined by ``aggregation`` (:mod:`strategies.aggregation`); a reply that ran
other steps than planned is logged and recorded.

The train phase returns what it made: :meth:`StudentFedAvg.configure_round`
a :class:`~strategies.rounds.TrainRound` (the plan, why, the messages) and
:meth:`StudentFedAvg.aggregate_round` a :class:`~strategies.rounds.TrainOutcome`
(the new arrays, the accepted reports, the failures); Flower's
``configure_train`` / ``aggregate_train`` are thin wrappers over them.

The strategy remembers each client's last reply (:class:`ClientMemory`) and
the global student's figures on the server's validation split per round
(:meth:`observe_val`), so that a guided subclass can decide from them;
:meth:`state` / :meth:`load_state` round-trip all of it through JSON.
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

from config.logs import quiet
from config.messages import (
    CONFIG_KEY,
    METRICS_KEY,
    STUDENT_KEY,
    TrainInstructions,
    TrainReport,
)
from config.run_config import RunConfig
from strategies.aggregation import combine_arrays
from strategies.client_books import ClientBooks
from strategies.evaluation import FederatedEvaluation
from strategies.memory import ClientMemory
from strategies.planning import RoundPlanner
from strategies.replies import REJECTED, failure_record, step_mismatches
from strategies.robust import check_reply
from strategies.rounds import TrainOutcome, TrainRound
from strategies.teacher import TeacherPolicy, federated_teacher_rounds

logger = logging.getLogger(__name__)


class StudentFedAvg(RoundPlanner, FederatedEvaluation, ClientBooks, FedAvg):
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
        ``"fedavg"`` (example-weighted mean), ``"fednova"`` (each client's
        update divided by its steps, then scaled by the weighted mean steps),
        or a robust rule: ``"median"``, ``"trimmed-mean"``, ``"krum"``
        (:mod:`strategies.robust`).
    proximal_mu : float (default: 0.0)
        Sent to clients: FedProx's proximal weight (0 = FedAvg).
    teacher_epochs : float (default: 2.0)
        Epochs a client fine-tunes its teacher in the first round it trains
        (``teacher-epochs``); afterwards it keeps that teacher.
    max_update_norm : float (default: 0.0)
        Clip each client's update to this L2 norm before combining (0: off).
    trim_fraction, krum_byzantine : float, int
        ``trimmed-mean``'s cut at each end, and the bad clients ``krum`` assumes.
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
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 1,
        seed: int = 42,
        aggregation: str = "fedavg",
        proximal_mu: float = 0.0,
        teacher_epochs: float = 2.0,
        max_update_norm: float = 0.0,
        trim_fraction: float = 0.2,
        krum_byzantine: int = 1,
        shots: int = 0,
        shots_policy: str = "fixed",
        min_shots: int = 256,
        num_rounds: int = 1,
        teacher_batch_size: int = 16,
        teacher_federated_rounds: int = 0,
    ) -> None:
        # FedAvg warns at construction when fraction_evaluate=0: noise here.
        with quiet("flwr"):
            super().__init__(
                fraction_train=fraction_train,
                fraction_evaluate=fraction_evaluate,
                min_train_nodes=min_train_nodes,
                min_evaluate_nodes=0,
                min_available_nodes=1,
                arrayrecord_key=STUDENT_KEY,
                configrecord_key=CONFIG_KEY,
            )
        self.local_steps = local_steps
        self.student_lr = student_lr
        self.projection_lr = projection_lr
        self.temperature = temperature
        self.alpha = alpha
        self.seed = seed
        self.aggregation = aggregation
        self.proximal_mu = proximal_mu
        self.max_update_norm = max_update_norm
        self.trim_fraction = trim_fraction
        self.krum_byzantine = krum_byzantine
        self.shots = shots
        self.shots_policy = shots_policy
        self.min_shots = min_shots
        self.num_rounds = num_rounds
        self.teacher_batch_size = teacher_batch_size
        self.teacher_policy = TeacherPolicy(teacher_epochs, teacher_federated_rounds)
        self._know_nothing()

    def _know_nothing(self) -> None:
        """The strategy's books, empty."""
        self._reset_clients()
        self._reset_teachers()
        self._reset_evaluation()
        # The round Flower's configure_train sent, for its aggregate_train (the round
        # flow calls configure_round and aggregate_round and keeps it itself).
        self._open: TrainRound | None = None

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
            fraction_evaluate=config.federation.fraction_evaluate,
            min_train_nodes=config.federation.min_train_nodes,
            seed=config.federation.seed,
            aggregation=config.policy.aggregation,
            teacher_epochs=config.teacher.epochs,
            max_update_norm=config.policy.max_update_norm,
            trim_fraction=config.policy.trim_fraction,
            krum_byzantine=config.policy.krum_byzantine,
            shots=config.student.shots,
            shots_policy=config.student.shots_policy,
            min_shots=config.student.min_shots,
            num_rounds=config.federation.num_rounds,
            teacher_batch_size=config.teacher.batch_size,
            teacher_federated_rounds=federated_teacher_rounds(config),
        )

    # ------------------------------------------------------------ decisions
    def should_stop(self, server_round: int, history: Sequence[Mapping[str, Any]]) -> str | None:
        """Reason to stop after ``server_round`` (``history``: rounds.jsonl records), or None."""
        return None

    def declare_clients(self, clients: Sequence[Mapping[str, Any]]) -> None:
        """Record what each client's statistics reply declared (``partition-id``,
        ``num-examples``, ``val-examples``, ``teacher-total-steps``)."""
        for client in clients:
            partition = int(client["partition-id"])
            self.declare_examples({partition: int(client["num-examples"])})
            self.declare_val_examples({partition: int(client.get("val-examples", 0))})
            self.declare_teachers({partition: int(client.get("teacher-total-steps", 0))})

    def state(self) -> dict[str, Any]:
        """Everything the strategy learned, JSON-serialisable (see :meth:`load_state`)."""
        return {
            "clients": {str(p): c.to_dict() for p, c in self.clients.items()},
            "val-history": list(self.val_history),
            "declared-examples": {str(p): n for p, n in self.declared_examples.items()},
            "declared-val-examples": {str(p): n for p, n in self.declared_val_examples.items()},
            "teacher": self.teacher_policy.state(),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        self.clients = {int(p): ClientMemory.from_dict(c) for p, c in state["clients"].items()}
        self.val_history = [dict(r) for r in state["val-history"]]
        self.declare_examples({int(p): n for p, n in state.get("declared-examples", {}).items()})
        self.declare_val_examples(
            {int(p): n for p, n in state.get("declared-val-examples", {}).items()}
        )
        self.teacher_policy.load_state(state.get("teacher", {}))

    # ------------------------------------------------------------ the train phase
    def configure_round(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> TrainRound:
        """The round's plan and one message per selected client, each with its own
        ConfigRecord (:class:`~config.messages.TrainInstructions`)."""
        nodes = {self.partitions[n]: n for n in grid.get_node_ids() if n in self.partitions}
        plan, reason = self.plan_round(server_round, sorted(nodes))
        messages = []
        for partition, budget in plan.items():
            node_config = ConfigRecord(dict(config))
            node_config.update(
                TrainInstructions(
                    server_round=server_round,
                    local_steps=int(budget["steps"]),
                    student_lr=float(self.student_lr),
                    projection_lr=float(self.projection_lr),
                    temperature=float(self.temperature),
                    alpha=float(self.alpha),
                    proximal_mu=float(self.proximal_mu),
                    teacher_epochs=float(budget["teacher-epochs"]),
                    teacher_restore_steps=int(budget["teacher-restore-steps"]),
                    shots=int(budget["shots"]),
                ).to_record()
            )
            content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: node_config})
            messages.append(
                Message(
                    content=content, dst_node_id=nodes[partition], message_type=MessageType.TRAIN
                )
            )
        return TrainRound(server_round, arrays, plan, reason, messages)

    def aggregate_round(self, train: TrainRound, replies: Iterable[Message]) -> TrainOutcome:
        """Check every reply to ``train`` (:func:`~strategies.robust.check_reply`),
        remember the accepted reports, and combine the accepted arrays."""
        replies, server_round = list(replies), train.server_round
        failures = [
            failure_record(r, train.messages, self.partitions, r.error.code, r.error.reason)
            for r in replies
            if r.has_error()
        ]
        accepted: list[tuple[int, Message, TrainReport]] = []
        for reply in [r for r in replies if not r.has_error()]:
            partition, report, problem = self._check(train, reply)
            if report is None or partition is None:
                logger.warning(
                    "round %d: reply of client %s rejected: %s", server_round, partition, problem
                )
                reason = f"rejected: {problem}"
                failures.append(
                    failure_record(reply, train.messages, self.partitions, REJECTED, reason)
                )
            else:
                accepted.append((partition, reply, report))
        reports = {partition: report for partition, _, report in accepted}
        self.note_teachers(failures, reports)
        for partition, report in reports.items():
            self.clients[partition] = ClientMemory.from_reply(
                report, server_round, self.clients.get(partition)
            )
        mismatches = step_mismatches(train.plan, reports)
        for mismatch in mismatches:
            logger.warning(
                "round %d: client %d ran %d steps, %d were planned",
                server_round,
                mismatch["partition-id"],
                mismatch["ran"],
                mismatch["planned"],
            )
        arrays = self.combine(train, accepted) if accepted else None
        return TrainOutcome(arrays, None, reports, failures, mismatches)

    def reply_problem(self, train: TrainRound, reply: Message) -> str | None:
        """Why :meth:`aggregate_round` would refuse ``reply`` to ``train`` (None: it would not)."""
        return self._check(train, reply)[2]

    def _check(
        self, train: TrainRound, reply: Message
    ) -> tuple[int | None, TrainReport | None, str | None]:
        """The reply's partition and its report, or the reason it may not count."""
        partition = self.partitions.get(int(reply.metadata.src_node_id))
        if partition is None:
            return None, None, f"node {reply.metadata.src_node_id} serves no known partition"
        metrics = reply.content.metric_records.get(METRICS_KEY)
        if metrics is None:
            return partition, None, "no metrics in the reply"
        arrays = reply.content.array_records.get(STUDENT_KEY)
        budget = train.plan.get(partition)
        report, problem = check_reply(
            arrays,
            metrics,
            train.sent,
            budget.get("steps") if budget is not None else None,
            self.declared_examples.get(partition),
            self.teacher_step_budget(partition, budget),
        )
        if report is not None and report.partition_id != partition:
            return partition, None, f"it names partition {report.partition_id}"
        return partition, report, problem

    # ------------------------------------------------------------ Flower's phases
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Flower's phase: :meth:`configure_round`'s messages."""
        self._open = self.configure_round(server_round, arrays, config, grid)
        return self._open.messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Flower's phase: :meth:`aggregate_round` on the round :meth:`configure_train` sent."""
        if self._open is None or self._open.server_round != server_round:
            return None, None  # no train message was sent this round
        outcome = self.aggregate_round(self._open, replies)
        return outcome.arrays, outcome.metrics

    def combine(
        self, train: TrainRound, accepted: Sequence[tuple[int, Message, TrainReport]]
    ) -> ArrayRecord:
        """The new global arrays from the accepted replies to ``train``: each update
        clipped to ``max-update-norm`` (when set), then ``aggregation`` (:func:`combine_arrays`)."""
        start = {k: a.numpy().astype(np.float64) for k, a in train.sent.items()}
        arrays = [
            {
                k: a.numpy().astype(np.float64)
                for k, a in r.content.array_records[STUDENT_KEY].items()
            }
            for _, r, _ in accepted
        ]
        combined = combine_arrays(
            self.aggregation,
            start,
            arrays,
            examples=[report.num_examples for _, _, report in accepted],
            steps=[int(train.plan.get(p, {}).get("steps", 0)) for p, _, _ in accepted],
            max_update_norm=self.max_update_norm,
            trim_fraction=self.trim_fraction,
            krum_byzantine=self.krum_byzantine,
        )
        return ArrayRecord(
            {k: Array(np.asarray(v).astype(train.sent[k].dtype)) for k, v in combined.items()}
        )
