"""The ClientApp's handlers called directly, as a SuperNode would call them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
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


def test_a_node_trains_its_teacher_budget_and_no_more(shared_data: Path) -> None:
    """48 train rows, batch 16: 1 epoch is 3 steps. A node that lost its state trains
    nothing without a restore budget, and with one rebuilds the same teacher."""
    from client_app.node import ClientNode

    def context() -> Context:
        base = _context(shared_data)
        run_config = {**dict(base.run_config), "teacher-cache": False, "teacher-epochs": 1.0}
        return Context(
            run_id=1,
            node_id=7,
            state=RecordDict(),
            run_config=run_config,
            node_config=base.node_config,
        )

    node = ClientNode(context())
    first = node.teacher(1.0)
    assert (first.steps_this_round, first.restore_steps, first.total_steps) == (3, 0, 3)
    kept = node.teacher(0.0, restore_steps=3)  # it holds the 3 steps: nothing to restore
    assert (kept.steps_this_round, kept.restore_steps, kept.total_steps) == (0, 0, 3)
    assert kept.seconds_this_round == 0.0

    restarted = context()  # the same node after a restart: its state is gone
    lost = ClientNode(restarted)
    with pytest.raises(RuntimeError, match="holds no teacher"):
        lost.teacher(0.0)
    assert not NodeState(restarted.state).arrays("teacher")  # refused before any training
    rebuilt = lost.teacher(0.0, restore_steps=3)
    assert (rebuilt.steps_this_round, rebuilt.restore_steps, rebuilt.total_steps) == (0, 3, 3)
    np.testing.assert_allclose(rebuilt.val_logits, kept.val_logits, rtol=0, atol=1e-5)
    more = lost.teacher(0.5)  # ceil(0.5 x 48 / 16) = 2 more steps, on top of the 3
    assert (more.steps_this_round, more.restore_steps, more.total_steps) == (2, 0, 5)
    # the chunks' ends, typed, in the node's state: the cache key of the teacher held
    assert node.teacher_schedule == [3] and lost.teacher_schedule == [3, 5]
    assert NodeState(restarted.state).text["teacher-schedule"] == [3, 5]


def test_a_node_that_holds_the_final_average_keeps_its_teacher(shared_data: Path) -> None:
    """teacher-federation=fedavg: when the final average is exactly this node's adapters
    (every client kept its start), the node keeps its teacher and computes nothing; any
    other average is loaded and scored."""
    from client_app.node import ClientNode

    node = ClientNode(_context(shared_data))
    first, arrays = node.federated_teacher(None, 1, final=False, epochs=0.0)
    assert arrays is not None and first.version == 1
    kept, none = node.federated_teacher(arrays, 2, final=True, epochs=0.0)
    assert none is None and kept.version == 2 and kept.seconds_this_round == 0.0
    assert np.array_equal(kept.train_logits, first.train_logits)
    moved = {k: v + np.float32(0.01) for k, v in arrays.items()}
    loaded, _ = node.federated_teacher(moved, 2, final=True, epochs=0.0)
    assert loaded.seconds_this_round > 0.0 and not np.array_equal(
        loaded.train_logits, first.train_logits
    )
