"""Statistics replies and teacher-federation replies from hostile nodes: refused with their
reasons, bounded where they pass, and the honest node keeps its partition."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import reply
from flwr.app import (
    Array,
    ArrayRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)

from client_app.app import app as client_app
from config.messages import METRICS_KEY, PROBE_STATS_KEY, STATS_KEY, TEACHER_KEY
from harness.inprocess import run_in_process, task_identity
from llm.probe import ClassMoments
from quantum.projection import MomentStats
from server_app.results import read_rounds
from server_app.stats_replies import check_stats, claim_partitions, pool_moments
from server_app.teacher_federation import TeacherFederation

WIDTH = 6


@pytest.fixture()
def as_superlink() -> Iterator[None]:
    with task_identity():
        yield


def _message(content: RecordDict, node: int, kind: str = "query.stats") -> Message:
    return reply(content, node, kind, reply_to="")


def _stats_reply(stats: MomentStats, examples: int, partition: int = 0) -> Message:
    arrays = ArrayRecord({k: Array(v) for k, v in stats.to_arrays().items()})
    metrics = MetricRecord({"partition-id": partition, "num-examples": examples})
    return _message(RecordDict({STATS_KEY: arrays, METRICS_KEY: metrics}), 10 + partition)


def _rows(seed: int, n: int = 40) -> np.ndarray:
    """Rows like embeddings: a large common mean and a small spread."""
    rng = np.random.default_rng(seed)
    return 1.5 + 0.3 * rng.standard_normal((n, WIDTH))


def test_honest_statistics_pass_and_each_hostile_kind_is_refused_with_its_reason() -> None:
    honest = MomentStats.from_features(_rows(0))
    checked, problem = check_stats(_stats_reply(honest, 40), WIDTH)
    assert checked is not None and problem == ""
    nan = MomentStats(40, honest.total.copy(), honest.outer.copy())
    nan.total[0] = np.nan
    scaled = MomentStats(40, 100 * honest.total, 100 * honest.outer)
    wide = MomentStats.from_features(np.hstack([_rows(0), _rows(1)]))
    cases = {
        "non-finite": (nan, 40),
        "no real rows have them": (scaled, 40),
        f"the embedding has {WIDTH}": (wide, 40),
        "declared num-examples 80": (honest, 80),
    }
    for reason, (stats, examples) in cases.items():
        checked, problem = check_stats(_stats_reply(stats, examples), WIDTH)
        assert checked is None and reason in problem, (reason, problem)


def test_class_moments_are_required_and_checked_when_the_probe_is_pooled() -> None:
    """teacher-probe=pooled: a statistics reply also carries class moments (2 classes
    here); missing, scaled or miscounted ones refuse the reply whole."""
    rows, labels = _rows(0), np.arange(40) % 2
    honest = MomentStats.from_features(rows)
    classes = ClassMoments.from_rows(rows, labels, 2).to_arrays()

    def reply(**changes: Any) -> Message:
        message = _stats_reply(honest, 40)
        message.content[PROBE_STATS_KEY] = ArrayRecord(
            {k: Array(np.asarray(v)) for k, v in {**classes, **changes}.items()}
        )
        return message

    checked, problem = check_stats(reply(), WIDTH, classes=2)
    assert checked is not None and problem == ""
    assert "no class moments" in check_stats(_stats_reply(honest, 40), WIDTH, classes=2)[1]
    cases = {
        "not the 40 unit rows": reply(outer=classes["outer"] * 100),
        "declared num-examples 40": reply(counts=classes["counts"] * 2),
        "shapes": reply(sums=classes["sums"][:, :3]),
        "longer than its count": reply(sums=classes["sums"] * 5),
    }
    for reason, message in cases.items():
        checked, problem = check_stats(message, WIDTH, classes=2)
        assert checked is None and reason in problem, (reason, problem)


def test_a_second_claim_keeps_the_first_holder_unless_it_is_gone() -> None:
    bound, refused = claim_partitions({}, [(10, 0), (11, 1), (12, 0)], connected=[])
    assert bound == {10: 0, 11: 1} and set(refused) == {12}
    assert "already served by node 10" in refused[12]
    # Later: node 13 claims partition 0 while node 10 is still connected: refused.
    bound, refused = claim_partitions({10: 0, 11: 1}, [(13, 0)], connected=[10, 11, 13])
    assert bound == {} and set(refused) == {13}
    # Node 10 is gone (a restarted SuperNode comes back under a new ID): taken over.
    bound, refused = claim_partitions({10: 0, 11: 1}, [(13, 0)], connected=[11, 13])
    assert bound == {13: 0} and refused == {}


def test_robust_pooling_is_bounded_by_the_honest_nodes() -> None:
    honest = [MomentStats.from_features(_rows(seed)) for seed in range(4)]
    liar = MomentStats.from_features(_rows(9) * 1000)  # consistent sums of invented rows
    exact = pool_moments(honest, robust=False)
    robust_mean = pool_moments([*honest, liar], robust=True)
    summed_mean = pool_moments([*honest, liar], robust=False)
    truth = exact.total / exact.n
    assert np.abs(robust_mean.total / robust_mean.n - truth).max() < 0.2
    assert np.abs(summed_mean.total / summed_mean.n - truth).max() > 100


# --- teacher replies


def _teacher_reply(node: int, arrays: dict[str, np.ndarray] | None, examples: int = 10) -> Message:
    content = RecordDict(
        {
            "arrays": ArrayRecord({"w": Array(np.zeros(1, dtype=np.float32))}),
            METRICS_KEY: MetricRecord(
                {"num-examples": examples, "teacher-version": 1, "partition-id": node, "steps": 1}
            ),
        }
    )
    if arrays is not None:
        content[TEACHER_KEY] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
    return _message(content, node, MessageType.TRAIN)


def _adapters(value: float, shape: tuple[int, ...] = (3,)) -> dict[str, np.ndarray]:
    return {"lora_A": np.full(shape, value, dtype=np.float32), "head": np.ones(2, np.float32)}


def test_hostile_teacher_replies_are_refused_and_a_scaled_one_is_bounded(
    as_superlink: None,
) -> None:
    honest = [_teacher_reply(n, _adapters(1.0 + 0.1 * n)) for n in range(4)]
    nan = _teacher_reply(4, _adapters(np.nan))
    wide = _teacher_reply(5, _adapters(1.0, (4,)))
    half = _adapters(1.0)
    half["lora_A"] = half["lora_A"].astype(np.float16)
    scaled = _teacher_reply(6, _adapters(100.0))
    refused_by_student = _teacher_reply(7, _adapters(-50.0))
    replies = [*honest, nan, wide, _teacher_reply(8, half), scaled, refused_by_student]
    federation = TeacherFederation(rounds=2)
    out = federation.collect(
        1,
        replies,
        [],
        {n: n for n in range(9)},
        lambda reply: "bad" if reply.metadata.src_node_id == 7 else None,
    )
    reasons = {f["partition-id"]: f["reason"] for f in out.failures}
    assert set(reasons) == {4, 5, 8}
    assert "non-finite" in reasons[4] and "float32[3] expected" in reasons[5]
    assert "float16[3]" in reasons[8]
    assert all(r.startswith("rejected: ") for r in reasons.values())
    assert [int(r.metadata.src_node_id) for r in out.kept] == [0, 1, 2, 3, 6, 7]
    assert federation.global_arrays is not None
    # The honest mean is 1.15; a plain mean with the scaled reply would be ~20.9.
    pooled = float(federation.global_arrays["lora_A"][0])
    assert 1.0 < pooled < 1.6, pooled
    # With aggregation=median the pool is the coordinate-wise median.
    median = TeacherFederation(rounds=2, aggregation="median")
    again = [_teacher_reply(n, _adapters(1.0 + 0.1 * n)) for n in range(4)]
    median.collect(1, [*again, _teacher_reply(6, _adapters(100.0))], [], {n: n for n in range(9)})
    assert median.global_arrays is not None
    assert float(median.global_arrays["lora_A"][0]) == pytest.approx(1.2)


def test_the_federated_rounds_end_early_when_fine_tuning_lowered_no_validation_loss(
    as_superlink: None,
) -> None:
    """teacher-fedavg-early-end: a round in which every client kept its start (or ended
    above it) makes the average final; one client that improved keeps the rounds going."""

    def round_of(losses: list[tuple[float, float]], early_end: bool = True) -> int:
        federation = TeacherFederation(rounds=3, early_end=early_end)
        replies = []
        for node, (after, before) in enumerate(losses):
            reply = _teacher_reply(node, _adapters(1.0))
            metrics = reply.content.metric_records[METRICS_KEY]
            metrics["teacher-val-loss"], metrics["teacher-untrained-val-loss"] = after, before
            replies.append(reply)
        collected = federation.collect(1, replies, [], {n: n for n in range(len(losses))})
        assert collected.final_after == (1 if federation.rounds == 1 else None)  # told once
        return federation.rounds

    assert round_of([(0.6, 0.6), (0.7, 0.65)]) == 1  # kept the start; worse
    assert round_of([(0.6, 0.6), (0.6, 0.65)]) == 3  # one client improved
    assert round_of([(0.6, 0.6), (0.7, 0.65)], early_end=False) == 3


# --- in a real federation: bad statistics at set-up


class HostileStats:
    """The real ClientApp with two hostile nodes. Partition 2 scales its moment sums by 100
    when first asked; asked again (as an unknown node, each round), it sends its real
    moments but claims partition 0. Partition 3 sends moments of a wider embedding."""

    def __init__(self) -> None:
        self.asked = 0

    def __call__(self, message: Message, context: Context) -> Message:
        reply = client_app(message, context)
        partition = int(context.node_config["partition-id"])
        if message.metadata.message_type != "query.stats" or reply.has_error():
            return reply
        record = reply.content.array_records[STATS_KEY]
        moments = {k: a.numpy() for k, a in record.items()}
        if partition == 2:
            self.asked += 1
            if self.asked == 1:
                moments = {k: v * (1 if k == "n" else 100) for k, v in moments.items()}
            else:
                reply.content.metric_records[METRICS_KEY]["partition-id"] = 0
        if partition == 3:
            wide = np.pad(moments["outer"], ((0, 1), (0, 1)))
            moments = {**moments, "total": np.pad(moments["total"], (0, 1)), "outer": wide}
        reply.content.array_records[STATS_KEY] = ArrayRecord(
            {k: Array(np.ascontiguousarray(v)) for k, v in moments.items()}
        )
        return reply


def test_hostile_statistics_are_refused_and_the_honest_node_keeps_its_partition(
    tmp_path: Path, shared_data: Path
) -> None:
    config: dict[str, Any] = {
        "strategy": "fedavg",
        "task": "tweeteval",
        "data-dir": str(shared_data / "tweeteval_sentiment"),
        "results-dir": str(tmp_path),
        "num-server-rounds": 1,
        "min-nodes": 4,
        "max-train-rows": 320,
        "server-val-rows": 80,
        "test-rows": 80,
        "teacher-epochs": 0.5,
        "local-steps": 2,
        "seed": 5,
    }
    run_in_process(config, 4, client_app=HostileStats())  # type: ignore[arg-type]
    (run_dir,) = tmp_path.iterdir()
    set_up, round_1 = read_rounds(run_dir / "rounds.jsonl")
    assert set_up["participants"] == [0, 1]
    reasons = sorted(f["reason"] for f in set_up["failures"])
    assert len(reasons) == 2 and all(r.startswith("rejected: ") for r in reasons)
    assert "moments of 385 features, the embedding has 384" in reasons[0]
    assert "no real rows have them" in reasons[1]
    # Round 1: partition 2's node claims partition 0, whose node is connected: refused,
    # and partition 0's own node trains as before.
    claims = [f for f in round_1["failures"] if "already served by node" in f["reason"]]
    assert len(claims) == 1 and "partition 0 is already served" in claims[0]["reason"]
    assert sorted(c["partition-id"] for c in round_1["clients"]) == [0, 1]
    assert len(round_1["failures"]) == 2
