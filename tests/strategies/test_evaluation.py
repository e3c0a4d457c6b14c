"""Flower's evaluate phase for the student, with fake replies (no Ray): who is asked,
what counts, and the weighted figures."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fakes import Grid, reply
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)

from config.messages import CONFIG_KEY, METRICS_KEY, STUDENT_KEY
from harness.inprocess import task_identity
from strategies import StudentFedAvg
from strategies.memory import ClientMemory
from strategies.replies import REJECTED

PARTITIONS = {10: 0, 11: 1, 12: 2, 13: 3}


@pytest.fixture(autouse=True)
def as_superlink() -> Iterator[None]:
    with task_identity():
        yield


def _strategy(fraction_evaluate: float) -> StudentFedAvg:
    strategy = StudentFedAvg(
        local_steps=5,
        student_lr=0.05,
        projection_lr=0.02,
        temperature=2.0,
        alpha=0.5,
        fraction_evaluate=fraction_evaluate,
        seed=3,
    )
    strategy.bind_nodes(PARTITIONS)
    strategy.declare_clients(
        [{"partition-id": p, "num-examples": 40, "val-examples": 10} for p in PARTITIONS.values()]
    )
    return strategy


def _ask(strategy: StudentFedAvg, server_round: int = 1) -> list[Message]:
    arrays = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    grid = Grid(list(PARTITIONS))
    return list(strategy.configure_evaluate(server_round, arrays, ConfigRecord({}), grid))


def _reply(node: int, metrics: dict[str, Any]) -> Message:
    content = RecordDict({METRICS_KEY: MetricRecord(metrics)})
    return reply(content, node, MessageType.EVALUATE, reply_to="")


def _figures(examples: int, loss: float, accuracy: float) -> dict[str, Any]:
    return {
        "num-examples": examples,
        "student-val-loss": loss,
        "student-val-accuracy": accuracy,
    }


def test_off_by_default_and_asks_a_seeded_share_of_the_clients() -> None:
    assert _ask(_strategy(0.0)) == []
    strategy = _strategy(0.5)
    messages = _ask(strategy, server_round=2)
    assert len(messages) == 2
    assert all(m.metadata.message_type == MessageType.EVALUATE for m in messages)
    for message in messages:
        assert set(message.content.array_records[STUDENT_KEY]) == {"w"}
        assert message.content.config_records[CONFIG_KEY]["server-round"] == 2
    asked = [m.metadata.dst_node_id for m in messages]
    assert asked == [m.metadata.dst_node_id for m in _ask(_strategy(0.5), server_round=2)]
    rounds = {tuple(m.metadata.dst_node_id for m in _ask(strategy, r)) for r in range(1, 9)}
    assert len(rounds) > 1  # a new draw each round
    assert len(_ask(_strategy(0.01))) == 1  # at least one client


def test_the_mean_is_weighted_by_examples_and_a_bad_reply_counts_nothing() -> None:
    strategy = _strategy(1.0)
    sent = _ask(strategy)
    replies = [
        _reply(10, _figures(10, 1.0, 0.5)),
        _reply(11, _figures(5, 0.4, 0.8)),
        _reply(12, _figures(10, 0.2, 2.0)),  # accuracy outside [0, 1]
        _reply(13, _figures(11, 0.2, 0.9)),  # more rows than the node declared (10)
    ]
    metrics = strategy.aggregate_evaluate(1, replies)  # Flower's phase
    assert metrics is not None
    assert metrics["loss"] == pytest.approx((10 * 1.0 + 5 * 0.4) / 15)
    assert metrics["accuracy"] == pytest.approx((10 * 0.5 + 5 * 0.8) / 15)
    record = strategy.aggregate_evaluation(1, sent, replies)  # the round flow's
    assert (record["loss"], record["accuracy"]) == (metrics["loss"], metrics["accuracy"])
    assert record["asked"] == [0, 1, 2, 3] and record["examples"] == 15
    assert sorted(record["clients"]) == ["0", "1"]
    failed = {f["partition-id"]: f for f in record["failures"]}
    assert sorted(failed) == [2, 3] and all(f["code"] == REJECTED for f in failed.values())
    assert "outside [0, 1]" in failed[2]["reason"]
    assert "outside 1..10" in failed[3]["reason"]


def test_no_usable_reply_gives_no_figures() -> None:
    strategy = _strategy(1.0)
    sent = _ask(strategy)
    assert strategy.aggregate_evaluate(1, [_reply(10, {"num-examples": 3})]) is None
    record = strategy.aggregate_evaluation(1, sent, [_reply(10, {"num-examples": 3})])
    assert record["clients"] == {} and len(record["failures"]) == 1
    assert "student-val-loss" in record["failures"][0]["reason"]


def test_declared_validation_rows_survive_the_state_round_trip() -> None:
    strategy = _strategy(1.0)
    restored = _strategy(1.0)
    restored.declared_val_examples = {}
    restored.load_state(strategy.state())
    assert restored.declared_val_examples == {0: 10, 1: 10, 2: 10, 3: 10}


def test_an_accepted_figure_is_the_newest_the_strategy_knows_of_that_clients_rows() -> None:
    """A client that trained before gets its figure in its memory (the gap selection reads
    it); a client never measured, and a refused reply, leave nothing."""
    strategy = _strategy(1.0)
    strategy.clients[0] = ClientMemory(budget=5, rounds=1, last_round=2, teacher_val_loss=0.7)
    strategy.clients[2] = ClientMemory(budget=5, rounds=1, last_round=2, teacher_val_loss=0.7)
    sent = _ask(strategy, server_round=3)
    replies = [
        _reply(10, _figures(10, 0.9, 0.6)),
        _reply(11, _figures(5, 0.4, 0.8)),  # partition 1 never trained: no memory to update
        _reply(12, _figures(10, 0.2, 2.0)),  # refused: accuracy outside [0, 1]
    ]
    strategy.aggregate_evaluation(3, sent, replies)
    assert (strategy.clients[0].evaluated_loss, strategy.clients[0].evaluated_round) == (0.9, 3)
    assert strategy.clients[0].global_gap == pytest.approx(0.2)
    assert math.isnan(strategy.clients[2].evaluated_loss) and 1 not in strategy.clients
