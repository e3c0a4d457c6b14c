"""Untrusted replies: what a reply must pass before it counts, and aggregation it cannot steer.

A client's reply is data from a machine the server does not control. Before a
reply counts, :func:`check_reply` requires:

- the student's arrays under the same keys, with the same shapes and dtypes,
  as the arrays the server sent, and every value finite;
- ``num-examples`` between 1 and the count the node declared before training
  (its ``query.stats`` reply), so that a client cannot buy weight;
- ``steps`` between 0 and the budget the server sent;
- every metric a finite number, losses >= 0, accuracies in [0, 1], seconds
  and counts >= 0.

A reply that fails becomes a recorded failure with its reason, like a crashed
client, and the round goes on with the others.

Then, optionally, each update is clipped (``max-update-norm``: the update
``w_i - w`` scaled down to that L2 norm over all arrays), and the accepted
replies are combined by ``aggregation``:

- ``fedavg``: the example-weighted mean; one bad client moves it without bound;
- ``fednova``: FedNova's step-normalised mean (as fedavg against bad clients);
- ``median``: the coordinate-wise median; tolerates fewer than half bad;
- ``trimmed-mean``: per coordinate, the mean after dropping the
  ``trim-fraction`` largest and smallest values (Flower's ``trim_mean``);
  tolerates up to that fraction bad at each end;
- ``krum``: the one reply closest to its ``n - f - 2`` nearest others
  (Flower's ``select_multikrum``, ``f`` = ``krum-byzantine``); needs
  ``n >= 2 f + 3`` replies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict
from flwr.serverapp.strategy.fedtrimmedavg import trim_mean
from flwr.serverapp.strategy.multikrum import select_multikrum

from config.messages import TrainReport

ROBUST = ("median", "trimmed-mean", "krum")


def check_reply(
    arrays: ArrayRecord | None,
    metrics: Mapping[str, Any],
    sent: ArrayRecord,
    planned_steps: int | None,
    declared_examples: int | None,
    teacher_budget: tuple[int, int] | None = None,
) -> tuple[TrainReport | None, str | None]:
    """``(report, None)`` for a reply that may count, else ``(None, reason)``.

    ``teacher_budget``: the most teacher steps the client was sent for a new
    chunk and for a restore (None: not checked).
    """
    problem = metrics_problem(metrics)
    if problem:
        return None, problem
    try:
        report = TrainReport.from_mapping(metrics)
    except ValueError as err:
        return None, f"metrics: {err}"
    if arrays is None:
        return None, "no student arrays in the reply"
    if set(arrays.keys()) != set(sent.keys()):
        extra, missing = sorted(set(arrays) - set(sent)), sorted(set(sent) - set(arrays))
        return None, f"student arrays differ from those sent (extra {extra}, missing {missing})"
    for key, array in arrays.items():
        mine, theirs = sent[key], array
        if tuple(theirs.shape) != tuple(mine.shape) or theirs.dtype != mine.dtype:
            return None, (
                f"array {key!r} is {theirs.dtype}{list(theirs.shape)}, "
                f"{mine.dtype}{list(mine.shape)} was sent"
            )
        if not np.isfinite(theirs.numpy()).all():
            return None, f"array {key!r} has non-finite values"
    if report.num_examples < 1 or (
        declared_examples is not None and report.num_examples > declared_examples
    ):
        return None, (
            f"num-examples {report.num_examples} is outside 1..{declared_examples} "
            "(the count the node declared before training)"
        )
    if planned_steps is not None and not 0 <= report.steps <= planned_steps:
        return None, f"steps {report.steps} is outside 0..{planned_steps} (the budget sent)"
    problem = teacher_steps_problem(report, teacher_budget)
    return (None, problem) if problem else (report, None)


def metrics_problem(metrics: Mapping[str, Any]) -> str | None:
    """Why a reply's metrics may not count: a value not a finite number, negative, or an
    accuracy outside [0, 1]; None if none."""
    for key, value in metrics.items():
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            return f"metric {key!r} is not a finite number: {value!r}"
        if key.endswith("-accuracy") and not all(0.0 <= v <= 1.0 for v in values):
            return f"metric {key!r} = {value!r} is outside [0, 1]"
        if not all(v >= 0 for v in values):
            return f"metric {key!r} = {value!r} is negative"
    return None


def teacher_steps_problem(report: TrainReport, budget: tuple[int, int] | None) -> str | None:
    """Why the teacher steps a reply reports may not count (None: they may)."""
    ran = report.teacher_steps + report.teacher_restore_steps
    if report.teacher_total_steps < ran:
        return (
            f"teacher-total-steps {report.teacher_total_steps} is below the "
            f"{ran} steps it reports running this round"
        )
    if budget is None:
        return None
    chunk, restore = budget
    if report.teacher_steps > chunk:
        return f"teacher-steps {report.teacher_steps} is outside 0..{chunk} (the budget sent)"
    if report.teacher_restore_steps > restore:
        return (
            f"teacher-restore-steps {report.teacher_restore_steps} is outside 0..{restore} "
            "(the restore budget sent)"
        )
    return None


def clip_update(
    start: Mapping[str, np.ndarray], arrays: Mapping[str, np.ndarray], max_norm: float
) -> dict[str, np.ndarray]:
    """``start + u * min(1, max_norm / ||u||)`` with ``u = arrays - start`` (L2 over all)."""
    update = {k: arrays[k].astype(np.float64) - start[k] for k in start}
    norm = math.sqrt(sum(float(np.square(u).sum()) for u in update.values()))
    scale = min(1.0, max_norm / norm) if norm > 0 else 1.0
    return {k: start[k] + scale * update[k] for k in start}


def robust_aggregate(
    kind: str,
    replies: Sequence[Mapping[str, np.ndarray]],
    trim_fraction: float,
    byzantine: int,
) -> dict[str, np.ndarray]:
    """The ``median``, ``trimmed-mean`` or ``krum`` of the replies' arrays (see the module).

    Each reply counts once: these rules do not weight by ``num-examples``.
    """
    keys = list(replies[0])
    if kind == "median":
        return {k: np.median(np.stack([r[k] for r in replies]), axis=0) for k in keys}
    if kind == "trimmed-mean":
        return {k: trim_mean(np.stack([r[k] for r in replies]), trim_fraction) for k in keys}
    if kind == "krum":
        contents = [
            RecordDict(
                {
                    "arrays": ArrayRecord({k: Array(np.asarray(r[k])) for k in keys}),
                    "index": ArrayRecord({"i": Array(np.array([i]))}),
                }
            )
            for i, r in enumerate(replies)
        ]
        (chosen,) = select_multikrum(contents, num_malicious_nodes=byzantine, num_nodes_to_select=1)
        index = int(chosen.array_records["index"]["i"].numpy()[0])
        return {k: np.asarray(replies[index][k]) for k in keys}
    raise ValueError(f"unknown robust aggregation {kind!r}")
