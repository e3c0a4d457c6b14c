"""Time-aware budgets: a round's participants finish close together.

In a deployment the round lasts as long as its slowest participant, and the
others wait (idle). Each reply says how long its parts took; from the last
reply of each client:

- seconds per student step: ``student-seconds / steps``;
- seconds per teacher epoch: ``teacher-seconds`` over the epochs its last
  chunk made (``teacher-steps`` over the steps an epoch of its rows takes);
- fixed seconds: ``compute-seconds`` minus the student, teacher and embedding
  seconds (loading, evaluating, serialising).

:func:`estimate_seconds` predicts a plan's seconds; :func:`fit_to_deadline`
defers a teacher chunk that would end after the deadline (whole: a chunk
pays a model build and a pass over all rows, so a sliver of one is waste),
then lowers the student steps (never below ``min-steps``) of each client
whose plan would still end after it. FedNova aggregation
keeps the unequal steps from biasing the average. Clients never measured are
left as they are.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

from strategies.memory import ClientMemory


@dataclass(frozen=True)
class Speed:
    """A client's measured costs (seconds), from its last replies."""

    per_step: float  # one student step
    per_teacher_epoch: float  # one epoch of teacher fine-tuning (NaN: never measured)
    fixed: float  # the rest of a round's work


def speed(client: ClientMemory, teacher_batch_size: int) -> Speed | None:
    """The client's :class:`Speed`, or None before it has replied with student steps."""
    if client.budget <= 0 or not math.isfinite(client.student_seconds):
        return None
    per_step = client.student_seconds / client.budget
    per_epoch = math.nan
    chunk_steps, chunk_seconds = client.teacher_chunk_steps, client.teacher_chunk_seconds
    if client.num_examples and chunk_steps and math.isfinite(chunk_seconds):
        epoch_steps = max(1, math.ceil(client.num_examples / teacher_batch_size))
        per_epoch = chunk_seconds * epoch_steps / chunk_steps
    spent = client.student_seconds + client.teacher_seconds + client.embed_seconds
    compute = client.compute_seconds
    fixed = max(0.0, compute - spent) if math.isfinite(compute) else 0.0
    return Speed(per_step, per_epoch, fixed)


def estimate_seconds(speed_: Speed, steps: int, teacher_epochs: float) -> float:
    """Predicted seconds of a round in which the client runs ``steps`` and ``teacher_epochs``."""
    teacher = teacher_epochs * speed_.per_teacher_epoch if teacher_epochs > 0 else 0.0
    return speed_.fixed + steps * speed_.per_step + (teacher if math.isfinite(teacher) else 0.0)


def deadline_seconds(mode: str, estimates: Mapping[int, float]) -> float | None:
    """The round's deadline: ``median`` of the estimates, a fixed number, or None (``off``)."""
    if mode == "off" or not estimates:
        return None
    if mode == "median":
        return float(statistics.median(estimates.values()))
    return float(mode)


def fit_to_deadline(
    plan: Mapping[int, tuple[int, float]],
    speeds: Mapping[int, Speed],
    deadline: float,
    min_steps: int,
) -> dict[int, tuple[int, float, str]]:
    """Each client's ``(steps, teacher epochs, reason)`` so that its estimate meets ``deadline``.

    ``plan`` maps each client to its planned ``(steps, teacher epochs)``. Only
    clients with a speed whose estimate exceeds the deadline change: their
    teacher chunk is deferred, then the student steps shrink to what fits
    (at least ``min_steps``).
    """
    fitted = {}
    for partition, (steps, epochs) in plan.items():
        known = speeds.get(partition)
        if known is None or estimate_seconds(known, steps, epochs) <= deadline:
            fitted[partition] = (steps, epochs, "")
            continue
        reason = f"deadline {deadline:.1f} s"
        if epochs > 0:
            epochs, reason = 0.0, f"{reason}: teacher chunk deferred"
        left = deadline - estimate_seconds(known, 0, epochs)
        new_steps = max(min_steps, min(steps, math.floor(left / known.per_step)))
        fitted[partition] = (new_steps, epochs, f"{reason}: steps {steps} -> {new_steps}")
    return fitted
