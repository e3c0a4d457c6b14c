"""What a round's phases hand each other: the train round that was sent, and what came back.

:meth:`~strategies.student_fedavg.StudentFedAvg.configure_round` returns a
:class:`TrainRound`; :meth:`~strategies.student_fedavg.StudentFedAvg.aggregate_round`
takes it with the replies and returns a :class:`TrainOutcome`. The round
flow (:mod:`server_app.round_flow`) keeps both and writes them out; nothing
of a round is left on the strategy for another module to read. Flower's own
``configure_train`` / ``aggregate_train`` are thin wrappers over the two.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flwr.app import ArrayRecord, Message, MetricRecord

from config.messages import TrainReport


class Selection(list[int]):
    """The clients (partitions) chosen to train, with the reason.

    :meth:`~strategies.planning.RoundPlanner.select_clients` may return a plain
    list too (a user's strategy): its reason is then the method's owner.
    """

    def __init__(self, chosen: Iterable[int], reason: str) -> None:
        super().__init__(int(p) for p in chosen)
        self.reason = reason


@dataclass(frozen=True)
class TrainRound:
    """One round's train phase as sent.

    Attributes
    ----------
    server_round : int
    sent : ArrayRecord
        The global student every message carries (what replies are checked against).
    plan : dict
        Partition -> its budgets and their reasons
        (:meth:`~strategies.planning.RoundPlanner.plan_round`).
    selection_reason : str
        Why these clients train.
    messages : list of Message
        One per planned client; the grid gives them IDs when it sends them.
    """

    server_round: int
    sent: ArrayRecord
    plan: dict[int, dict[str, Any]]
    selection_reason: str
    messages: list[Message]


@dataclass(frozen=True)
class TrainOutcome:
    """What the replies to a :class:`TrainRound` gave.

    Attributes
    ----------
    arrays : ArrayRecord or None
        The new global student (None: no reply was accepted).
    metrics : MetricRecord or None
        Flower's aggregated train metrics (none are kept).
    reports : dict
        Partition -> its accepted reply's report.
    failures : list of dict
        A failure record (:func:`~strategies.replies.failure_record`) per error or refused reply.
    step_mismatches : list of dict
        ``{"partition-id", "planned", "ran"}`` per report whose steps differ from its plan.
    """

    arrays: ArrayRecord | None
    metrics: MetricRecord | None
    reports: dict[int, TrainReport]
    failures: list[dict[str, Any]]
    step_mismatches: list[dict[str, int]]
