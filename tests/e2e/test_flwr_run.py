"""`flwr run .` on Flower's simulation engine, checked by the run's final status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.launch import COMPLETED, flwr_run
from server_app.results import read_rounds

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def flwr_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A private FLWR_HOME; the local SuperLink this starts is stopped afterwards."""
    env = {
        **os.environ,
        "FLWR_HOME": str(tmp_path / "flwr-home"),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    }
    yield env
    found = subprocess.run(
        ["pgrep", "-f", f"flower-superlink.*{tmp_path}"],
        capture_output=True,
        text=True,
        check=False,
    )
    pids = [int(pid) for pid in found.stdout.split()]
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while pids and time.monotonic() < deadline:  # free the port for the next test
        pids = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
        time.sleep(0.2)


@pytest.mark.slow
def test_flwr_run_simulation_completes(
    tmp_path: Path, shared_data: Path, flwr_env: dict[str, str]
) -> None:
    results = tmp_path / "results"
    outcome = flwr_run(
        str(REPO),
        run_config={
            "data-dir": str(shared_data / "genomic_nontata_promoters"),
            "task": "genomic",
            "results-dir": str(results),
            "num-server-rounds": 2,
            "min-nodes": 2,
            "max-train-rows": 300,
            "server-eval-rows": 200,
            "local-steps": 10,
        },
        federation_config={"num-supernodes": 2, "client-resources-num-cpus": 2},
        timeout=900,
        env=flwr_env,
    )
    assert outcome.status == COMPLETED
    (run_dir,) = results.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds"] == 2
    rounds = read_rounds(run_dir / "rounds.jsonl")
    for record in rounds[1:]:  # both simulated nodes trained in every round
        assert sorted(c["partition-id"] for c in record["clients"]) == [0, 1]
        assert record["participants"] == [0, 1]
    assert summary["total-client-steps"] == 2 * 2 * 10
    assert summary["final-global"]["loss"] < summary["initial-global"]["loss"]


@pytest.mark.slow
def test_flwr_run_bad_config_is_not_completed(tmp_path: Path, flwr_env: dict[str, str]) -> None:
    outcome = flwr_run(
        str(REPO),
        run_config={"num-server-rounds": 0, "results-dir": str(tmp_path / "results")},
        federation_config={"num-supernodes": 2},
        timeout=300,
        env=flwr_env,
    )
    assert outcome.status.startswith("finished:") and outcome.status != COMPLETED
    assert not (tmp_path / "results").exists()
