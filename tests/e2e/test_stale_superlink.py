"""A plain ``flwr run .`` without the setting, then the README's launcher: the launcher completes.

``flwr run`` starts a local SuperLink in the background and reuses it for
every later run, whatever environment it was started with. A SuperLink started
without ``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`` installs the app's
dependencies afresh for each run, which fails offline (and, with the registry,
on a package's source build). The launcher finds that SuperLink by its port,
reads the environment it was started with, and stops it, so that ``flwr run``
starts one with the setting.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.launch import (
    COMPLETED,
    LOCAL_PORT_VARIABLE,
    SUPERLINK_SETTINGS,
    flwr_run,
    local_superlinks,
    run_status,
)
from harness.network import free_port

REPO = Path(__file__).resolve().parents[2]
SETTING = SUPERLINK_SETTINGS[0]


@pytest.fixture()
def local_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A private FLWR_HOME and free local SuperLink ports; its SuperLinks are stopped after."""
    port = str(free_port("127.0.0.1"))
    env = {
        **os.environ,
        "FLWR_HOME": str(tmp_path / "flwr-home"),
        LOCAL_PORT_VARIABLE: port,
        "FLWR_LOCAL_CONTROL_API_PORT": str(free_port("127.0.0.1")),
        "UV_OFFLINE": "1",  # the stale SuperLink's dependency install fails at once
    }
    yield env
    for pid, _ in local_superlinks(port):
        os.kill(pid, signal.SIGTERM)


def _config(shared_data: Path, results: Path) -> dict[str, object]:
    return {
        "data-dir": str(shared_data / "genomic_nontata_promoters"),
        "task": "genomic",
        "results-dir": str(results),
        "num-server-rounds": 1,
        "min-nodes": 2,
        "max-train-rows": 200,
        "server-val-rows": 100,
        "test-rows": 100,
        "local-steps": 5,
    }


@pytest.mark.slow
def test_the_launcher_replaces_a_superlink_a_plain_flwr_run_left(
    tmp_path: Path, shared_data: Path, local_env: dict[str, str]
) -> None:
    port = local_env[LOCAL_PORT_VARIABLE]
    plain = {k: v for k, v in local_env.items() if k != SETTING}
    # 1. A plain `flwr run .`, as a user types it without the setting.
    pairs = " ".join(f"{k}={json.dumps(v)}" for k, v in _config(shared_data, tmp_path).items())
    submitted = subprocess.run(
        ["flwr", "run", str(REPO), "--run-config", pairs, "--format", "json"],
        capture_output=True, text=True, env=plain, cwd=tmp_path, check=False,
    )  # fmt: skip
    run_id = int(json.loads(submitted.stdout)["run-id"]), submitted.stderr
    status, deadline = run_status(run_id[0], env=plain), time.monotonic() + 300
    while not status.startswith("finished") and time.monotonic() < deadline:
        time.sleep(1.0)
        status = run_status(run_id[0], env=plain)
    assert status.startswith("finished") and status != COMPLETED, status
    ((stale, environ),) = local_superlinks(port)
    assert SETTING not in environ

    # 2. The README's launcher, right after it: it stops that SuperLink and completes.
    results = tmp_path / "results"
    outcome = flwr_run(
        str(REPO),
        run_config=_config(shared_data, results),
        federation_config={"num-supernodes": 2, "client-resources-num-cpus": 2},
        timeout=900,
        env={**local_env, SETTING: "1"},
    )
    assert outcome.status == COMPLETED, outcome
    assert not Path(f"/proc/{stale}").exists()
    ((fresh, environ),) = local_superlinks(port)
    assert fresh != stale and environ[SETTING] == "1"
    (run_dir,) = results.iterdir()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
