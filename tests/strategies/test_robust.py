"""Untrusted replies: the checks, clipping, and robust aggregation against a scaled update."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fakes import Grid, reply
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from config.messages import teacher_steps
from harness.inprocess import task_identity
from strategies import StudentFedAvg
from strategies.robust import check_reply, clip_update

SENT = ArrayRecord(
    {
        "w": Array(np.zeros((2, 3), dtype=np.float32)),
        "b": Array(np.zeros(3, dtype=np.float32)),
    }
)
GOOD = {"partition-id": 0, "num-examples": 50, "steps": 7, "student-val-loss": 0.8,
        "student-val-accuracy": 0.6}  # fmt: skip


def _arrays(**change: np.ndarray) -> ArrayRecord:
    arrays = {k: a.numpy().copy() + 0.1 for k, a in SENT.items()}
    arrays.update(change)
    return ArrayRecord({k: Array(v) for k, v in arrays.items()})


@pytest.mark.parametrize(
    ("arrays", "metrics", "reason"),
    [
        (_arrays(), {}, None),
        (_arrays(w=np.full((2, 3), np.nan, dtype=np.float32)), {}, "non-finite"),
        (_arrays(b=np.array([np.inf, 0, 0], dtype=np.float32)), {}, "non-finite"),
        (_arrays(w=np.zeros((3, 3), dtype=np.float32)), {}, "float32[3, 3], float32[2, 3] was"),
        (_arrays(w=np.zeros((2, 3), dtype=np.float64)), {}, "float64[2, 3]"),
        (_arrays(extra=np.zeros(1, dtype=np.float32)), {}, "extra ['extra']"),
        (None, {}, "no student arrays"),
        (_arrays(), {"num-examples": 51}, "num-examples 51 is outside 1..50"),
        (_arrays(), {"num-examples": 0}, "num-examples 0"),
        (_arrays(), {"steps": 8}, "steps 8 is outside 0..7"),
        (_arrays(), {"student-val-loss": -0.1}, "'student-val-loss' = -0.1 is negative"),
        (_arrays(), {"student-val-accuracy": 1.5}, "outside [0, 1]"),
        (_arrays(), {"student-val-loss": float("nan")}, "not a finite number"),
        (_arrays(), {"steps": "7"}, "not a finite number"),
    ],
)
def test_a_reply_counts_only_if_it_passes_every_check(
    arrays: ArrayRecord | None, metrics: dict, reason: str | None
) -> None:
    report, problem = check_reply(arrays, {**GOOD, **metrics}, SENT, 7, 50)
    if reason is None:
        assert problem is None and report is not None and report.num_examples == 50
    else:
        assert report is None and problem is not None and reason in problem


def test_a_missing_metric_is_a_reason_too() -> None:
    metrics = {k: v for k, v in GOOD.items() if k != "steps"}
    report, problem = check_reply(_arrays(), metrics, SENT, 7, 50)
    assert report is None and problem is not None and "'steps' is missing" in problem


@pytest.mark.parametrize(
    ("teacher", "reason"),
    [
        ({"teacher-steps": 4, "teacher-total-steps": 4}, None),
        ({"teacher-steps": 5, "teacher-total-steps": 5}, "teacher-steps 5 is outside 0..4"),
        ({"teacher-restore-steps": 9, "teacher-total-steps": 9}, None),
        ({"teacher-restore-steps": 10, "teacher-total-steps": 10}, "outside 0..9"),
        ({"teacher-steps": 4, "teacher-restore-steps": 9, "teacher-total-steps": 13}, None),
        ({"teacher-steps": 3, "teacher-total-steps": 2}, "teacher-total-steps 2 is below"),
    ],
)
def test_a_reply_may_not_report_more_teacher_steps_than_it_was_sent(
    teacher: dict, reason: str | None
) -> None:
    """Budget (4 new steps, 9 to restore): more is refused, and so is a total below the run."""
    report, problem = check_reply(_arrays(), {**GOOD, **teacher}, SENT, 7, 50, (4, 9))
    if reason is None:
        assert problem is None and report is not None
    else:
        assert report is None and problem is not None and reason in problem


def test_the_client_and_the_server_count_teacher_steps_alike() -> None:
    """ceil(epochs x rows / batch); 0 epochs is 0 steps; the budgets the policies round
    down to 1e-4 epochs stay within the steps they were cut to."""
    assert teacher_steps(2.0, 50, 16) == 7 and teacher_steps(0.0, 50, 16) == 0
    assert teacher_steps(0.32, 50, 16) == 1  # a part-batch is one step
    for left, rows in [(5, 37), (12, 240), (1, 1000)]:
        epochs = math.floor(left * 16 / rows * 1e4) / 1e4
        assert teacher_steps(epochs, rows, 16) <= left


def test_clipping_scales_an_update_to_the_norm_and_leaves_small_ones() -> None:
    start = {"a": np.array([1.0, 1.0]), "b": np.array([0.0])}
    far = {"a": np.array([4.0, 5.0]), "b": np.array([0.0])}  # update (3, 4, 0): norm 5
    clipped = clip_update(start, far, 1.0)
    np.testing.assert_allclose(clipped["a"], [1.6, 1.8])  # start + (3, 4) / 5
    near = {"a": np.array([1.3, 1.4]), "b": np.array([0.0])}  # norm 0.5
    np.testing.assert_allclose(clip_update(start, near, 1.0)["a"], near["a"])


# --- one of five clients sends its update scaled by 100, through the strategy itself ----------

NODES = {100 + i: i for i in range(5)}


def _reply(node: int, weights: np.ndarray, examples: int) -> Message:
    metrics = MetricRecord({"num-examples": examples, "steps": 10, "partition-id": NODES[node]})
    content = RecordDict({"arrays": ArrayRecord({"w": Array(weights)}), "metrics": metrics})
    return reply(content, node)


def _round(aggregation: str, max_update_norm: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(the new global, the honest clients' example-weighted average) after one round."""
    rng = np.random.default_rng(0)
    start = rng.normal(size=20).astype(np.float32)
    # Honest clients: a shared step plus their own noise; client 4 sends 100x its update.
    shared = rng.normal(size=20) * 0.1
    honest = {n: start + shared + 0.02 * rng.normal(size=20) for n in list(NODES)[:4]}
    hostile = start + 100.0 * (shared + 0.02 * rng.normal(size=20))
    examples = {100: 40, 101: 60, 102: 50, 103: 70, 104: 80}
    strategy = StudentFedAvg(
        local_steps=10, student_lr=0.1, projection_lr=0.1, temperature=2.0, alpha=0.5,
        aggregation=aggregation, max_update_norm=max_update_norm,
    )  # fmt: skip
    strategy.bind_nodes(NODES)
    strategy.declare_examples({p: examples[n] for n, p in NODES.items()})
    with task_identity():
        train = strategy.configure_round(
            1, ArrayRecord({"w": Array(start)}), ConfigRecord(), Grid(list(NODES))
        )
        replies = [_reply(n, w.astype(np.float32), examples[n]) for n, w in honest.items()]
        replies.append(_reply(104, hostile.astype(np.float32), examples[104]))
        outcome = strategy.aggregate_round(train, replies)
    arrays = outcome.arrays
    assert arrays is not None and outcome.failures == []
    weights = np.array([examples[n] for n in honest], dtype=np.float64)
    average = np.average(np.stack(list(honest.values())), axis=0, weights=weights)
    return arrays["w"].numpy(), average


def test_a_scaled_update_moves_fedavg_far_and_the_robust_rules_stay_near_the_honest_average() -> (
    None
):
    new, honest = _round("fedavg")
    update = float(np.linalg.norm(honest - new))
    assert update > 5.0  # fedavg follows the 100x update (the honest step is about 0.45)
    for rule in ("median", "trimmed-mean", "krum"):
        new, honest = _round(rule)
        # Within 0.2 of the honest average: less than half of one honest step (about 0.45).
        assert float(np.linalg.norm(new - honest)) < 0.2, rule
    new, honest = _round("fedavg", max_update_norm=0.6)  # clipping bounds fedavg's move
    assert float(np.linalg.norm(new - honest)) < 0.6 * 80 / 300 + 0.2
