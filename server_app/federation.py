"""The round loop (see DESIGN.md, "One round, as data").

Each round: nodes the strategy does not know yet are asked their partition,
the strategy configures one message per selected client (not sent, and the
run stops, when its planned QPU price would pass ``max-qpu-seconds``), the replies are
aggregated (example-weighted FedAvg, or FedNova), the global student is
evaluated on the server's validation split (and, with ``test-every-round``,
on the test rows for the plots), the round is written and checkpointed, and
the strategy may stop the run, reading validation figures only.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flwr.app import ConfigRecord, Message
from flwr.serverapp import Grid

from config.messages import INFO_KEY
from server_app.checkpoint import BEST_PREFIX, TEACHER_PREFIX, recent_arrays, save_checkpoint
from server_app.messaging import exchange
from server_app.results import ResultsWriter
from server_app.round_record import RoundOutcome, round_record
from server_app.setup import (
    Federation,
    array_bytes,
    evaluate_global,
    identify_nodes,
)
from server_app.teacher_federation import record_bytes
from strategies.replies import reply_node

logger = logging.getLogger(__name__)


class OverBudget(Exception):
    """A planned round would take the QPU spending past ``max-qpu-seconds``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def run_rounds(grid: Grid, fed: Federation, writer: ResultsWriter) -> tuple[str, int]:
    """Rounds ``fed.first_round`` .. ``num-server-rounds``; returns (stop reason, rounds run)."""
    num_rounds = fed.config.federation.num_rounds
    rounds_run = fed.first_round - 1
    for server_round in range(fed.first_round, num_rounds + 1):
        try:
            outcome = run_round(grid, fed, server_round)
        except OverBudget as stop:  # planned, not sent: nothing of it was trained or billed
            logger.info("stopping before round %d: %s", server_round, stop.reason)
            return stop.reason, rounds_run
        record = round_record(outcome)
        writer.write_round(record)
        if fed.budget is not None:
            fed.budget.observe(writer.rounds)
        fed.observe_val(server_round, writer.rounds)
        _checkpoint(fed, writer, server_round)
        rounds_run = server_round
        _log_round(record, num_rounds)
        reason = fed.strategy.should_stop(server_round, writer.rounds)
        if reason is None and fed.budget is not None:
            reason = fed.budget.stop_reason(server_round)
        if reason is not None:
            logger.info("stopping after round %d: %s", server_round, reason)
            return reason, rounds_run
    return "max-rounds", rounds_run


def run_round(grid: Grid, fed: Federation, server_round: int) -> RoundOutcome:
    """Configure, send, aggregate and evaluate one round; the global student moves in ``fed``."""
    strategy, teachers, timeout = fed.strategy, fed.teachers, fed.config.federation.round_timeout
    started = time.perf_counter()
    unidentified = identify_nodes(grid, strategy, fed.config, fed.data.val)
    if teachers is not None:  # the federated rounds may have ended early (teacher budgets)
        strategy.teacher_policy.federated_rounds = teachers.rounds
    messages = list(strategy.configure_train(server_round, fed.arrays, ConfigRecord({}), grid))
    over = fed.budget.round_stop(server_round, strategy.last_plan) if fed.budget else None
    if over is not None:
        raise OverBudget(over)
    if teachers is not None:
        teachers.attach(server_round, messages, strategy.partitions)
    replies = exchange(grid, messages, timeout)
    judged, refused, teacher_bytes = replies, [], 0
    if teachers is not None:  # teacher arrays checked and pooled; a refused reply is out
        collected = teachers.collect(
            server_round, replies, messages, strategy.partitions, strategy.reply_problem
        )
        judged, refused = collected.kept, collected.failures
        teacher_bytes = collected.bytes_received
    silent = silent_nodes(messages, replies, strategy.partitions, server_round, timeout)
    train_done = time.perf_counter()
    new_arrays, _ = strategy.aggregate_train(server_round, judged)
    needed = min(fed.config.federation.min_train_nodes, len(messages))
    applied = new_arrays is not None and len(strategy.last_reports) >= needed
    if applied and new_arrays is not None:
        fed.arrays = new_arrays
    else:
        logger.warning(
            "round %d: %d usable replies, min-train-nodes=%d: the global student is unchanged",
            server_round,
            len(strategy.last_reports),
            fed.config.federation.min_train_nodes,
        )
    aggregate_done = time.perf_counter()
    val = evaluate_global(fed.student, fed.arrays, fed.data.val)
    strategy.observe_val(server_round, val)
    test = (
        evaluate_global(fed.student, fed.arrays, fed.data.test)
        if fed.config.data.test_every_round
        else None
    )
    federated = federated_val(grid, fed, server_round)
    done = time.perf_counter()
    return RoundOutcome(
        server_round=server_round,
        plan=strategy.last_plan,
        selection_reason=strategy.last_selection_reason,
        reports=strategy.last_reports,
        failures=[*unidentified, *refused, *strategy.last_failures, *silent],
        node_info=node_info(replies, strategy.partitions),
        applied=applied,
        val=val,
        test=test,
        federated_val=federated,
        step_mismatches=strategy.last_step_mismatches,
        seconds={
            "total": done - started,
            "train": train_done - started,
            "aggregate": aggregate_done - train_done,
            "evaluate": done - aggregate_done,
        },
        bytes={
            "sent": array_bytes(messages),
            "received": array_bytes(replies),
            "teacher-sent": record_bytes(messages),
            "teacher-received": teacher_bytes,
        },
    )


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


def federated_val(grid: Grid, fed: Federation, server_round: int) -> dict[str, Any] | None:
    """Flower's evaluate phase on the new global student (``fraction-evaluate``; None: off).

    The figures go to ``rounds.jsonl`` as ``federated-val``; nothing decides by them.
    """
    strategy = fed.strategy
    messages = list(strategy.configure_evaluate(server_round, fed.arrays, ConfigRecord({}), grid))
    if not messages:
        return None
    timeout = fed.config.federation.round_timeout
    replies = exchange(grid, messages, timeout)
    strategy.aggregate_evaluate(server_round, replies)
    evaluation = dict(strategy.last_evaluation or {})
    silent = silent_nodes(messages, replies, strategy.partitions, server_round, timeout)
    evaluation["failures"] = [*evaluation.get("failures", []), *silent]
    return evaluation


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


def _log_round(record: dict[str, Any], num_rounds: int) -> None:
    """One line: who trained with which budget, the validation figures, the seconds."""
    budgets = ", ".join(f"{p}:{steps}" for p, steps in record["budgets"].items())
    failed = f", {len(record['failures'])} failed" if record["failures"] else ""
    logger.info(
        "round %d/%d: clients:steps %s%s; validation acc %.3f, loss %.4f nats; %.1f s",
        record["round"],
        num_rounds,
        budgets or "none",
        failed,
        record["val"]["accuracy"],
        record["val"]["loss"],
        record["seconds"],
    )
