"""What running the student's circuits cost: executions, jobs, shots, QPU and queue time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from config.messages import COST_METRICS


@dataclass
class CostMeter:
    """Running totals for one client in one round.

    Attributes
    ----------
    executions : int
        Circuit executions: one per input row per evaluation (a batch of 64
        rows evaluated once is 64; gradients by backprop or adjoint add none).
    jobs : int
        Jobs submitted to a Qiskit backend (0 on PennyLane simulators).
    shots : int
        Shots requested in those jobs.
    qpu_seconds : float
        Billed quantum seconds from the jobs' metrics (real hardware only).
    queue_seconds : float
        Time the jobs waited before running (``running - created``).
    estimated_qpu_seconds : float
        What the jobs would bill on IBM hardware by the cost model
        (:func:`quantum.sampler.job_qpu_seconds`); local testing mode bills nothing,
        so budgets there are held to this figure.
    wall_seconds : float
        Wall time spent evaluating circuits (forward passes only).
    """

    executions: int = 0
    jobs: int = 0
    shots: int = 0
    qpu_seconds: float = 0.0
    queue_seconds: float = 0.0
    wall_seconds: float = 0.0
    estimated_qpu_seconds: float = 0.0

    def add_job(
        self, metrics: Mapping[str, Any] | None, *, estimated_qpu_seconds: float = 0.0
    ) -> None:
        """Count one job and add its QPU and queue seconds from ``job.metrics()``."""
        self.jobs += 1
        self.estimated_qpu_seconds += estimated_qpu_seconds
        qpu, queue = job_seconds(metrics or {})
        self.qpu_seconds += qpu
        self.queue_seconds += queue

    def __add__(self, other: CostMeter) -> CostMeter:
        """The sum of two meters, field by field."""
        mine, theirs = asdict(self), asdict(other)
        return CostMeter(**{k: v + theirs[k] for k, v in mine.items()})

    def as_metrics(self) -> dict[str, float | int]:
        """The totals under their reply-metric names (``config.messages.COST_METRICS``)."""
        return {COST_METRICS[k]: v for k, v in asdict(self).items()}

    def totals(self) -> dict[str, float]:
        """The totals by field name (what ``TrainReport.cost`` holds)."""
        return {k: float(v) for k, v in asdict(self).items()}


def _time(value: Any) -> dt.datetime | None:
    """A timestamp from ``job.metrics()``: ISO-8601 text (cloud) or ``datetime`` (local)."""
    if isinstance(value, dt.datetime):
        stamp = value
    elif isinstance(value, str) and value:
        stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)


def job_seconds(metrics: Mapping[str, Any]) -> tuple[float, float]:
    """(billed QPU seconds, queue seconds) of one job from its ``metrics()`` dictionary.

    Accepts the IBM cloud format (timestamps as ISO-8601 strings, usage in
    ``usage.quantum_seconds``) and qiskit-ibm-runtime's local testing format
    (``datetime`` objects, usage 0). Missing fields count as 0.
    """
    usage = metrics.get("usage") or {}
    qpu = float(usage.get("quantum_seconds") or 0.0)
    stamps = metrics.get("timestamps") or {}
    created, running = _time(stamps.get("created")), _time(stamps.get("running"))
    queue = (running - created).total_seconds() if created and running else 0.0
    return qpu, max(queue, 0.0)


def sum_costs(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Sum the cost metrics of several replies (keys absent in a reply count as 0)."""
    return {key: float(sum(r.get(key, 0) or 0 for r in rows)) for key in COST_METRICS.values()}
