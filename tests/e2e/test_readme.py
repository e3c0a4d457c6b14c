"""The README's set-up and main commands, read from the README, run in a clean clone offline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from harness.readme import readme_command

REPO = Path(__file__).resolve().parents[2]
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
    """Adds about 2 minutes of pip (warm cache) and 2.5 minutes of run to the suite."""
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
    setup = readme_command("Set up", clone / "README.md")
    installed = subprocess.run(
        ["bash", "-c", setup], cwd=clone, env=env, capture_output=True, text=True, check=False
    )
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    try:
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
    (run_dir,) = (clone / "results").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["final-test"]["accuracy"] > summary["test-majority-rate"]
    assert "finished:completed" in ran.stdout
