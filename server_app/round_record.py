"""Pure functions: what a round (and the run) produced -> the records the results hold.

:func:`initial_record` is round 0 of ``rounds.jsonl``, :func:`round_record` a
trained round, :func:`round_line` its console line, :func:`summary_record` the
run's ``summary.json``. None of them
reads a clock, a file or a message: the round loop measures, these arrange.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from config.messages import TRAIN_KEYS, TrainReport
from quantum.metering import sum_costs


@dataclass(frozen=True)
class RoundOutcome:
    """What one round decided, received and measured.

    Attributes
    ----------
    server_round : int
    plan : dict
        Partition -> ``{"steps": budget, "reason": why, "teacher-epochs": teacher
        budget, "teacher-reason": why, "teacher-restore-steps": steps to rebuild
        a lost teacher}`` for each selected client.
    selection_reason : str
    reports : dict
        Partition -> its train reply.
    failures : list of dict
        ``{"node-id", "partition-id", "code", "reason"}`` per failed or silent node.
    applied : bool
        Whether the aggregate replaced the global student.
    val : dict
        The global student's ``loss`` (nats) and ``accuracy`` on the server's
        validation split.
    test : dict or None
        The same on the test rows, with ``test-every-round`` (plots only).
    federated_val : dict or None
        Flower's evaluate phase (``fraction-evaluate``): the new global student on
        the asked clients' own validation rows (:mod:`strategies.evaluation`).
    teacher_val : dict or None
        ``teacher-policy=validated``: the round's global teacher on the server's
        validation rows and the verdict on it
        (:func:`server_app.teacher_report.judge_global_teacher`).
    step_mismatches : list of dict
        ``{"partition-id", "planned", "ran"}`` per client that ran other steps than planned.
    node_info : dict
        Partition -> its reply's node facts: ``backend`` (what ran its circuits,
        a device or a backend's own name) and ``execution-mode``.
    seconds : dict
        ``total``, ``train``, ``aggregate`` and ``evaluate`` wall seconds.
    bytes : dict
        ``sent``, ``received``, ``teacher-sent``, ``teacher-received``.
    """

    server_round: int
    plan: Mapping[int, Mapping[str, Any]]
    selection_reason: str
    reports: Mapping[int, TrainReport]
    failures: Sequence[Mapping[str, Any]]
    applied: bool
    val: Mapping[str, float]
    seconds: Mapping[str, float]
    bytes: Mapping[str, int] = field(default_factory=dict)
    test: Mapping[str, float] | None = None
    step_mismatches: Sequence[Mapping[str, int]] = ()
    node_info: Mapping[int, Mapping[str, str]] = field(default_factory=dict)
    federated_val: Mapping[str, Any] | None = None
    teacher_val: Mapping[str, Any] | None = None


def initial_record(
    val: Mapping[str, float],
    clients: Sequence[Mapping[str, Any]],
    *,
    seconds: float,
    server_embed_seconds: float,
    query_seconds: float,
    bytes_received: int,
    failures: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Round 0: the initial global student, each node's statistics reply, and the refused ones."""
    ordered = sorted(clients, key=lambda c: int(c["partition-id"]))
    return {
        "round": 0,
        "val": dict(val),
        "clients": ordered,
        "participants": [int(c["partition-id"]) for c in ordered],
        "failures": [dict(f) for f in failures],
        "seconds": seconds,
        "server-embed-seconds": server_embed_seconds,
        "train-seconds": query_seconds,
        "bytes-sent": 0,
        "bytes-received": bytes_received,
    }


def round_record(outcome: RoundOutcome) -> dict[str, Any]:
    """A trained round's line of ``rounds.jsonl`` (clients named by their partition)."""
    clients = [
        {
            **report.to_dict(),
            "partition-id": partition,
            "budget-reason": _reason(outcome, partition),
            "backend": outcome.node_info.get(partition, {}).get("backend"),
            "execution-mode": outcome.node_info.get(partition, {}).get("execution-mode"),
        }
        for partition, report in sorted(outcome.reports.items())
    ]
    record = {
        "round": outcome.server_round,
        "participants": sorted(outcome.plan),
        "selection-reason": outcome.selection_reason,
        "budgets": {str(p): plan["steps"] for p, plan in sorted(outcome.plan.items())},
        "budget-reasons": {str(p): plan["reason"] for p, plan in sorted(outcome.plan.items())},
        "teacher-budgets": {
            str(p): plan.get("teacher-epochs", 0.0) for p, plan in sorted(outcome.plan.items())
        },
        "teacher-reasons": {
            str(p): plan.get("teacher-reason", "") for p, plan in sorted(outcome.plan.items())
        },
        "teacher-restore-budgets": {
            str(p): plan.get("teacher-restore-steps", 0)
            for p, plan in sorted(outcome.plan.items())
            if plan.get("teacher-restore-steps", 0)
        },
        "shot-budgets": {str(p): plan.get("shots", 0) for p, plan in sorted(outcome.plan.items())},
        "clients": clients,
        "failures": [dict(f) for f in outcome.failures],
        "step-mismatches": [dict(m) for m in outcome.step_mismatches],
        "update-applied": outcome.applied,
        "val": dict(outcome.val),
        "seconds": outcome.seconds["total"],
        "train-seconds": outcome.seconds["train"],
        "aggregate-seconds": outcome.seconds["aggregate"],
        "evaluate-seconds": outcome.seconds["evaluate"],
        "bytes-sent": outcome.bytes.get("sent", 0),
        "bytes-received": outcome.bytes.get("received", 0),
        "teacher-bytes-sent": outcome.bytes.get("teacher-sent", 0),
        "teacher-bytes-received": outcome.bytes.get("teacher-received", 0),
    }
    if outcome.test is not None:
        record["test"] = dict(outcome.test)
    if outcome.federated_val is not None:
        record["federated-val"] = dict(outcome.federated_val)
    if outcome.teacher_val is not None:
        record["teacher-val"] = dict(outcome.teacher_val)
    record["quantum-cost"] = sum_costs(cost_rows(record))
    return record


def cost_rows(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The replies of a ``rounds.jsonl`` record that carry a quantum cost: its train
    replies (``clients``) and its evaluate replies (``federated-val``'s ``clients``)."""
    federated = record.get("federated-val") or {}
    return [*record.get("clients", []), *federated.get("clients", {}).values()]


def _reason(outcome: RoundOutcome, partition: int) -> Any:
    return outcome.plan.get(partition, {}).get("reason")


def summary_record(
    rounds: Sequence[Mapping[str, Any]],
    *,
    strategy: str,
    stop_reason: str,
    rounds_run: int,
    final_round: int = -1,
    final_val: Mapping[str, Any] | None = None,
    averaged_rounds: Sequence[int] = (),
    val_split: Mapping[str, Any],
    test: Mapping[str, Any],
    total_seconds: float,
    server_embed_seconds: float,
    test_embed_seconds: float = 0.0,
    teacher: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``summary.json``: the run's outcome and its totals over ``rounds``.

    ``val_split`` and ``test`` give ``rows`` and ``majority-rate`` of the two
    server splits; ``test`` also the final student's ``loss`` and ``accuracy``
    on the test rows, scored once, after the last round. ``final_round`` is
    the round whose global student the run ended with (-1: the last);
    ``final_val`` its validation figures where it is no round's student (the
    mean of the students of ``averaged_rounds``, ``final-model=average``).
    ``teacher`` is what :func:`server_app.teacher_report.teacher_summary` found.
    """
    clients = [c for r in rounds for c in r["clients"]]
    priced = [c for r in rounds for c in cost_rows(r)]
    final = next((r for r in rounds if r["round"] == final_round), rounds[-1])
    return {
        "status": "completed",
        "strategy": strategy,
        "rounds": rounds_run,
        "stop-reason": stop_reason,
        "initial-val": rounds[0]["val"],
        "final-round": final["round"],
        "final-val": dict(final_val) if final_val is not None else final["val"],
        "averaged-rounds": list(averaged_rounds),
        "final-test": {"loss": test["loss"], "accuracy": test["accuracy"]},
        "teacher": dict(teacher) if teacher is not None else None,
        "val-majority-rate": val_split["majority-rate"],
        "test-majority-rate": test["majority-rate"],
        "val-rows": val_split["rows"],
        "test-rows": test["rows"],
        "total-seconds": total_seconds,
        "server-embed-seconds": server_embed_seconds,
        "test-embed-seconds": test_embed_seconds,
        "total-client-steps": sum(c.get(TRAIN_KEYS["steps"], 0) for c in clients),
        "total-client-compute-seconds": sum(
            c.get(TRAIN_KEYS["compute_seconds"], 0.0) for c in clients
        ),
        "total-bytes-sent": sum(r["bytes-sent"] for r in rounds),
        "total-bytes-received": sum(r["bytes-received"] for r in rounds),
        "failures": sum(len(r.get("failures", [])) for r in rounds),
        "quantum-cost": sum_costs(priced),
    }


def round_line(record: Mapping[str, Any], num_rounds: int) -> str:
    """A round's console line: who trained and why, each step budget (and teacher budget,
    in a round that trains teachers) with its reason, the validation figures (and the
    evaluate phase's on the clients' own rows), the seconds."""
    who = ", ".join(str(p) for p in record["participants"]) or "none"
    parts = [f"round {record['round']}/{num_rounds}: trained {who} ({record['selection-reason']})"]
    if record["budgets"]:
        parts.append("steps " + _by_reason(record["budgets"], record["budget-reasons"]))
    if any(epochs > 0 for epochs in record["teacher-budgets"].values()):
        epochs = _by_reason(record["teacher-budgets"], record["teacher-reasons"])
        parts.append(f"teacher epochs {epochs}")
    if record["failures"]:
        parts.append(f"{len(record['failures'])} failed")
    val = f"validation acc {record['val']['accuracy']:.3f}, loss {record['val']['loss']:.4f} nats"
    federated = record.get("federated-val") or {}
    if federated.get("clients"):
        val += f"; clients' own rows acc {federated['accuracy']:.3f}"
    return "; ".join([*parts, val, f"{record['seconds']:.1f} s"])


def _by_reason(values: Mapping[str, float], reasons: Mapping[str, str]) -> str:
    """``"40 for 0, 1 (fixed), 12 for 2 (capped)"`` (``"40 each (fixed)"`` when all agree):
    the clients grouped by value and reason."""
    groups: dict[tuple[float, str], list[str]] = {}
    for partition, value in values.items():
        groups.setdefault((value, reasons.get(partition, "")), []).append(partition)
    if len(groups) == 1:
        ((value, reason),) = groups
        return f"{value:g} each" + (f" ({reason})" if reason else "")
    return ", ".join(
        f"{value:g} for {', '.join(partitions)}" + (f" ({reason})" if reason else "")
        for (value, reason), partitions in groups.items()
    )
