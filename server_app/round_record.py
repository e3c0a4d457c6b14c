"""Pure functions: what a round (and the run) produced -> the records the results hold.

:func:`initial_record` is round 0 of ``rounds.jsonl``, :func:`round_record` a
trained round, :func:`summary_record` the run's ``summary.json``. None of them
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
        Node ID -> ``{"steps": budget, "reason": why}`` for each selected node.
    selection_reason : str
    reports : dict
        Node ID -> its train reply.
    failures : list of dict
        ``{"node-id", "code", "reason"}`` per failed or silent node.
    applied : bool
        Whether the aggregate replaced the global student.
    global_metrics : dict
        The global student's ``loss`` (nats) and ``accuracy`` on the server split.
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
    global_metrics: Mapping[str, float]
    seconds: Mapping[str, float]
    bytes: Mapping[str, int] = field(default_factory=dict)


def initial_record(
    global_metrics: Mapping[str, float],
    clients: Sequence[Mapping[str, Any]],
    partitions: Mapping[int, int],
    *,
    seconds: float,
    server_embed_seconds: float,
    query_seconds: float,
    bytes_received: int,
) -> dict[str, Any]:
    """Round 0: the initial global student and each node's statistics reply."""
    return {
        "round": 0,
        "global": dict(global_metrics),
        "clients": sorted(clients, key=lambda c: c["partition-id"]),
        "participants": sorted(partitions.values()),
        "failures": [],
        "seconds": seconds,
        "server-embed-seconds": server_embed_seconds,
        "train-seconds": query_seconds,
        "bytes-sent": 0,
        "bytes-received": bytes_received,
    }


def round_record(outcome: RoundOutcome, partitions: Mapping[int, int]) -> dict[str, Any]:
    """A trained round's line of ``rounds.jsonl`` (nodes named by their partition)."""

    def part(node: int) -> int:
        return partitions.get(node, node)

    clients: list[dict[str, Any]] = sorted(
        (
            {
                "node-id": node,
                **report.to_dict(),
                "partition-id": partitions.get(node, report.partition_id),
                "budget-reason": outcome.plan.get(node, {}).get("reason"),
            }
            for node, report in outcome.reports.items()
        ),
        key=lambda c: int(c["partition-id"]),
    )
    return {
        "round": outcome.server_round,
        "participants": sorted(part(n) for n in outcome.plan),
        "selection-reason": outcome.selection_reason,
        "budgets": {str(part(n)): p["steps"] for n, p in outcome.plan.items()},
        "budget-reasons": {str(part(n)): p["reason"] for n, p in outcome.plan.items()},
        "clients": clients,
        "quantum-cost": sum_costs(clients),
        "failures": [{**f, "partition-id": partitions.get(f["node-id"])} for f in outcome.failures],
        "update-applied": outcome.applied,
        "global": dict(outcome.global_metrics),
        "seconds": outcome.seconds["total"],
        "train-seconds": outcome.seconds["train"],
        "aggregate-seconds": outcome.seconds["aggregate"],
        "evaluate-seconds": outcome.seconds["evaluate"],
        "bytes-sent": outcome.bytes.get("sent", 0),
        "bytes-received": outcome.bytes.get("received", 0),
        "teacher-bytes-sent": outcome.bytes.get("teacher-sent", 0),
        "teacher-bytes-received": outcome.bytes.get("teacher-received", 0),
    }


def summary_record(
    rounds: Sequence[Mapping[str, Any]],
    *,
    strategy: str,
    stop_reason: str,
    rounds_run: int,
    initial: Mapping[str, float],
    majority_rate: float,
    server_rows: int,
    total_seconds: float,
    server_embed_seconds: float,
) -> dict[str, Any]:
    """``summary.json``: the run's outcome and its totals over ``rounds``."""
    clients = [c for r in rounds for c in r["clients"]]
    return {
        "status": "completed",
        "strategy": strategy,
        "rounds": rounds_run,
        "stop-reason": stop_reason,
        "initial-global": dict(initial),
        "final-global": rounds[-1]["global"],
        "server-majority-rate": majority_rate,
        "server-rows": server_rows,
        "total-seconds": total_seconds,
        "server-embed-seconds": server_embed_seconds,
        "total-client-steps": sum(c.get(TRAIN_KEYS["steps"], 0) for c in clients),
        "total-client-compute-seconds": sum(
            c.get(TRAIN_KEYS["compute_seconds"], 0.0) for c in clients
        ),
        "total-bytes-sent": sum(r["bytes-sent"] for r in rounds),
        "total-bytes-received": sum(r["bytes-received"] for r in rounds),
        "failures": sum(len(r.get("failures", [])) for r in rounds),
        "quantum-cost": sum_costs(clients),
    }
