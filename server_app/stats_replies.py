"""``query.stats`` replies: what one must pass before its moments reach the federated PCA.

A node's statistics reply (``n``, ``sum x`` and ``sum x x^T`` of its
frozen-base embeddings, and the partition it serves) comes from a machine the
server does not control, and its moments shape every client's projection. A
reply counts only if (:func:`check_stats`):

- its metrics parse and are finite, with ``num-examples`` >= 1;
- the moments are finite, of the server's embedding width ``d`` (``total``
  (d,), ``outer`` (d, d)), for exactly the ``num-examples`` rows it declared;
- ``outer`` is symmetric and the covariance they imply, ``outer / n - mean
  mean^T``, is positive semidefinite: true of any real rows, and false when a
  node scales its sums (a scaled ``total`` grows with the square of the scale
  in ``mean mean^T`` and only linearly in ``outer / n``);
- the partition it names is not already held by another connected node
  (:func:`claim_partitions`): the node that held it first keeps it;
- when the run's teachers start from the pooled probe, its class moments
  (``llm.probe.ClassMoments``) are of the task's classes and the embedding
  width, for exactly the declared rows, and bear the marks of unit rows
  (:meth:`~llm.probe.ClassMoments.problem`).

A node that lies consistently (sums of invented rows) passes these checks.
Against that, with a robust ``aggregation`` the moments are pooled robustly
too (:func:`pool_moments`): the coordinate-wise median of the nodes' means and
second moments, each node counted once, which fewer than half the nodes
cannot move without bound.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import Message

from config.messages import METRICS_KEY, PROBE_STATS_KEY, STATS_KEY, StatsReport
from llm.probe import ClassMoments
from quantum.projection import MomentStats
from strategies.replies import REJECTED

#: The most negative covariance eigenvalue allowed, relative to the covariance's
#: trace (rounding of float64 sums of float32 rows stays far inside it).
PSD_TOLERANCE = 1e-6
#: How far ``outer`` may be from symmetric, relative to its largest entry.
SYMMETRY_TOLERANCE = 1e-5


def check_stats(
    reply: Message, width: int, classes: int | None = None
) -> tuple[tuple[StatsReport, MomentStats] | None, str]:
    """``((report, moments), "")`` for a reply whose moments may count, else ``(None, reason)``.

    ``width`` is the server's embedding size ``d`` (the frozen base's hidden size);
    ``classes``, when the reply must carry class moments (the pooled probe), the
    task's number of classes.
    """
    metrics = reply.content.metric_records.get(METRICS_KEY)
    record = reply.content.array_records.get(STATS_KEY)
    if metrics is None or record is None:
        return None, "no metrics or no statistics in the reply"
    bad = [k for k, v in metrics.items() if not _finite(v)]
    if bad:
        return None, f"metric {bad[0]!r} is not a finite number"
    try:
        report = StatsReport.from_mapping(metrics)
        stats = MomentStats.from_arrays({k: a.numpy() for k, a in record.items()})
    except (ValueError, KeyError, IndexError) as err:
        return None, f"statistics: {err}"
    if report.num_examples < 1:
        return None, f"num-examples {report.num_examples} is below 1"
    problem = moment_problem(stats, width, report.num_examples)
    if not problem and classes is not None:
        problem = _class_moments_problem(reply, width, classes, report.num_examples)
    return (None, problem) if problem else ((report, stats), "")


def class_moments(reply: Message) -> ClassMoments:
    """The class moments of a reply that :func:`check_stats` accepted with ``classes``."""
    record = reply.content.array_records[PROBE_STATS_KEY]
    return ClassMoments.from_arrays({k: a.numpy() for k, a in record.items()})


def _class_moments_problem(reply: Message, width: int, classes: int, rows: int) -> str:
    if PROBE_STATS_KEY not in reply.content.array_records:
        return "no class moments in the reply (teacher-probe=pooled needs them)"
    try:
        moments = class_moments(reply)
    except (ValueError, KeyError) as err:
        return f"class moments: {err}"
    return moments.problem(width, classes, rows)


def moment_problem(stats: MomentStats, width: int, rows: int) -> str:
    """Why ``stats`` cannot be the moments of ``rows`` real rows of ``width`` features, or ""."""
    if stats.total.shape != (width,):
        return f"moments of {stats.total.shape[0]} features, the embedding has {width}"
    if stats.n != rows:
        return f"moments of {stats.n} rows, the node declared num-examples {rows}"
    if not (np.isfinite(stats.total).all() and np.isfinite(stats.outer).all()):
        return "moment sums have non-finite values"
    scale = float(np.abs(stats.outer).max()) or 1.0
    if float(np.abs(stats.outer - stats.outer.T).max()) > SYMMETRY_TOLERANCE * scale:
        return "sum x x^T is not symmetric"
    mean = stats.total / rows
    cov = stats.outer / rows - np.outer(mean, mean)
    lowest = float(np.linalg.eigvalsh((cov + cov.T) / 2)[0])
    trace = float(np.trace(stats.outer / rows))
    if lowest < -PSD_TOLERANCE * max(trace, 1e-12):
        return (
            f"the moments imply a covariance with eigenvalue {lowest:.3g} < 0 "
            "(no real rows have them: scaled or forged sums)"
        )
    return ""


def pool_moments(stats: Sequence[MomentStats], robust: bool) -> MomentStats:
    """The nodes' moments pooled: summed (exact PCA of all rows), or with ``robust`` the
    coordinate-wise median of the per-node means and second moments, scaled to all rows."""
    if not stats:
        raise ValueError("no moments to pool")
    if not robust:
        return sum(stats[1:], stats[0])
    rows = sum(s.n for s in stats)
    mean = np.median(np.stack([s.total / s.n for s in stats]), axis=0)
    second = np.median(np.stack([s.outer / s.n for s in stats]), axis=0)
    return MomentStats(rows, rows * mean, rows * (second + second.T) / 2)


def claim_partitions(
    held: Mapping[int, int], claims: Iterable[tuple[int, int]], connected: Iterable[int]
) -> tuple[dict[int, int], dict[int, str]]:
    """Bind node IDs to the partitions they claim, first holder first.

    ``held`` maps node IDs to partitions already bound; ``claims`` are
    ``(node, partition)`` in the order the replies came. A claim on a partition
    that a connected node already holds is refused (the node gets the reason);
    a partition whose holder is gone is taken over (a restarted SuperNode comes
    back under a new node ID). Returns ``(new bindings, refused)``.
    """
    alive = set(connected)
    owner = {p: n for n, p in held.items() if n in alive}
    bound: dict[int, int] = {}
    refused: dict[int, str] = {}
    for node, partition in claims:
        holder = owner.get(partition)
        if holder is not None and holder != node:
            refused[node] = f"partition {partition} is already served by node {holder}"
            continue
        owner[partition] = node
        bound[node] = partition
    return bound, refused


def stats_failure(node: int, partition: int | None, reason: str) -> dict[str, Any]:
    """A failure record (as ``rounds.jsonl`` keeps them) for a refused statistics reply."""
    return {
        "node-id": node,
        "partition-id": partition,
        "code": REJECTED,
        "reason": f"rejected: {reason}",
    }


def _finite(value: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)
