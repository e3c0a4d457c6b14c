"""Federations on a fake IBM backend: execution modes, shot budgets, the price and the cap.

Every run here uses ``fake:FakeManilaV2`` through qiskit-ibm-runtime's local
testing mode: real transpiled circuits, the device's noise model, Runtime's
``Batch`` and ``Session`` objects, real SPSA; the QPU seconds are the cost
model's estimate, since local testing bills nothing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from config.errors import ConfigError
from config.messages import COST_METRICS
from config.run_config import RunConfig
from harness.inprocess import InProcessGrid, run_in_process
from server_app.qpu_budget import QpuBudget
from server_app.results import read_rounds
from strategies import StudentFedAvg
from strategies.registry import build_strategy

pytestmark = pytest.mark.slow


class GrowingSteps(StudentFedAvg):
    """A user's strategy whose budgets outgrow the price made at ``local-steps``."""

    def step_budget(self, server_round: int, partition: int) -> tuple[int, str]:
        return self.local_steps * server_round, "grows with the round"


def _config(shared_data: Path, results: Path, **extra: Any) -> dict[str, Any]:
    return {
        "task": "tweeteval",
        "data-dir": str(shared_data / "tweeteval_sentiment"),
        "results-dir": str(results),
        "num-server-rounds": 2,
        "min-nodes": 2,
        "max-train-rows": 100,
        "server-val-rows": 40,
        "test-rows": 40,
        "teacher-epochs": 1.0,
        "device": "fake:FakeManilaV2",
        "n-qubits": 3,
        "n-layers": 1,
        "shots": 128,
        "local-steps": 3,
        "student-batch-size": 16,
        **extra,
    }


def _run_dir(results: Path) -> Path:
    (run_dir,) = results.iterdir()
    return run_dir


def _metered(rounds: list[dict[str, Any]], key: str) -> float:
    return sum(c[COST_METRICS[key]] for r in rounds if r["round"] >= 1 for c in r["clients"])


def _price(config: dict[str, Any], clients: list[dict[str, Any]]) -> Any:
    typed = RunConfig.from_flat(config)
    return QpuBudget(typed, clients).run_cost(build_strategy(typed), 1)


@pytest.fixture(scope="module")
def batch_run(
    tmp_path_factory: pytest.TempPathFactory, shared_data: Path
) -> tuple[Path, dict[str, Any], InProcessGrid, list[str]]:
    """2 rounds in Runtime batch mode with ramped shots; the log lines kept."""
    results = tmp_path_factory.mktemp("batch")
    config = _config(
        shared_data,
        results,
        **{"qiskit-execution-mode": "batch", "shots-policy": "ramp", "min-shots": 64},
    )
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Keep(level=logging.INFO)
    logging.getLogger("server_app.qpu_budget").addHandler(handler)
    try:
        grid = run_in_process(config, num_nodes=2)
    finally:
        logging.getLogger("server_app.qpu_budget").removeHandler(handler)
    return _run_dir(results), config, grid, lines


def test_a_batch_mode_run_meters_what_was_priced_and_ramps_its_shots(
    batch_run: tuple[Path, dict[str, Any], InProcessGrid, list[str]],
) -> None:
    run_dir, config, _, lines = batch_run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds"] == 2
    rounds = read_rounds(run_dir / "rounds.jsonl")
    trained = [r for r in rounds if r["round"] >= 1]
    # The shot policy's decisions reach the nodes and the results: 64 then 128 shots per row.
    assert [r["shot-budgets"] for r in trained] == [{"0": 64, "1": 64}, {"0": 128, "1": 128}]
    for record, shots in zip(trained, (64, 128), strict=True):
        for client in record["clients"]:
            assert client["execution-mode"] == "batch" and client["backend"] == "fake_manila"
            assert client[COST_METRICS["shots"]] == shots * client[COST_METRICS["executions"]]
            assert client[COST_METRICS["jobs"]] == 3 + 2  # one job per SPSA step, 2 evaluations
    # The price logged before round 1 is what the run then metered: jobs and shots exactly.
    (line,) = [m for m in lines if m.startswith("QPU cost estimate")]
    assert "2 round(s)" in line and "max-qpu-seconds=off" in line, line
    price = _price(config, rounds[0]["clients"])
    assert price.jobs == _metered(rounds, "jobs") == 20
    assert price.shots == _metered(rounds, "shots")
    assert price.estimated_qpu_seconds == pytest.approx(_metered(rounds, "estimated_qpu_seconds"))
    assert _metered(rounds, "qpu_seconds") == 0  # local testing mode bills nothing


def test_a_session_mode_round_runs_on_the_fake_backend(
    tmp_path: Path,
    shared_data: Path,
    batch_run: tuple[Path, dict[str, Any], InProcessGrid, list[str]],
) -> None:
    results = tmp_path / "results"
    config = _config(
        shared_data, results, **{"qiskit-execution-mode": "session", "num-server-rounds": 1}
    )
    run_in_process(config, num_nodes=2, grid=batch_run[2])
    rounds = read_rounds(_run_dir(results) / "rounds.jsonl")
    (trained,) = [r for r in rounds if r["round"] == 1]
    assert [c["execution-mode"] for c in trained["clients"]] == ["session", "session"]
    assert all(c[COST_METRICS["jobs"]] == 5 for c in trained["clients"])
    assert trained["shot-budgets"] == {"0": 128, "1": 128}


def test_max_qpu_seconds_refuses_a_run_priced_over_it(
    tmp_path: Path,
    shared_data: Path,
    batch_run: tuple[Path, dict[str, Any], InProcessGrid, list[str]],
) -> None:
    results = tmp_path / "results"
    config = _config(shared_data, results, **{"max-qpu-seconds": 10.0})
    grid = batch_run[2]
    sent = grid.messages_sent
    with pytest.raises(ConfigError) as err:
        run_in_process(config, num_nodes=2, grid=grid)
    text = str(err.value)
    assert text.startswith("max-qpu-seconds=10: this run is estimated at ~") and "\n" not in text
    assert grid.messages_sent - sent == 2  # the statistics query only: nobody trained
    assert not (_run_dir(results) / "rounds.jsonl").exists()


def test_max_qpu_seconds_stops_a_run_that_would_pass_it_midway(
    tmp_path: Path,
    shared_data: Path,
    batch_run: tuple[Path, dict[str, Any], InProcessGrid, list[str]],
) -> None:
    """Budgets that outgrow the price: the run passes the check before round 1, then stops,
    checkpointed, after the round past which the next one would cross the cap."""
    results = tmp_path / "results"
    extra = {"strategy": f"{__name__}:GrowingSteps", "num-server-rounds": 3}
    config = _config(shared_data, results, **extra)
    clients = read_rounds(batch_run[0] / "rounds.jsonl")[0]["clients"]
    limit = round(1.05 * _price(config, clients).estimated_qpu_seconds, 1)
    run_in_process({**config, "max-qpu-seconds": limit}, num_nodes=2, grid=batch_run[2])
    run_dir = _run_dir(results)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds"] == 2, summary
    assert summary["stop-reason"].startswith(f"max-qpu-seconds={limit:g}: "), summary
    assert "round 3 would need" in summary["stop-reason"]
    rounds = read_rounds(run_dir / "rounds.jsonl")
    assert [r["budgets"] for r in rounds[1:]] == [{"0": 3, "1": 3}, {"0": 6, "1": 6}]
    assert _metered(rounds, "estimated_qpu_seconds") <= limit
    checkpoint = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    assert checkpoint["round"] == 2
