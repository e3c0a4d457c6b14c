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
from quantum.sampler import FALLBACK_SHOT_SECONDS
from server_app.qpu_budget import QpuBudget
from server_app.results import read_rounds
from server_app.round_record import cost_rows
from strategies import StudentFedAvg
from strategies.registry import build_strategy

pytestmark = pytest.mark.slow


class GrowingSteps(StudentFedAvg):
    """A user's strategy whose budgets outgrow the price made at ``local-steps``."""

    def step_budget(self, server_round: int, partition: int) -> tuple[int, str]:
        return self.local_steps * server_round, "grows with the round"


def _config(shared_data: Path, results: Path, **extra: Any) -> dict[str, Any]:
    return {
        "strategy": "fedavg",  # the guided runs below name llm-guided
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
    """``key`` over the rounds' train and evaluate replies."""
    return sum(c[COST_METRICS[key]] for r in rounds if r["round"] >= 1 for c in cost_rows(r))


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
        # Flower's evaluate phase (fraction-evaluate=1, the default): each node scores the
        # new global student on its validation rows, one job at its own 128 shots a row.
        evaluated = record["federated-val"]["clients"]
        assert sorted(evaluated) == ["0", "1"]
        for client in evaluated.values():
            assert client[COST_METRICS["jobs"]] == 1
            assert client[COST_METRICS["shots"]] == 128 * client[COST_METRICS["executions"]]
        assert record["quantum-cost"][COST_METRICS["jobs"]] == 2 * (3 + 2) + 2
    # The price logged before round 1 is what the run then metered, train and evaluate
    # replies: jobs and shots exactly.
    (line,) = [m for m in lines if m.startswith("QPU cost estimate")]
    assert "2 round(s)" in line and "max-qpu-seconds=off" in line, line
    price = _price(config, rounds[0]["clients"])
    assert price.jobs == _metered(rounds, "jobs") == 24
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


def _guided(shared_data: Path, results: Path, **extra: Any) -> dict[str, Any]:
    """llm-guided whose bandit gives round 1 a budget of 3 steps to one client and
    ``max-steps`` (30) to the other: budgets the price at ``local-steps`` never sees."""
    guided = {
        "strategy": "llm-guided",
        "steps-policy": "bandit",
        "bandit-arms": "3,30",
        "min-steps": 3,
        "max-steps": 30,
        "selection": "all",
        "student-max-epochs": 0.0,
        "termination": "max-rounds",
    }
    return _config(shared_data, results, **{**guided, **extra})


def _message_price(config: dict[str, Any], clients: list[dict[str, Any]], steps: int) -> float:
    budget = QpuBudget(RunConfig.from_flat(config), clients)
    return budget.message_cost(int(clients[0]["partition-id"]), steps, 0).estimated_qpu_seconds


@pytest.mark.parametrize("rounds_within", [1, 0])
def test_max_qpu_seconds_holds_under_llm_guided_budgets_up_to_max_steps(
    tmp_path: Path,
    shared_data: Path,
    batch_run: tuple[Path, dict[str, Any], InProcessGrid, list[str]],
    rounds_within: int,
) -> None:
    """The run's price at ``local-steps`` passes the cap; each round is then priced at
    its plan (3 and 30 steps in round 1), and a round whose plan would cross the cap
    is not sent. ``rounds_within``: the rounds the cap leaves room for."""
    results = tmp_path / "results"
    config = _guided(shared_data, results, **{"num-server-rounds": 2})
    clients = read_rounds(batch_run[0] / "rounds.jsonl")[0]["clients"]
    small, large = _message_price(config, clients, 3), _message_price(config, clients, 30)
    at_local_steps = _price(config, clients).estimated_qpu_seconds
    if rounds_within == 1:  # room for round 1's plan and half a round at local-steps
        limit = small + large + small
    else:  # the price at local-steps fits; round 1's plan does not
        limit = 0.5 * (at_local_steps + small + large)
        assert at_local_steps < limit < small + large  # the case this run is about
    sent = batch_run[2].messages_sent
    run_in_process({**config, "max-qpu-seconds": limit}, num_nodes=2, grid=batch_run[2])
    run_dir = _run_dir(results)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds"] == rounds_within, summary
    reason = summary["stop-reason"]
    assert reason.startswith(f"max-qpu-seconds={limit:g}: "), reason
    assert f"round {rounds_within + 1} would need" in reason and "planned budgets" in reason
    rounds = read_rounds(run_dir / "rounds.jsonl")
    assert [r["budgets"] for r in rounds[1:]] == [{"0": 3, "1": 30}][:rounds_within]
    assert _metered(rounds, "estimated_qpu_seconds") <= limit
    if rounds_within == 0:  # planned, not sent: only the statistics query went out
        assert batch_run[2].messages_sent - sent == 2


def test_a_billed_node_that_reports_no_shot_time_is_priced_conservatively(
    shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = RunConfig.from_flat(_config(shared_data, tmp_path))
    clients = [
        {"partition-id": p, "num-examples": 50, "val-examples": 10, "seconds-per-shot": s}
        for p, s in ((0, 0.0), (1, 2e-4))
    ]
    budget_logger = logging.getLogger("server_app.qpu_budget")
    budget_logger.addHandler(caplog.handler)  # the runs above stopped propagation
    try:
        budget = QpuBudget(config, clients)
    finally:
        budget_logger.removeHandler(caplog.handler)
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert line.startswith("client 0 on fake:FakeManilaV2 reported no QPU seconds per shot")
    assert budget.nodes[0].seconds_per_shot == FALLBACK_SHOT_SECONDS
    assert budget.nodes[1].seconds_per_shot == 2e-4
    assert budget.message_cost(0, 3, 0).estimated_qpu_seconds > 0
