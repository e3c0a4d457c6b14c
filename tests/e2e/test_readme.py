"""The README's set-up and main commands, read from the README, run in a clean clone offline.

Between the two, a plain ``flwr run .`` as a Flower user types it first: it
must complete with nothing exported by hand, and the README's main command
must complete right after it (through the local SuperLink it left running).

Where ``LLMQFL_README_VENV`` names a virtual environment that the README's
set-up command has just made from a clean clone of the same commit (``.ci/run``
sets it after running that command, which must succeed for CI to go on), the
clone uses that environment instead of installing it a second time: the same
command on the same files, two minutes of pip saved.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from harness.readme import readme_command

REPO = Path(__file__).resolve().parents[2]
PLAIN_FLWR_RUN = '. .venv/bin/activate && flwr run . --stream --run-config "num-server-rounds=1"'
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def _stop_superlinks(marker: Path) -> None:
    found = subprocess.run(
        ["pgrep", "-f", f"flower-superlink.*{marker}"], capture_output=True, text=True, check=False
    )
    for pid in found.stdout.split():
        os.kill(int(pid), signal.SIGTERM)


@pytest.mark.slow
def test_a_clean_clone_sets_up_and_runs_the_default_federation(tmp_path: Path) -> None:
    """Adds about 2 minutes of pip (warm cache; none in CI) and 5 minutes of runs to the suite."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "FLWR_"))},
        **OFFLINE,
        "FLWR_HOME": str(tmp_path / "flwr-home"),
        "LLMQFL_CACHE_DIR": str(tmp_path / "cache"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    env["PATH"] = os.pathsep.join(
        p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(REPO))
    )
    made = os.environ.get("LLMQFL_README_VENV", "")
    if made and (Path(made) / "bin" / "activate").is_file():
        (clone / ".venv").symlink_to(made)  # the README's set-up, run by .ci/run just before
    else:
        setup = readme_command("Set up", clone / "README.md")
        installed = subprocess.run(
            ["bash", "-c", setup], cwd=clone, env=env, capture_output=True, text=True, check=False
        )
        assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    assert PLAIN_FLWR_RUN in (clone / "README.md").read_text()
    try:
        _plain_flwr_run_completes(clone, env)
        plain_runs = set((clone / "results").iterdir())  # the plain run writes there too
        ran = subprocess.run(
            ["bash", "-c", readme_command("Run", clone / "README.md")],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
    finally:
        _stop_superlinks(tmp_path)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    (run_dir,) = set((clone / "results").iterdir()) - plain_runs
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["final-test"]["accuracy"] > summary["test-majority-rate"]
    assert "finished:completed" in ran.stdout


def _plain_flwr_run_completes(clone: Path, env: dict[str, str]) -> None:
    """``flwr run . --stream`` in the activated environment; ``flwr ls`` says completed."""
    plain = subprocess.run(
        ["bash", "-c", PLAIN_FLWR_RUN],
        cwd=clone, env=env, capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    listed = subprocess.run(
        ["bash", "-c", ". .venv/bin/activate && flwr ls --format json"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    runs = json.loads(listed.stdout)["runs"]
    assert [r["status"] for r in runs] == ["finished:completed"], plain.stdout[-3000:]
    (run_dir,) = (clone / "results").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds"] == 1
