"""A whole federation in process: real data, real LoRA teachers, real circuits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server_app.inprocess import run_in_process
from server_app.results import read_rounds


def _run_dir(results: Path) -> Path:
    (run_dir,) = results.iterdir()
    return run_dir


@pytest.fixture(scope="module")
def tweeteval_run(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    results = tmp_path_factory.mktemp("results")
    run_in_process(
        {
            "data-dir": str(shared_data / "tweeteval_sentiment"),
            "results-dir": str(results),
            "num-server-rounds": 2,
            "min-nodes": 3,
            "max-train-rows": 900,
            "server-eval-rows": 400,
            "teacher-epochs": 2.0,
            "local-steps": 40,
            "seed": 7,
        },
        num_nodes=3,
    )
    return _run_dir(results)


def test_results_directory_is_complete(tweeteval_run: Path) -> None:
    for name in ("config.json", "rounds.jsonl", "summary.json", "accuracy.png", "loss.png"):
        assert (tweeteval_run / name).stat().st_size > 0, name
    rounds = read_rounds(tweeteval_run / "rounds.jsonl")
    assert [r["round"] for r in rounds] == [0, 1, 2]
    for record in rounds[1:]:
        assert record["participants"] == [0, 1, 2]
        assert {c["partition-id"] for c in record["clients"]} == {0, 1, 2}
        assert all(c["steps"] == 40 for c in record["clients"])
        assert record["bytes-sent"] > 0 and record["bytes-received"] > 0
    summary = json.loads((tweeteval_run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds"] == 2
    assert summary["total-client-steps"] == 3 * 2 * 40


def test_student_learns_beyond_majority(tweeteval_run: Path) -> None:
    summary = json.loads((tweeteval_run / "summary.json").read_text())
    assert summary["final-global"]["accuracy"] > summary["server-majority-rate"]
    assert summary["final-global"]["loss"] < summary["initial-global"]["loss"]


def test_every_teacher_was_fine_tuned(tweeteval_run: Path) -> None:
    rounds = read_rounds(tweeteval_run / "rounds.jsonl")
    first = rounds[1]["clients"]
    assert len(first) == 3
    for client in first:
        assert client["teacher-val-loss"] < client["teacher-untrained-val-loss"]
        assert client["teacher-seconds"] > 0
    # The teacher is cached: round 2 does not fine-tune again.
    assert all(c["teacher-seconds"] == 0 for c in rounds[2]["clients"])
