"""The rounds, run by Flower's own loop (see DESIGN.md, "One round, as data").

:func:`run_rounds` hands a :class:`RoundFlow` to Flower's
``Strategy.start()``, which owns the loop. Each phase Flower calls is one
step of a round here, and hands what the next one needs to the flow's
current round (:class:`RoundInProgress`), which the last step writes out:

1. ``configure_train``: nodes the strategy does not know yet are asked their
   partition; the strategy plans the round and writes one message per
   selected client; a plan whose QPU price would pass ``max-qpu-seconds``
   stops the run before anything is sent; the teacher federation adds each
   client's teacher round (and the global adapters) to its message.
2. ``aggregate_train``: the teacher federation checks and pools the teacher
   adapters (a reply refused for them is out), then the strategy checks the
   student replies and aggregates them into the new global student.
3. ``configure_evaluate`` / ``aggregate_evaluate``: Flower's evaluate phase
   on the new global student (``fraction-evaluate``), the strategy's own.
4. ``evaluate_fn`` (:meth:`RoundFlow.evaluate`): the global student on the
   server's validation split (and, with ``test-every-round``, on the test
   rows for the plots); the round is written and checkpointed, and the
   strategy, then the QPU budget, may stop the run, reading validation
   figures only.

Stopping: Flower 1.42's ``start()`` has no stop hook. ``configure_train`` asks
:meth:`RoundFlow.should_stop` first and after a stop starts no round, so the
later phases find no round in progress and the rest of Flower's loop sends
and records nothing; with a Flower whose ``start()`` asks its strategy
``should_stop`` itself, that guard is what goes. So do Flower's own lines
for the rounds it no longer runs ("[ROUND k/N]", "Global evaluation" and an
empty result), which :class:`~server_app.flower_log.QuietAfterStop` drops from its log.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from config.messages import INFO_KEY
from server_app.checkpoint import BEST_PREFIX, TEACHER_PREFIX, recent_arrays, save_checkpoint
from server_app.flower_log import QuietAfterStop
from server_app.messaging import DirectGrid, array_bytes
from server_app.node_query import identify_nodes
from server_app.results import ResultsWriter
from server_app.round_record import RoundOutcome, round_line, round_record
from server_app.server_data import evaluate_global
from server_app.setup import Federation
from server_app.teacher_federation import record_bytes
from server_app.teacher_report import judge_global_teacher
from strategies.replies import reply_node
from strategies.rounds import TrainOutcome, TrainRound

logger = logging.getLogger(__name__)


def run_rounds(grid: Grid, fed: Federation, writer: ResultsWriter) -> tuple[str, int]:
    """Rounds ``fed.first_round`` .. ``num-server-rounds`` through Flower's
    ``Strategy.start()``; returns (stop reason, rounds run)."""
    flow = RoundFlow(fed, writer)
    remaining = fed.config.federation.num_rounds - fed.first_round + 1
    if remaining > 0:
        quiet = QuietAfterStop(lambda: flow.stop_reason is not None)
        flower_logger = logging.getLogger("flwr")
        flower_logger.addFilter(quiet)
        try:
            flow.start(
                DirectGrid(grid),
                fed.arrays,
                num_rounds=remaining,
                timeout=fed.config.federation.round_timeout,
                evaluate_fn=flow.evaluate,
            )
        finally:
            flower_logger.removeFilter(quiet)
    return flow.stop_reason or "max-rounds", flow.rounds_run


@dataclass
class RoundInProgress:
    """What one round's steps have produced so far (see the module docstring)."""

    server_round: int
    started: float
    train: TrainRound
    unidentified: list[dict[str, Any]]
    outcome: TrainOutcome | None = None
    replies: list[Message] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)  # for their teacher arrays
    silent: list[dict[str, Any]] = field(default_factory=list)  # no reply in time
    teacher_bytes: int = 0
    teacher_val: dict[str, Any] | None = None  # teacher-policy=validated: the new average judged
    applied: bool = False
    train_done: float = 0.0
    aggregate_done: float = 0.0
    evaluate_messages: list[Message] = field(default_factory=list)
    federated: dict[str, Any] | None = None


class RoundFlow(Strategy):
    """The federation's rounds as the phases of a Flower strategy.

    The decisions are ``fed.strategy``'s (a :class:`~strategies.student_fedavg.StudentFedAvg`);
    this class adds what the run needs around them: nodes identified,
    the QPU budget, the teacher federation, the round record, the checkpoint
    and the stop. Flower's round ``k`` is the run's round ``first_round + k - 1``
    (a resumed run starts past 1).
    """

    def __init__(self, fed: Federation, writer: ResultsWriter) -> None:
        self.fed, self.writer = fed, writer
        self.stop_reason: str | None = None
        self.rounds_run = fed.first_round - 1
        self.current: RoundInProgress | None = None

    def summary(self) -> None:
        """Flower's ``start()`` logs this first."""
        config = self.fed.config.federation
        logger.info(
            "rounds %d to %d of the %s strategy, through Flower's Strategy.start()",
            self.fed.first_round,
            config.num_rounds,
            config.strategy,
        )

    def should_stop(self) -> bool:
        """Whether the run has stopped (:attr:`stop_reason`); the phases then do nothing."""
        return self.stop_reason is not None

    # ------------------------------------------------------------ 1. train
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.should_stop():
            return []
        fed, strategy = self.fed, self.fed.strategy
        current = fed.first_round + server_round - 1
        started = time.perf_counter()
        unidentified = identify_nodes(grid, strategy, fed.config, fed.data.val)
        train = strategy.configure_round(current, arrays, config, grid)
        over = fed.budget.round_stop(current, train.plan) if fed.budget else None
        if over is not None:  # planned, not sent: nothing of it was trained or billed
            logger.info("stopping before round %d: %s", current, over)
            self.stop_reason = over
            return []
        if fed.teachers is not None:
            fed.teachers.attach(current, train.messages, strategy.partitions)
        self.current = RoundInProgress(current, started, train, unidentified)
        return train.messages

    # ------------------------------------------------------------ 2. aggregate
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        step = self.current
        if step is None:  # stopped before sending: nothing to aggregate
            return None, None
        fed, strategy = self.fed, self.fed.strategy
        step.replies = list(replies)
        judged = step.replies
        if fed.teachers is not None:  # teacher arrays checked and pooled; a refused reply is out
            collected = fed.teachers.collect(
                step.server_round,
                step.replies,
                step.train.messages,
                strategy.partitions,
                functools.partial(strategy.reply_problem, step.train),
            )
            judged, step.refused = collected.kept, collected.failures
            step.teacher_bytes = collected.bytes_received
            if collected.final_after is not None:  # ended early: later rounds keep it
                strategy.teacher_policy.end_federation(collected.final_after)
            if collected.pooled and strategy.teacher_policy.reads_server_val:
                step.teacher_val = judge_global_teacher(
                    fed.config,
                    strategy.teacher_policy,
                    fed.teachers,
                    step.server_round,
                    (fed.data.val_rows, fed.data.val.features),
                )
        timeout = fed.config.federation.round_timeout
        step.silent = silent_nodes(
            step.train.messages, step.replies, strategy.partitions, step.server_round, timeout
        )
        step.train_done = time.perf_counter()
        outcome = step.outcome = strategy.aggregate_round(step.train, judged)
        needed = min(fed.config.federation.min_train_nodes, len(step.train.messages))
        step.applied = outcome.arrays is not None and len(outcome.reports) >= needed
        step.aggregate_done = time.perf_counter()
        if not step.applied or outcome.arrays is None:
            logger.warning(
                "round %d: %d usable replies, min-train-nodes=%d: the global student is unchanged",
                step.server_round,
                len(outcome.reports),
                fed.config.federation.min_train_nodes,
            )
            return None, outcome.metrics
        fed.arrays = outcome.arrays
        return outcome.arrays, outcome.metrics

    # ------------------------------------------------------------ 3. federated evaluation
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        step = self.current
        if step is None:
            return []
        strategy = self.fed.strategy
        step.evaluate_messages = list(
            strategy.configure_evaluate(step.server_round, arrays, config, grid)
        )
        return step.evaluate_messages

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        step = self.current
        if step is None or not step.evaluate_messages:
            return None
        strategy, replies = self.fed.strategy, list(replies)
        evaluation = strategy.aggregate_evaluation(
            step.server_round, step.evaluate_messages, replies
        )
        timeout = self.fed.config.federation.round_timeout
        silent = silent_nodes(
            step.evaluate_messages, replies, strategy.partitions, step.server_round, timeout
        )
        evaluation["failures"] = [*evaluation["failures"], *silent]
        step.federated = evaluation
        if not evaluation["clients"]:
            return None
        return MetricRecord({"loss": evaluation["loss"], "accuracy": evaluation["accuracy"]})

    # ------------------------------------------------------------ 4. record and stop
    def evaluate(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Flower's ``evaluate_fn``: score, write, checkpoint, and decide whether to stop.

        Round 0's figures were written by the set-up and are returned as they are.
        """
        fed = self.fed
        if server_round == 0:
            return _val_metrics(fed.initial) if fed.initial else None
        step, self.current = self.current, None
        if step is None:  # stopped: no round in progress
            return None
        val = evaluate_global(fed.student, fed.arrays, fed.data.val)
        fed.strategy.observe_val(step.server_round, val)
        test = (
            evaluate_global(fed.student, fed.arrays, fed.data.test)
            if fed.config.data.test_every_round
            else None
        )
        record = round_record(self._outcome(step, val, test, time.perf_counter()))
        self.writer.write_round(record)
        if fed.budget is not None:
            fed.budget.observe(self.writer.rounds)
        fed.observe_val(step.server_round, self.writer.rounds)
        _checkpoint(fed, self.writer, step.server_round)
        self.rounds_run = step.server_round
        logger.info("%s", round_line(record, fed.config.federation.num_rounds))
        reason = fed.strategy.should_stop(step.server_round, self.writer.rounds)
        if reason is None and fed.budget is not None:
            reason = fed.budget.stop_reason(step.server_round)
        if reason is not None:
            logger.info("stopping after round %d: %s", step.server_round, reason)
            self.stop_reason = reason
        return _val_metrics(val)

    def _outcome(
        self,
        step: RoundInProgress,
        val: dict[str, float],
        test: dict[str, float] | None,
        done: float,
    ) -> RoundOutcome:
        train, outcome = step.train, step.outcome
        assert outcome is not None  # Flower's loop evaluates after aggregate_train
        return RoundOutcome(
            server_round=step.server_round,
            plan=train.plan,
            selection_reason=train.selection_reason,
            reports=outcome.reports,
            failures=[*step.unidentified, *step.refused, *outcome.failures, *step.silent],
            node_info=node_info(step.replies, self.fed.strategy.partitions),
            applied=step.applied,
            val=val,
            test=test,
            federated_val=step.federated,
            teacher_val=step.teacher_val,
            step_mismatches=outcome.step_mismatches,
            seconds={
                "total": done - step.started,
                "train": step.train_done - step.started,
                "aggregate": step.aggregate_done - step.train_done,
                "evaluate": done - step.aggregate_done,
            },
            bytes={
                "sent": array_bytes(train.messages),
                "received": array_bytes(step.replies),
                "teacher-sent": record_bytes(train.messages),
                "teacher-received": step.teacher_bytes,
            },
        )


def _val_metrics(val: dict[str, float]) -> MetricRecord:
    return MetricRecord({"val-loss": float(val["loss"]), "val-accuracy": float(val["accuracy"])})


def node_info(replies: list[Message], partitions: dict[int, int]) -> dict[int, dict[str, str]]:
    """Partition -> its reply's node facts: the ``backend`` that ran its circuits and the
    ``execution-mode`` of its jobs."""
    found = {}
    for reply in replies:
        if not reply.has_error() and INFO_KEY in reply.content.config_records:
            info = reply.content.config_records[INFO_KEY]
            partition = partitions.get(int(reply.metadata.src_node_id), -1)
            found[partition] = {str(k): str(v) for k, v in info.items()}
    return found


def silent_nodes(
    messages: list[Message],
    replies: list[Message],
    partitions: dict[int, int],
    server_round: int,
    timeout: float,
) -> list[dict[str, Any]]:
    """A failure record for each node that was sent work and never replied (logged)."""
    answered = {reply_node(r, messages) for r in replies}
    silent = [
        {
            "node-id": node,
            "partition-id": partitions.get(node),
            "code": None,
            "reason": "no reply within round-timeout",
        }
        for node in (int(m.metadata.dst_node_id) for m in messages)
        if node not in answered
    ]
    if silent:
        logger.warning(
            "round %d: %d of %d nodes did not reply within round-timeout=%s: partitions %s",
            server_round,
            len(silent),
            len(messages),
            timeout,
            [f["partition-id"] for f in silent],
        )
    return silent


def _checkpoint(fed: Federation, writer: ResultsWriter, server_round: int) -> None:
    arrays = {k: a.numpy() for k, a in fed.arrays.items()}
    teachers = fed.teachers
    if teachers is not None and teachers.global_arrays is not None:
        arrays.update({TEACHER_PREFIX + k: v for k, v in teachers.global_arrays.items()})
    if fed.best_arrays is not None and fed.best_arrays is not fed.arrays:
        arrays.update({BEST_PREFIX + k: a.numpy() for k, a in fed.best_arrays.items()})
    arrays.update(
        recent_arrays([{k: a.numpy() for k, a in kept.items()} for _, kept in fed.recent])
    )
    save_checkpoint(
        writer.path,
        server_round,
        arrays,
        fed.strategy.state(),
        writer.rounds,
        teacher_state=teachers.state() if teachers is not None else None,
    )
