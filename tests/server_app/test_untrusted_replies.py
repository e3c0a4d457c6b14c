"""A hostile client in a real in-process federation of 4 nodes: its bad replies are recorded
failures, and the global student is the average of the honest clients' replies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message

from client_app.app import app as client_app
from config.messages import METRICS_KEY, STUDENT_KEY
from harness.inprocess import run_in_process
from server_app.results import read_rounds

HOSTILE = 3  # partition
#: What the hostile client does to its reply in each round, and what the server must say.
ATTACKS = {
    1: ("nan", "has non-finite values"),
    2: ("shape", "was sent"),
    3: ("examples", "the count the node declared before training"),
    4: ("steps", "(the budget sent)"),
}


class Recorder:
    """The real ClientApp; partition 3 tampers with its train replies (see ATTACKS)."""

    def __init__(self) -> None:
        self.rounds: dict[int, int] = {}  # partition -> train messages seen
        self.sent: dict[int, dict[str, np.ndarray]] = {}  # round -> global arrays sent
        self.honest: dict[int, list[tuple[dict[str, np.ndarray], int]]] = {}

    def __call__(self, message: Message, context: Context) -> Message:
        reply = client_app(message, context)
        if message.metadata.message_type != "train" or reply.has_error():
            return reply
        partition = int(context.node_config["partition-id"])
        server_round = self.rounds[partition] = self.rounds.get(partition, 0) + 1
        sent = message.content.array_records[STUDENT_KEY]
        self.sent[server_round] = {k: a.numpy().copy() for k, a in sent.items()}
        arrays = {k: a.numpy().copy() for k, a in reply.content.array_records[STUDENT_KEY].items()}
        metrics = reply.content.metric_records[METRICS_KEY]
        if partition != HOSTILE:
            self.honest.setdefault(server_round, []).append((arrays, int(metrics["num-examples"])))
            return reply
        attack = ATTACKS.get(server_round, ("none", ""))[0]
        first = sorted(arrays)[0]
        if attack == "nan":
            arrays[first] = np.full_like(arrays[first], np.nan)
        elif attack == "shape":
            arrays[first] = np.zeros((*arrays[first].shape, 2), dtype=arrays[first].dtype)
        elif attack == "examples":
            metrics["num-examples"] = int(metrics["num-examples"]) * 10
        elif attack == "steps":
            metrics["steps"] = int(metrics["steps"]) + 10
        reply.content.array_records[STUDENT_KEY] = ArrayRecord(
            {k: Array(v) for k, v in arrays.items()}
        )
        return reply


def test_a_hostile_clients_replies_are_rejected_and_the_honest_average_is_kept(
    tmp_path: Path, shared_data: Path
) -> None:
    recorder = Recorder()
    config: dict[str, Any] = {
        "strategy": "fedavg",
        "task": "tweeteval",
        "data-dir": str(shared_data / "tweeteval_sentiment"),
        "results-dir": str(tmp_path),
        "num-server-rounds": 5,
        "min-nodes": 4,
        "max-train-rows": 480,
        "server-val-rows": 100,
        "test-rows": 100,
        "teacher-epochs": 0.5,
        "local-steps": 5,
        "seed": 3,
    }
    run_in_process(config, num_nodes=4, client_app=recorder)  # type: ignore[arg-type]
    (run_dir,) = tmp_path.iterdir()
    rounds = read_rounds(run_dir / "rounds.jsonl")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds"] == 5
    for server_round, (attack, reason) in ATTACKS.items():
        record = rounds[server_round]
        (failure,) = record["failures"]
        assert failure["partition-id"] == HOSTILE and failure["code"] == -1, attack
        assert failure["reason"].startswith("rejected: ") and reason in failure["reason"], attack
        assert sorted(c["partition-id"] for c in record["clients"]) == [0, 1, 2], attack
        # The global student after this round (sent in the next) is the example-weighted
        # average of the three honest replies, to float32 rounding.
        new = recorder.sent[server_round + 1]
        honest = recorder.honest[server_round]
        weights = np.array([n for _, n in honest], dtype=np.float64)
        for key, value in new.items():
            assert np.isfinite(value).all()
            average = np.average(np.stack([a[key] for a, _ in honest]), axis=0, weights=weights)
            np.testing.assert_allclose(value, average, rtol=1e-5, atol=1e-6, err_msg=attack)
    assert rounds[5]["failures"] == [] and len(rounds[5]["clients"]) == 4  # honest again
