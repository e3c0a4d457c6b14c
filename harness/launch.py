"""Submit the app with ``flwr run`` and wait for its real end state.

``flwr run --stream`` exits 0 even when the ServerApp fails, so this module
submits the run, polls ``flwr ls`` until the run has finished, and exits
non-zero unless its status is ``finished:completed``::

    python -m harness.launch . --supernodes 4 \\
        --run-config "data-dir='/data/tweeteval_sentiment' num-server-rounds=5"

Run ``flwr log <run-id> --show`` for the run's log.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

COMPLETED = "finished:completed"


@dataclass(frozen=True)
class RunOutcome:
    """How a submitted run ended."""

    run_id: int
    status: str
    seconds: float

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED


def to_toml_pairs(values: Mapping[str, Any]) -> str:
    """``{"a": 1, "b": "x"}`` -> ``"a=1 b='x'"`` (the form ``--run-config`` takes)."""

    def literal(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return "'" + value.replace("'", "") + "'"
        return repr(value)

    return " ".join(f"{key}={literal(value)}" for key, value in values.items())


def _flwr_json(args: list[str], env: Mapping[str, str] | None) -> dict[str, Any]:
    done = subprocess.run(
        ["flwr", *args, "--format", "json"], capture_output=True, text=True, env=env, check=False
    )
    try:
        parsed: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(
            f"flwr {args[0]} failed (exit {done.returncode}): "
            f"{(done.stdout + done.stderr).strip()[-500:]}"
        ) from None
    if not parsed.get("success", True):
        raise RuntimeError(f"flwr {args[0]} failed: {parsed.get('error-message', parsed)}")
    return parsed


def run_status(
    run_id: int, connection: str | None = None, env: Mapping[str, str] | None = None
) -> str:
    """The status of ``run_id`` as ``flwr ls`` reports it (e.g. ``finished:completed``)."""
    args = ["ls", *([connection] if connection else []), "--run-id", str(run_id)]
    runs = _flwr_json(args, env)["runs"]
    return str(runs[0]["status"])


def flwr_run(
    app_dir: str = ".",
    *,
    run_config: Mapping[str, Any] | str | None = None,
    federation_config: Mapping[str, Any] | None = None,
    connection: str | None = None,
    timeout: float = 3600.0,
    env: Mapping[str, str] | None = None,
) -> RunOutcome:
    """Submit ``app_dir`` with ``flwr run`` and wait until the run has finished."""
    started = time.perf_counter()
    args = ["run", app_dir, *([connection] if connection else [])]
    if run_config:
        pairs = run_config if isinstance(run_config, str) else to_toml_pairs(run_config)
        args += ["--run-config", pairs]
    if federation_config:
        args += ["--federation-config", to_toml_pairs(federation_config)]
    run_id = int(_flwr_json(args, env)["run-id"])
    logger.info("submitted run %d", run_id)
    deadline = time.monotonic() + timeout
    status = run_status(run_id, connection, env)
    while not status.startswith("finished"):
        if time.monotonic() > deadline:
            subprocess.run(
                ["flwr", "stop", str(run_id), *([connection] if connection else [])],
                capture_output=True,
                env=env,
                check=False,
            )
            return RunOutcome(
                run_id, f"timeout after {timeout:.0f} s ({status})", time.perf_counter() - started
            )
        time.sleep(1.0)
        status = run_status(run_id, connection, env)
    return RunOutcome(run_id, status, time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    """Command line: exit 0 only if the run finished with status completed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("app", nargs="?", default=".")
    parser.add_argument("connection", nargs="?", default=None, help="SuperLink profile name")
    parser.add_argument("--run-config", default="", help="'key=value ...' as for flwr run")
    parser.add_argument("--supernodes", type=int, default=0, help="simulation: number of nodes")
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    federation = {"num-supernodes": args.supernodes} if args.supernodes else None
    outcome = flwr_run(
        args.app,
        run_config=args.run_config or None,
        federation_config=federation,
        connection=args.connection,
        timeout=args.timeout,
    )
    logger.info("run %d: %s after %.0f s", outcome.run_id, outcome.status, outcome.seconds)
    return 0 if outcome.completed else 1


if __name__ == "__main__":
    sys.exit(main())
