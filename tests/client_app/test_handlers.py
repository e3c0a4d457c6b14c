"""The ClientApp's handlers called directly, as a SuperNode would call them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

from client_app.app import app
from client_app.state import NodeState
from config import ConfigError
from harness.inprocess import task_identity
from quantum.student import make_student


@pytest.fixture(autouse=True)
def as_superlink() -> Iterator[None]:
    with task_identity():
        yield


def _context(shared_data: Path, node_config: dict | None = None) -> Context:
    run_config = {
        "task": "tweeteval",
        "data-dir": str(shared_data / "tweeteval_sentiment"),
        "max-train-rows": 120,
    }
    return Context(
        run_id=1,
        node_id=7,
        state=RecordDict(),
        run_config=run_config,
        node_config={"partition-id": 1, "num-partitions": 2}
        if node_config is None
        else node_config,
    )


def _ask(message_type: str, content: RecordDict, context: Context) -> Message:
    message = Message(content, dst_node_id=7, message_type=message_type)
    message.metadata.__dict__["_message_id"] = "m1"
    reply = app(message, context)
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    return reply


def test_stats_then_evaluate(shared_data: Path) -> None:
    context = _context(shared_data)
    reply = _ask("query.stats", RecordDict({"config": ConfigRecord({})}), context)
    stats = reply.content.array_records["stats"]
    metrics = reply.content.metric_records["metrics"]
    rows = int(stats["n"].numpy()[0])
    assert metrics["partition-id"] == 1 and metrics["num-examples"] == rows == 48  # 60 * 0.8
    assert stats["total"].numpy().shape == (384,) and stats["outer"].numpy().shape == (384, 384)
    assert NodeState(context.state).arrays("features")  # kept for later rounds

    student = make_student(384, 3, trainable_projection=True)
    arrays = ArrayRecord({k: Array(v) for k, v in student.get_arrays().items()})
    evaluation = _ask("evaluate", RecordDict({"arrays": arrays}), context)
    result = evaluation.content.metric_records["metrics"]
    assert result["num-examples"] == 12
    assert 0.0 <= result["student-val-accuracy"] <= 1.0 and result["student-val-loss"] > 0


def test_missing_partition_id_is_a_clear_error(shared_data: Path) -> None:
    from client_app.node import ClientNode

    with pytest.raises(ConfigError, match="--node-config"):
        ClientNode(_context(shared_data, node_config={}))
