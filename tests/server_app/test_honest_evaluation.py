"""Honest figures: decisions read the validation split only; any number of classes runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from roundoff import approx_floats

from harness.inprocess import InProcessGrid, run_in_process
from server_app.results import read_rounds
from server_app.setup import best_val_round
from tasks.synthetic import write_keyword_task

GUIDED = {
    "task": "tweeteval",
    "strategy": "llm-guided",
    "selection": "closest",  # ranks clients by the server's loss
    "fraction-train": 0.67,
    "steps-policy": "adaptive",
    "termination": "plateau",  # stops on the server's loss
    "stop-patience": 1,
    "stop-min-delta": 0.5,  # the plateau fires early, so stopping is exercised too
    "stop-min-rounds": 2,
    "num-server-rounds": 4,
    "min-nodes": 3,
    "max-train-rows": 300,
    "server-val-rows": 150,
    "test-rows": 200,
    "test-every-round": True,
    "teacher-epochs": 1.0,
    "local-steps": 10,
    "seed": 5,
}


def _only_run(results: Path) -> Path:
    (run_dir,) = results.iterdir()
    return run_dir


def _decisions_and_validation(record: dict[str, Any]) -> dict[str, Any]:
    """Everything a round decided and every validation figure.

    Left out: timings, and what the second run took from the disk cache instead of
    computing (teacher steps and cache hits).
    """
    work = ("node-id", "teacher-steps", "teacher-cache-hits")
    clients = [
        {k: v for k, v in c.items() if "seconds" not in k and k not in work}
        for c in record["clients"]
    ]
    kept = ("participants", "budgets", "budget-reasons", "selection-reason", "val", "round")
    return {**{k: record.get(k) for k in kept}, "clients": clients}


def test_permuting_the_test_labels_changes_no_decision_and_no_validation_figure(
    tmp_path: Path, shared_data: Path
) -> None:
    original = tmp_path / "original"
    shutil.copytree(shared_data / "tweeteval_sentiment", original)
    permuted = tmp_path / "permuted"
    shutil.copytree(original, permuted)
    labels = (permuted / "test_labels.txt").read_text().split()
    shuffled = np.random.default_rng(0).permutation(labels)
    (permuted / "test_labels.txt").write_text("".join(f"{v}\n" for v in shuffled))
    runs = {}
    grid: InProcessGrid | None = None
    for name, folder in (("original", original), ("permuted", permuted)):
        results = tmp_path / f"results-{name}"
        grid = run_in_process(
            {**GUIDED, "data-dir": str(folder), "results-dir": str(results)}, 3, grid=grid
        )
        runs[name] = _only_run(results)
    a, b = (read_rounds(runs[n] / "rounds.jsonl") for n in ("original", "permuted"))
    assert [r["round"] for r in a] == [r["round"] for r in b]
    # Validation figures recomputed from the same inputs agree to round-off (see roundoff.py).
    decided = [_decisions_and_validation(r) for r in b]
    assert [_decisions_and_validation(r) for r in a] == approx_floats(decided)
    # The test rows were scored every round (for the plots), and they did change:
    assert any(x["test"] != y["test"] for x, y in zip(a, b, strict=True))
    summaries = [json.loads((runs[n] / "summary.json").read_text()) for n in runs]
    assert summaries[0]["stop-reason"] == summaries[1]["stop-reason"]
    assert summaries[0]["final-val"] == approx_floats(summaries[1]["final-val"])
    assert summaries[0]["final-test"] != summaries[1]["final-test"]
    assert summaries[0]["val-rows"] == 150 and summaries[0]["test-rows"] == 200


@pytest.mark.parametrize("classes", [2, 3, 4])
def test_a_task_of_any_number_of_classes_runs(tmp_path: Path, classes: int) -> None:
    folder = write_keyword_task(tmp_path / "data", classes, rows=240, seed=classes)
    results = tmp_path / "results"
    run_in_process(
        {
            "strategy": "fedavg",  # teacher-epochs as set, not validated chunks
            "task": "tweeteval",
            "data-dir": str(folder),
            "results-dir": str(results),
            "num-server-rounds": 2,
            "min-nodes": 2,
            "n-qubits": max(4, classes),
            "teacher-epochs": 4.0,
            "local-steps": 30,
            "server-val-rows": 0,
            "test-rows": 0,
            "seed": 1,
        },
        num_nodes=2,
    )
    run_dir = _only_run(results)
    with np.load(run_dir / "student.npz") as student:
        assert student["scale"].shape == (classes,) and student["bias"].shape == (classes,)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["val-rows"] == 60 and summary["test-rows"] == 60
    first = read_rounds(run_dir / "rounds.jsonl")[1]["clients"]
    # The K-way teachers learned their keywords: above chance on local validation rows
    # (and, kept by teacher-keep-best, never below the probe they started from).
    for client in first:
        assert client["teacher-val-loss"] <= client["teacher-untrained-val-loss"]
        assert client["teacher-val-accuracy"] > 1 / classes + 0.1, client


def test_the_best_round_is_the_best_validation_accuracy_ties_by_loss_then_earliest() -> None:
    def record(round_: int, accuracy: float, loss: float) -> dict:
        return {"round": round_, "val": {"accuracy": accuracy, "loss": loss}}

    history = [record(0, 0.30, 2.0), record(1, 0.52, 1.10), record(2, 0.48, 0.90)]
    assert best_val_round(history) == 1  # accuracy decides, not the lower loss of round 2
    history.append(record(3, 0.52, 1.05))
    assert best_val_round(history) == 3  # equal accuracy: the lower loss
    history.append(record(4, 0.52, 1.05))
    assert best_val_round(history) == 3  # equal in both: the earlier round
