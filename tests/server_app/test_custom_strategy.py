"""A user's strategy named as ``module:Class`` in the run config is the one that runs."""

from __future__ import annotations

import json
from pathlib import Path

from harness.inprocess import run_in_process
from server_app.results import read_rounds
from strategies import StudentFedAvg


class GrowingBudget(StudentFedAvg):
    """Budgets grow with the round; only client (partition) 0 trains after round 1."""

    def select_clients(self, server_round: int, partitions: list[int]) -> list[int]:
        return sorted(partitions) if server_round == 1 else sorted(partitions)[:1]

    def step_budget(self, server_round: int, partition: int) -> tuple[int, str]:
        return 3 * server_round, "grows with the round"


def test_module_class_from_run_config_runs(tmp_path: Path, shared_data: Path) -> None:
    run_in_process(
        {
            "strategy": f"{__name__}:GrowingBudget",
            "task": "tweeteval",
            "data-dir": str(shared_data / "tweeteval_sentiment"),
            "results-dir": str(tmp_path),
            "num-server-rounds": 2,
            "max-train-rows": 120,
            "server-val-rows": 50,
            "test-rows": 50,
            "teacher-epochs": 1.0,
        },
        num_nodes=2,
    )
    (run_dir,) = tmp_path.iterdir()
    assert json.loads((run_dir / "summary.json").read_text())["strategy"] == "GrowingBudget"
    first, second = read_rounds(run_dir / "rounds.jsonl")[1:]
    assert first["participants"] == [0, 1] and second["participants"] == [0]
    assert first["budgets"] == {"0": 3, "1": 3} and second["budgets"] == {"0": 6}
    assert [c["steps"] for c in second["clients"]] == [6]
    assert second["clients"][0]["budget-reason"] == "grows with the round"
