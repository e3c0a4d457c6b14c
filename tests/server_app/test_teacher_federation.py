"""Federated fine-tuning of the teachers' adapters (teacher-federation=fedavg)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fakes import reply
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MetricRecord,
    RecordDict,
)

from client_app.node import ClientNode
from config.messages import TEACHER_FINAL_KEY, TEACHER_KEY, TEACHER_ROUND_KEY, teacher_steps
from harness.inprocess import run_in_process, task_identity
from llm.inference import predict_logits
from llm.probe import head_logits, logit_metrics
from server_app.results import read_rounds
from server_app.teacher_federation import TeacherFederation, average_arrays
from strategies import StudentFedAvg
from tasks.datasets import DataSource
from tasks.splits import server_datasets


@pytest.fixture()
def as_superlink() -> Iterator[None]:
    with task_identity():
        yield


def test_average_by_hand() -> None:
    out = average_arrays(
        [
            ({"lora_A": np.array([1.0, 2.0]), "head": np.array([[0.0]])}, 1.0),
            ({"lora_A": np.array([4.0, 8.0]), "head": np.array([[4.0]])}, 3.0),
        ]
    )
    # (1 * [1, 2] + 3 * [4, 8]) / 4 = [3.25, 6.5]; (1 * 0 + 3 * 4) / 4 = 3
    np.testing.assert_array_equal(out["lora_A"], np.array([3.25, 6.5], dtype=np.float32))
    np.testing.assert_array_equal(out["head"], np.array([[3.0]], dtype=np.float32))
    with pytest.raises(ValueError, match="differ at"):
        average_arrays([({"a": np.zeros(2)}, 1.0), ({"a": np.zeros(3)}, 1.0)])


PARTITIONS = {10: 0, 11: 1, 12: 2}


class _Grid:
    def __init__(self, nodes: list[int]) -> None:
        self.nodes = nodes

    def get_node_ids(self) -> list[int]:
        return self.nodes


def _reply(instruction: Message, value: float | None, examples: int, version: int) -> Message:
    content = RecordDict(
        {
            "arrays": ArrayRecord({"w": Array(np.zeros(1, dtype=np.float32))}),
            "metrics": MetricRecord(
                {
                    "num-examples": examples,
                    "teacher-version": version,
                    "partition-id": PARTITIONS[instruction.metadata.dst_node_id],
                    "steps": 1,
                }
            ),
        }
    )
    if value is not None:
        content[TEACHER_KEY] = ArrayRecord({"a": Array(np.full(2, value, dtype=np.float32))})
    return reply(
        content, instruction.metadata.dst_node_id, reply_to=instruction.metadata.message_id
    )


def _send(
    strategy: StudentFedAvg, federation: TeacherFederation, rnd: int, nodes: list[int]
) -> list[Message]:
    arrays = ArrayRecord({"w": Array(np.zeros(1, dtype=np.float32))})
    messages = list(strategy.configure_train(rnd, arrays, ConfigRecord({}), _Grid(nodes)))
    federation.attach(rnd, messages, strategy.partitions)
    for m in messages:
        m.metadata.__dict__["_message_id"] = f"{rnd}-{m.metadata.dst_node_id}"
    return messages


def test_what_the_server_sends_each_round(as_superlink: None) -> None:
    strategy = StudentFedAvg(
        local_steps=1, student_lr=0.1, projection_lr=0.1, temperature=1.0, alpha=0.5
    )
    strategy.bind_nodes(PARTITIONS)
    federation = TeacherFederation(rounds=2)
    # Round 1: train from the common seeded start: no arrays yet.
    sent = _send(strategy, federation, 1, [10, 11])
    assert [m.content.config_records["config"][TEACHER_ROUND_KEY] for m in sent] == [1, 1]
    assert all(TEACHER_KEY not in m.content.array_records for m in sent)
    federation.collect(
        1, [_reply(sent[0], 1.0, 1, 1), _reply(sent[1], 5.0, 3, 1)], sent, PARTITIONS
    )
    np.testing.assert_array_equal(federation.global_arrays["a"], [4.0, 4.0])  # (1 + 15) / 4
    # Round 2 (<= K): the average goes out to be trained further.
    sent = _send(strategy, federation, 2, [10, 11])
    assert all(m.content.array_records[TEACHER_KEY]["a"].numpy()[0] == 4.0 for m in sent)
    federation.collect(
        2, [_reply(sent[0], 2.0, 1, 2), _reply(sent[1], 2.0, 1, 2)], sent, PARTITIONS
    )
    # Round 3: the final average, once per client; client 2 joins now and gets it too.
    sent = _send(strategy, federation, 3, [10, 12])
    configs = [m.content.config_records["config"] for m in sent]
    assert [c[TEACHER_ROUND_KEY] for c in configs] == [3, 3]
    assert all(c[TEACHER_FINAL_KEY] for c in configs)
    federation.collect(
        3, [_reply(sent[0], None, 1, 3), _reply(sent[1], None, 1, 3)], sent, PARTITIONS
    )
    # Round 4: client 0 already has it (nothing sent); client 1 had only round 2's.
    sent = _send(strategy, federation, 4, [10, 11])
    assert [m.content.config_records["config"][TEACHER_ROUND_KEY] for m in sent] == [0, 3]
    assert [TEACHER_KEY in m.content.array_records for m in sent] == [False, True]


def _small_fedavg(results: Path, shared_data: Path) -> dict[str, object]:
    """Two TweetEval clients of 48 train rows, federated adapters, no disk cache."""
    return {
        "strategy": "fedavg",  # the llm-guided tests below name it
        "task": "tweeteval",
        "data-dir": str(shared_data / "tweeteval_sentiment"),
        "results-dir": str(results),
        "min-nodes": 2,
        "max-train-rows": 120,
        "server-val-rows": 60,
        "test-rows": 60,
        "teacher-epochs": 1.0,
        "local-steps": 3,
        "teacher-federation": "fedavg",
        "teacher-cache": False,
    }


def test_a_two_round_federation_of_adapters(
    tmp_path: Path, shared_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app_logger = logging.getLogger("server_app.app")
    app_logger.addHandler(caplog.handler)  # seen even where a run's logging set-up
    try:  # stops propagation
        grid = run_in_process(
            {
                **_small_fedavg(tmp_path, shared_data),
                "num-server-rounds": 2,
                "teacher-fedavg-rounds": 1,
            },
            num_nodes=2,
        )
    finally:
        app_logger.removeHandler(caplog.handler)
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds"] == 2
    first, second = read_rounds(run_dir / "rounds.jsonl")[1:]
    # Round 1: each client was sent the pooled probe head alone (3 classes x 384 weights
    # and 3 biases, float32), fine-tuned fresh adapters on it and sent adapters and head.
    head_bytes = 2 * (3 * 384 + 3) * 4
    assert head_bytes <= first["teacher-bytes-sent"] < head_bytes + 1024
    assert first["teacher-bytes-received"] > 10 * first["teacher-bytes-sent"]
    assert all(c["teacher-version"] == 1 and c["teacher-seconds"] > 0 for c in first["clients"])
    # Round 2: the average went out (as many bytes as one client's arrays, to each of 2)...
    assert second["teacher-bytes-sent"] == first["teacher-bytes-received"]
    assert second["teacher-bytes-received"] == 0
    # ...and both clients now distil from the same global teacher (loaded, not trained).
    for client in second["clients"]:
        assert client["teacher-version"] == 2 and client["teacher-steps"] == 0
    # The student's bytes are counted apart from the adapters'.
    assert second["bytes-sent"] < second["teacher-bytes-sent"]
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    assert state["teacher-federation"]["versions"]
    with np.load(run_dir / "checkpoint" / "student.npz") as arrays:
        assert any(name.startswith("teacher:") for name in arrays.files)
    # The summary and the final line give the global teacher's test accuracy, scored by
    # the server; each client, which loaded the same final average, scores it alike.
    teacher = summary["teacher"]
    node = ClientNode(next(iter(grid.contexts.values())))
    _, test_rows = server_datasets(
        DataSource.from_config(node.config.data), node.config.data, node.config.federation.seed
    )
    model, tokenizer = node.teacher_model()
    cfg = node.config.teacher
    logits = predict_logits(model, tokenizer, test_rows.texts, cfg.max_length, 8)
    assert teacher["test-accuracy"] == pytest.approx(logit_metrics(logits, test_rows.labels)[1])
    assert 0.0 <= teacher["val-accuracy"] <= 1.0 and teacher["federation"] == "fedavg"
    assert set(teacher["per-client"]) == {"0", "1"}
    assert all(0.0 <= c["probe-val-accuracy"] <= 1.0 for c in teacher["per-client"].values())
    final_line = next(r.getMessage() for r in caplog.records if "after 2 rounds" in r.getMessage())
    assert f"federated teacher {teacher['test-accuracy']:.3f}" in final_line


def test_federated_teachers_train_the_budget_the_strategy_sent(
    tmp_path: Path, shared_data: Path
) -> None:
    """llm-guided with federated adapters and teacher-max-steps: each federated round's
    teacher budget is what the clients ran, the cap counts every chunk, and nothing is
    trained once the global teacher is final."""
    run_in_process(
        {
            **_small_fedavg(tmp_path, shared_data),
            "num-server-rounds": 3,
            "strategy": "llm-guided",
            "teacher-policy": "once",  # teacher-epochs in each federated round, not judged
            "selection": "all",
            "steps-policy": "fixed",
            "termination": "max-rounds",
            "teacher-fedavg-rounds": 2,
            "teacher-max-steps": 4,  # 1 epoch of 48 rows is 3 steps: round 2 gets 1 more
        },
        num_nodes=2,
    )
    (run_dir,) = tmp_path.iterdir()
    rounds = read_rounds(run_dir / "rounds.jsonl")[1:]
    assert [r["failures"] for r in rounds] == [[], [], []]
    steps = {}
    for record in rounds:
        for client in record["clients"]:
            part, rows = str(client["partition-id"]), client["num-examples"]
            assert rows == 48
            budget = teacher_steps(record["teacher-budgets"][part], rows, 16)
            assert client["teacher-steps"] == budget
            steps.setdefault(part, []).append(client["teacher-steps"])
            assert client["teacher-total-steps"] == sum(steps[part])
    assert steps == {"0": [3, 1, 0], "1": [3, 1, 0]}
    assert all("capped at 4 steps" in r for r in rounds[1]["teacher-reasons"].values())
    assert set(rounds[2]["teacher-reasons"].values()) == {"the federated teacher is final"}


def test_the_validated_teacher_keeps_the_pooled_probe_when_fine_tuning_does_not_beat_it(
    tmp_path: Path, shared_data: Path
) -> None:
    """teacher-policy=validated with a bar no average can clear (teacher-min-delta of 10
    nats): round 1's average is judged on the server's validation rows and not kept, the
    federation ends, and every client distils from the pooled probe, its logits computed
    from the embeddings it holds."""
    grid = run_in_process(
        {
            **_small_fedavg(tmp_path, shared_data),
            "num-server-rounds": 3,
            "strategy": "llm-guided",
            "selection": "all",
            "steps-policy": "fixed",
            "termination": "max-rounds",
            "teacher-fedavg-rounds": 2,
            "teacher-policy": "validated",
            "teacher-chunk-epochs": 0.5,
            "teacher-min-delta": 10.0,
        },
        num_nodes=2,
    )
    (run_dir,) = tmp_path.iterdir()
    zero, first, second, third = read_rounds(run_dir / "rounds.jsonl")
    assert zero["teacher-val"]["teacher-round"] == 0 and zero["teacher-val"]["kept"]
    judged = first["teacher-val"]
    assert judged["teacher-round"] == 1 and not judged["kept"]
    assert judged["final-teacher-round"] == 0
    assert all(c["teacher-steps"] == 2 for c in first["clients"])  # 0.5 epochs of 48 rows
    # Round 2: the final teacher is the start, the pooled probe head alone (3 x 384
    # weights and 3 biases, float32, to each of 2 clients); nothing is trained.
    head_bytes = 2 * (3 * 384 + 3) * 4
    assert head_bytes <= second["teacher-bytes-sent"] < head_bytes + 1024
    assert set(second["teacher-reasons"].values()) == {"the federated teacher is final"}
    for client in second["clients"]:
        assert client["teacher-version"] == 2 and client["teacher-steps"] == 0
    assert third["teacher-bytes-sent"] == 0 and "teacher-val" not in third
    # Each client's teacher is the probe: its logits are the head's on its own embeddings,
    # and the summary's global teacher is the start the server judged in round 0.
    for context in grid.contexts.values():
        node = ClientNode(context)
        head = node.store.arrays("adapters")
        assert set(head) == {"classifier.weight", "classifier.bias"}
        _, val_x = node.features()
        logits = node.store.arrays("teacher")["val"]
        assert np.allclose(logits, head_logits(val_x, head), atol=1e-6)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["teacher"]["val-accuracy"] == pytest.approx(zero["teacher-val"]["accuracy"])
