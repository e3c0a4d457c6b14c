"""A warm start for ClientApp processes on the deployment engine.

Flower 1.42's SuperExec starts a new ``flwr-clientapp`` process for every
message, and each one imports flwr, torch, PennyLane and the datasets stack
again (4-6 s on a small CPU) before it can train. This module keeps one
process that has imported them (the fork server) and gives each message a
``fork()`` of it instead::

    python -m client_app.forkserver --runtime-api-address supernode-1:9094 --insecure

runs ``flower-superexec`` with the arguments given, with ``PATH`` starting at a
folder whose ``flwr-clientapp`` is a small stdlib-only shim: it hands its
arguments and its stdin, stdout and stderr to the fork server over a Unix
socket, the server forks, the child runs Flower's own ``flwr-clientapp`` entry
point with them, and the shim exits with the child's exit code. Tokens,
contexts and replies take Flower's usual path; only the imports are shared.
If the server cannot be reached, the shim runs the real ``flwr-clientapp``.
The SuperExec also polls for tasks every ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``
seconds (0.2 here, Flower's default 1.0) unless set otherwise.

Only third-party modules are preloaded (no CUDA is initialised, no thread pool
is started before forking); the app's own modules are imported by each child
from the FAB, as Flower intends.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

#: Third-party modules every ClientApp of this project imports.
PRELOAD = (
    "flwr.supernode.cli",
    "flwr.clientapp",
    "numpy",
    "scipy.optimize",
    "torch",
    "torch.optim",
    "torch._dynamo",  # torch.optim's first optimizer imports it: 4.8 s, measured
    "pennylane",
    "datasets",
    "flwr_datasets.partitioner",
    "transformers",
)
SOCKET_ENV = "LLMQFL_FORKSERVER_SOCKET"
POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"
_SHIM = """#!{python} -S
import os, socket, struct, sys
here = os.path.dirname(os.path.abspath(__file__))
try:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(os.environ.get("{env}", ""))
except OSError:  # no fork server: run the real flwr-clientapp
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        real = os.path.join(folder, "flwr-clientapp")
        if folder and os.path.abspath(folder) != here and os.access(real, os.X_OK):
            os.execv(real, [real, *sys.argv[1:]])
    sys.exit("flwr-clientapp: no fork server and no flwr-clientapp on PATH")
payload = "\\0".join(sys.argv[1:]).encode()
socket.send_fds(conn, [struct.pack("!I", len(payload)) + payload], [0, 1, 2])
code = conn.recv(4)
sys.exit(struct.unpack("!i", code)[0] if len(code) == 4 else 1)
"""


def write_shim(folder: Path) -> Path:
    """Write the ``flwr-clientapp`` shim into ``folder``; return its path."""
    shim = folder / "flwr-clientapp"
    shim.write_text(_SHIM.format(python=sys.executable, env=SOCKET_ENV))
    shim.chmod(0o755)
    return shim


def _receive(conn: socket.socket) -> tuple[list[str], list[int]]:
    """One request: the arguments and the three stdio descriptors."""
    head, fds, _, _ = socket.recv_fds(conn, 4, 3)
    size = int.from_bytes(head, "big")
    payload = b""
    while len(payload) < size:
        chunk = conn.recv(size - len(payload))
        if not chunk:
            break
        payload += chunk
    args = payload.decode().split("\0") if payload else []
    return args, list(fds)


def _child(args: list[str], fds: list[int]) -> None:
    """In the forked child: take over the shim's stdio and run Flower's entry point."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    from flwr.supernode.cli import flwr_clientapp

    sys.argv = ["flwr-clientapp", *args]
    code = 0
    try:
        flwr_clientapp()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    except BaseException:  # noqa: BLE001 - report, then exit like a crashed process
        import traceback

        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve(listener: socket.socket, superexec: subprocess.Popen[bytes]) -> int:
    """Fork one child per request until the SuperExec exits; return its exit code."""
    children: dict[int, socket.socket] = {}
    while superexec.poll() is None:
        ready, _, _ = select.select([listener], [], [], 0.2)
        if ready:
            conn, _ = listener.accept()
            args, fds = _receive(conn)
            pid = os.fork()
            if pid == 0:
                listener.close()
                conn.close()
                _child(args, fds)
            for fd in fds:
                os.close(fd)
            children[pid] = conn
        _reap(children)
    for conn in children.values():
        conn.close()
    return int(superexec.returncode or 0)


def _reap(children: dict[int, socket.socket]) -> None:
    """Send each finished child's exit code to its shim."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.sendall(os.waitstatus_to_exitcode(status).to_bytes(4, "big", signed=True))
            conn.close()


def main(argv: list[str] | None = None) -> int:
    """Preload, start ``flower-superexec`` with the shim first on PATH, serve until it exits."""
    import importlib

    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    folder = Path(tempfile.mkdtemp(prefix="llmqfl-forkserver-"))
    write_shim(folder)
    path = str(folder / "socket")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    env = {**os.environ, SOCKET_ENV: path, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}
    env.setdefault(POLL_ENV, "0.2")
    superexec_bin = shutil.which("flower-superexec") or "flower-superexec"
    args = sys.argv[1:] if argv is None else argv
    superexec = subprocess.Popen([superexec_bin, *args], env=env)
    signal.signal(signal.SIGTERM, lambda *_: superexec.terminate())
    try:
        return serve(listener, superexec)
    finally:
        listener.close()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
