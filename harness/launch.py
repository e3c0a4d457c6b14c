"""The main command: submit the app with ``flwr run``, show its console, exit with its real status.

``flwr run --stream`` exits 0 even when the ServerApp fails, so this command
streams the run's console, then asks ``flwr ls`` how the run ended and exits
non-zero unless it is ``finished:completed``; a failed run ends with one line
saying why, not a traceback::

    python -m harness.launch                      # the defaults, 4 simulated clients
    python -m harness.launch --supernodes 8 --run-config "strategy='fedavg'"
    python -m harness.launch . my-superlink       # a deployment (a profile in FLWR_HOME)

It runs with ``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`` unless the
environment says otherwise, so the SuperLink it starts uses this virtual
environment instead of installing the app's dependencies afresh. A local
SuperLink that ``flwr run`` started earlier keeps the environment it was
started with; one whose setting differs from this command's is stopped first
(:func:`stop_stale_local_superlink`), and ``flwr run`` starts a fresh one.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

COMPLETED = "finished:completed"
#: What ``flwr run`` needs in its environment for this app (only where the caller set nothing).
ENVIRONMENT = {
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",  # silences Ray's accelerator FutureWarning
}
#: The settings a running local SuperLink must share with this command, or be restarted.
SUPERLINK_SETTINGS = ("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION",)
#: Where ``flwr run`` looks for its local SuperLink (Flower's default, or this variable).
LOCAL_PORT_VARIABLE, LOCAL_PORT = "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT", "39091"
_STARTED = re.compile(r"Successfully started run (\d+)")
_ERROR = re.compile(r"ERROR\s*(?:\x1b\[0m)?\s*:\s*(.*)$")
_EXCEPTION = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception)):\s*(.*)$")
_ACTOR = re.compile(r"^(\x1b\[\d+m)?\([A-Za-z]+ pid=\d+\)(\x1b\[0m)?\s?")


@dataclass(frozen=True)
class RunOutcome:
    """How a submitted run ended, and the last error it reported (if any)."""

    run_id: int
    status: str
    seconds: float
    error: str = ""

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


def fold_tracebacks(lines: Iterable[str]) -> Iterator[str]:
    """Pass console lines through, replacing each traceback by its last line (the error).

    Lines a Ray actor printed (``(ClientAppActor pid=...)``) are read without
    that prefix.
    """
    in_traceback = False
    for line in lines:
        text = _ACTOR.sub("", line.rstrip("\n"))
        if text.startswith("Traceback (most recent call last)"):
            in_traceback = True
            continue
        if in_traceback:
            if text.startswith((" ", "\t")) or not text.strip() or text.startswith("During "):
                continue
            if text.startswith(("The above exception", "Traceback")):
                continue
            in_traceback = False
            yield f"ERROR: {text}"
            continue
        yield line.rstrip("\n")


def error_message(line: str) -> str:
    """The message of a console line logged at ERROR (class paths trimmed), else ""."""
    found = _ERROR.search(line)
    if not found:
        return ""
    message = found.group(1).strip()
    exception = _EXCEPTION.match(message)
    return exception.group(2) if exception and exception.group(2) else message


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


#: Seconds between two ``flwr ls`` while a run goes on: from the first, 1.5 times longer
#: each time, up to the most. Each ``flwr ls`` is a new Python process (about 1.5 s of
#: CPU), which a 2-core machine feels when it polls every second.
POLL_FIRST_SECONDS, POLL_MAX_SECONDS = 1.0, 8.0


def run_status(
    run_id: int, connection: str | None = None, env: Mapping[str, str] | None = None
) -> str:
    """The status of ``run_id`` as ``flwr ls`` reports it (e.g. ``finished:completed``)."""
    args = ["ls", *([connection] if connection else []), "--run-id", str(run_id)]
    runs = _flwr_json(args, env)["runs"]
    return str(runs[0]["status"])


def _process_args(pid: int) -> tuple[list[str], dict[str, str]] | None:
    """A process's command line and starting environment (``/proc``), or None if unreadable."""
    try:
        argv = (Path(f"/proc/{pid}/cmdline").read_bytes()).split(b"\0")
        environ = (Path(f"/proc/{pid}/environ").read_bytes()).split(b"\0")
    except OSError:
        return None
    pairs = (item.decode(errors="replace").partition("=") for item in environ if item)
    return [a.decode(errors="replace") for a in argv if a], {k: v for k, _, v in pairs}


def local_superlinks(port: str) -> list[tuple[int, dict[str, str]]]:
    """``(pid, environment)`` of each local simulation SuperLink serving on ``port``."""
    found = []
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else []:
        read = _process_args(int(entry.name)) if entry.name.isdigit() else None
        if read is None:
            continue
        argv, environ = read
        if not any(Path(arg).name == "flower-superlink" for arg in argv[:2]):
            continue
        ports = {argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--port"}
        if "--simulation" in argv and port in ports:
            found.append((int(entry.name), environ))
    return found


def stop_stale_local_superlink(env: Mapping[str, str], timeout: float = 30.0) -> list[int]:
    """Stop the local SuperLink(s) whose :data:`SUPERLINK_SETTINGS` differ from ``env``.

    ``flwr run`` reuses a local SuperLink that answers on its port, whatever
    environment that SuperLink was started with, so a SuperLink started by a
    plain ``flwr run`` without the setting would make every later run fail.
    Returns the PIDs stopped (SIGTERM, then SIGKILL after ``timeout``).
    """
    port = env.get(LOCAL_PORT_VARIABLE, LOCAL_PORT)
    stale = []
    for pid, environ in local_superlinks(port):
        differs = [k for k in SUPERLINK_SETTINGS if environ.get(k, "") != env.get(k, "")]
        if differs:
            setting = ", ".join(f"{k}={environ.get(k, '(unset)')}" for k in differs)
            logger.info("stopping the local SuperLink (pid %d), started with %s", pid, setting)
            os.kill(pid, signal.SIGTERM)
            stale.append(pid)
    deadline = time.monotonic() + timeout
    while stale and any(Path(f"/proc/{pid}").exists() for pid in stale):
        if time.monotonic() > deadline:
            for pid in stale:
                if Path(f"/proc/{pid}").exists():
                    os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    return stale


def _run_args(
    app_dir: str,
    connection: str | None,
    run_config: Mapping[str, Any] | str | None,
    federation_config: Mapping[str, Any] | None,
) -> list[str]:
    args = ["run", app_dir, *([connection] if connection else [])]
    if run_config:
        pairs = run_config if isinstance(run_config, str) else to_toml_pairs(run_config)
        args += ["--run-config", pairs]
    if federation_config:
        args += ["--federation-config", to_toml_pairs(federation_config)]
    return args


def flwr_run(
    app_dir: str = ".",
    *,
    run_config: Mapping[str, Any] | str | None = None,
    federation_config: Mapping[str, Any] | None = None,
    connection: str | None = None,
    timeout: float = 3600.0,
    env: Mapping[str, str] | None = None,
    echo: Callable[[str], None] | None = None,
) -> RunOutcome:
    """Submit ``app_dir`` with ``flwr run`` and wait until the run has finished.

    With ``echo``, the run's console is streamed to it (tracebacks folded to
    their last line); otherwise the run is submitted quietly and polled.
    """
    env = {**ENVIRONMENT, **(env if env is not None else os.environ)}
    if connection is None:  # flwr run's local SuperLink
        stop_stale_local_superlink(env)
    started = time.perf_counter()
    args = _run_args(app_dir, connection, run_config, federation_config)
    if echo is None:
        run_id, error = int(_flwr_json(args, env)["run-id"]), ""
    else:
        run_id, error = _stream(args, env, echo, timeout)
    logger.debug("submitted run %d", run_id)
    deadline = started + timeout
    status, pause = run_status(run_id, connection, env), POLL_FIRST_SECONDS
    while not status.startswith("finished"):
        if time.perf_counter() > deadline:
            stop = ["flwr", "stop", str(run_id), *([connection] if connection else [])]
            subprocess.run(stop, capture_output=True, env=env, check=False)
            status = f"timeout after {timeout:.0f} s ({status})"
            return RunOutcome(run_id, status, time.perf_counter() - started, error)
        time.sleep(pause)
        pause = min(pause * 1.5, POLL_MAX_SECONDS)
        status = run_status(run_id, connection, env)
    return RunOutcome(run_id, status, time.perf_counter() - started, error)


def _stream(
    args: list[str], env: Mapping[str, str], echo: Callable[[str], None], timeout: float
) -> tuple[int, str]:
    """Run ``flwr run ... --stream``, echoing its folded console; (run ID, last error line)."""
    process = subprocess.Popen(
        ["flwr", *args, "--stream"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(env),
    )
    run_id, error = -1, ""
    assert process.stdout is not None
    for line in fold_tracebacks(process.stdout):
        found = _STARTED.search(line)
        run_id = int(found.group(1)) if found and run_id < 0 else run_id
        error = error_message(line) or error
        echo(line)
    process.wait(timeout=timeout)
    if run_id < 0:
        raise RuntimeError(f"flwr run did not start a run: {error or 'see the output above'}")
    return run_id, error


def main(argv: list[str] | None = None) -> int:
    """Command line: exit 0 only if the run finished with status completed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("app", nargs="?", default=".")
    parser.add_argument("connection", nargs="?", default=None, help="SuperLink profile name")
    parser.add_argument("--run-config", default="", help="'key=value ...' as for flwr run")
    parser.add_argument(
        "--supernodes", type=int, default=4, help="simulated clients (simulation only; default 4)"
    )
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    federation = None if args.connection else {"num-supernodes": args.supernodes}
    try:
        outcome = flwr_run(
            args.app,
            run_config=args.run_config or None,
            federation_config=federation,
            connection=args.connection,
            timeout=args.timeout,
            echo=lambda line: print(line, flush=True),
        )
    except RuntimeError as err:
        print(f"the run could not be submitted: {err}", file=sys.stderr)
        return 1
    if outcome.completed:
        print(f"run {outcome.run_id}: {outcome.status} after {outcome.seconds:.0f} s")
        return 0
    why = outcome.error or f"see flwr log {outcome.run_id} --show"
    print(f"run {outcome.run_id} did not complete ({outcome.status}): {why}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
