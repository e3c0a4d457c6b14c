"""A user's strategy named as ``module:Class`` in the run config is the one that runs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from flwr.serverapp.strategy import Strategy

from harness.inprocess import run_in_process
from server_app.results import read_rounds
from server_app.round_flow import RoundFlow
from strategies import StudentFedAvg


class GrowingBudget(StudentFedAvg):
    """Budgets grow with the round; only client (partition) 0 trains after round 1."""

    def select_clients(self, server_round: int, partitions: list[int]) -> list[int]:
        return sorted(partitions) if server_round == 1 else sorted(partitions)[:1]

    def step_budget(self, server_round: int, partition: int) -> tuple[int, str]:
        return 3 * server_round, "grows with the round"


def _tiny_run(shared_data: Path, results: Path) -> dict[str, object]:
    """Two rounds on 120 TweetEval rows: enough to see which strategy ran."""
    return {
        "task": "tweeteval",
        "data-dir": str(shared_data / "tweeteval_sentiment"),
        "results-dir": str(results),
        "num-server-rounds": 2,
        "max-train-rows": 120,
        "server-val-rows": 50,
        "test-rows": 50,
        "teacher-epochs": 1.0,
    }


def test_module_class_from_run_config_runs(tmp_path: Path, shared_data: Path) -> None:
    run_in_process(
        {
            "strategy": f"{__name__}:GrowingBudget",
            **_tiny_run(shared_data, tmp_path),
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


def test_a_flower_users_fedavg_subclass_runs_the_whole_pipeline(
    tmp_path: Path, shared_data: Path
) -> None:
    """strategies.flower_example:ServerStepFedAvg subclasses Flower's FedAvg and knows
    nothing of the project: teachers, distillation and results run around it, and it
    makes each round's global student from the accepted replies."""
    run_in_process(
        {
            "strategy": "strategies.flower_example:ServerStepFedAvg",
            "strategy-options": '{"server_lr": 0.5}',
            **_tiny_run(shared_data, tmp_path),
        },
        num_nodes=2,
    )
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds"] == 2
    strategy = json.loads((run_dir / "strategy.json").read_text())
    assert strategy["aggregator"] == "ServerStepFedAvg"
    first, second = read_rounds(run_dir / "rounds.jsonl")[1:]
    assert first["participants"] == second["participants"] == [0, 1]
    assert all(c["teacher-steps"] > 0 for c in first["clients"])  # real teachers
    assert all(c["steps"] > 0 for c in first["clients"] + second["clients"])
    # the global student moved: round 2's clients received another student than round 1's
    before = {c["partition-id"]: c["global-val-loss"] for c in first["clients"]}
    after = {c["partition-id"]: c["global-val-loss"] for c in second["clients"]}
    assert all(after[p] != before[p] for p in before)


class StopsAfterRoundOne(StudentFedAvg):
    """Asks to stop after round 1, whatever the figures."""

    def should_stop(self, server_round: int, history: object) -> str | None:
        return "enough after round 1" if server_round >= 1 else None


def test_flowers_start_runs_the_rounds_and_after_a_stop_sends_nothing(
    tmp_path: Path,
    shared_data: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """The rounds are Flower's own ``Strategy.start()`` loop (not an override of it); a
    stop after round 1 of 3 leaves rounds 2 and 3 of that loop without a message or a
    record."""
    assert RoundFlow.start is Strategy.start
    started: list[int] = []
    flowers_start = Strategy.start

    def spy(self: Strategy, *args: object, **kwargs: object) -> object:
        started.append(int(kwargs["num_rounds"]))  # type: ignore[call-overload]
        return flowers_start(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Strategy, "start", spy)
    flower_lines = _FlowerLines()
    logging.getLogger("flwr").addHandler(flower_lines)
    request.addfinalizer(lambda: logging.getLogger("flwr").removeHandler(flower_lines))
    grid = run_in_process(
        {
            "strategy": f"{__name__}:StopsAfterRoundOne",
            **_tiny_run(shared_data, tmp_path),
            "num-server-rounds": 3,
            "fraction-evaluate": 0.0,
        },
        num_nodes=2,
    )
    assert started == [3]
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds"] == 1 and summary["stop-reason"] == "enough after round 1"
    assert [r["round"] for r in read_rounds(run_dir / "rounds.jsonl")] == [0, 1]
    assert grid.messages_sent == 2 + 2  # the statistics queries and round 1's train messages
    # Flower's loop logs round 1, not the two rounds it ran empty, and still closes its log:
    assert [m for m in flower_lines.lines if m.startswith("[ROUND")] == ["[ROUND 1/3]"]
    assert flower_lines.lines.count("Global evaluation") == 1
    assert any(m.startswith("Strategy execution finished") for m in flower_lines.lines)


class _FlowerLines(logging.Handler):
    """The lines Flower's own logger lets through (its filters run first)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
