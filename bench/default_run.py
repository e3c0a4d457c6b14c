"""The README's main command, as written, timed from submission to ``finished:completed``.

Runs the command under ``## Run`` in the README (read from it, not retyped)
in a shell, offline (``HF_HUB_OFFLINE=1`` and friends), with a fresh
``FLWR_HOME`` and an empty teacher cache, so nothing from an earlier run is
reused, and splits its wall time into what the apps measured themselves:

- teacher_s: the clients' teacher fine-tuning;
- embed_s: frozen-base embeddings (clients' rows, the server's validation and test rows);
- student_s: the clients' student training;
- overhead_s: the rest (SuperLink and Ray start-up, imports, data loading,
  evaluation, transport).

    python bench/default_run.py [--console FILE]

Ends with ``RESULT default_run_s=... teacher_s=... embed_s=... student_s=...
overhead_s=... accuracy=<final test accuracy> majority=<test majority rate>``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.readme import readme_command  # noqa: E402
from server_app.results import read_rounds  # noqa: E402

OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--console", default="", help="also write the run's console to this file")
    args = parser.parse_args()
    command = readme_command("Run")
    scratch = Path(tempfile.mkdtemp(prefix="default-run-"))
    env = {
        **os.environ,
        **OFFLINE,
        "FLWR_HOME": str(scratch / "flwr-home"),
        "LLMQFL_CACHE_DIR": str(scratch / "cache"),
    }
    subprocess.run(["pkill", "-f", "flower-superlink"], check=False)  # a fresh SuperLink
    started = time.perf_counter()
    done = subprocess.run(
        ["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    console = done.stdout + done.stderr
    if args.console:
        Path(args.console).write_text(console)
    subprocess.run(["pkill", "-f", f"flower-superlink.*{scratch}"], check=False)
    if done.returncode != 0:
        sys.exit(f"the README's main command failed (exit {done.returncode}):\n{console[-3000:]}")
    found = re.search(r"completed after (\d+) s", console)
    results = re.search(r"results in (\S+)", console)
    if not found or not results:
        sys.exit(f"could not read the run's duration or results folder:\n{console[-3000:]}")
    run_dir = Path(results.group(1))
    rounds = read_rounds(run_dir / "rounds.jsonl")
    summary = json.loads((run_dir / "summary.json").read_text())
    clients = [c for r in rounds for c in r["clients"]]

    def total(key: str) -> float:
        return sum(float(c.get(key, 0.0)) for c in clients)

    seconds = float(found.group(1))
    phases = {
        "teacher_s": total("teacher-seconds"),
        "embed_s": total("embed-seconds")
        + summary["server-embed-seconds"]
        + summary.get("test-embed-seconds", 0.0),
        "student_s": total("student-seconds"),
    }
    phases["overhead_s"] = seconds - sum(phases.values())
    print(f"command: {command}")
    print(f"run finished:completed after {seconds:.0f} s (shell wall {wall:.0f} s); {run_dir}")
    print(
        f"RESULT default_run_s={seconds:.0f} "
        + " ".join(f"{k}={v:.1f}" for k, v in phases.items())
        + f" accuracy={summary['final-test']['accuracy']:.3f}"
        + f" majority={summary['test-majority-rate']:.3f}"
    )


if __name__ == "__main__":
    main()
