"""One process per node that runs every message of a run, so its runtime is built once.

In simulation Flower keeps a ClientApp process alive across messages, and
:func:`client_app.runtime.runtime` builds a node's rows, device, backend and
transpiled circuit on the first message and reuses them. Flower 1.42's
deployment engine starts a new ``flwr-clientapp`` process for every message
instead, so each message would build them again (an ``ibm:`` service lookup
and a transpilation each time).

:func:`node_host` is a ClientApp mod. In a deployment ``flwr-clientapp``
process it hands the message and the context to this node's host, a
long-lived ``python -m client_app.host_process`` process started on the
node's first message, and returns the host's reply. The host runs the same ClientApp on
them, so every message of a run finds the runtime the first one built.
Flower's path is unchanged: the per-message process pulls the message and
pushes the reply and the context; the host only computes. The context's
state still travels with every message, so a host that is lost (the node
restarted) costs one rebuild, nothing else.

- One host per node and app version (the FAB it was loaded from), serving
  every run of that app; its Unix socket is private to the user.
- Log records of a message travel back with its reply, into the node's log.
- The host exits when the process that started its first client (the
  SuperExec or the fork server) exits, or after :data:`IDLE_ENV` seconds
  (default :data:`IDLE_SECONDS`) without a message.
- ``LLMQFL_NODE_HOST=off`` runs every message in its own process, as Flower does.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from flwr.app import Context, Message
from flwr.common.serde import (
    context_from_proto,
    context_to_proto,
    message_from_proto,
    message_to_proto,
)
from flwr.proto.message_pb2 import Context as ProtoContext
from flwr.proto.message_pb2 import Message as ProtoMessage

from config.logs import configure_logging

logger = logging.getLogger(__name__)

HOST_ENV = "LLMQFL_NODE_HOST"  # "off": every message in its own process
IDLE_ENV = "LLMQFL_NODE_HOST_IDLE"
IDLE_SECONDS = 1800.0
START_SECONDS = 180.0  # longest wait for a new host to listen
_APP_ROOT = Path(__file__).resolve().parents[1]  # the folder holding this app's packages

NextHandler = Callable[[Message, Context], Message]


def node_host(msg: Message, context: Context, call_next: NextHandler) -> Message:
    """ClientApp mod: on the deployment engine, run the message in this node's host."""
    if os.environ.get(HOST_ENV) == "off" or Path(sys.argv[0]).name != "flwr-clientapp":
        return call_next(msg, context)  # simulation, or the host itself
    configure_logging()
    request = (message_to_proto(msg), context_to_proto(context))
    with _connect(int(context.node_id)) as conn:
        send(conn, *(part.SerializeToString() for part in request))
        head, reply_bytes, context_bytes = receive(conn)
    header = json.loads(head)
    for name, level, text in header["logs"]:
        logging.getLogger(name).log(level, "%s", text)
    if header["error"]:
        raise RuntimeError(header["error"])
    reply = message_from_proto(ProtoMessage.FromString(reply_bytes))
    context.state = context_from_proto(ProtoContext.FromString(context_bytes)).state
    return Message(reply.error if reply.has_error() else reply.content, reply_to=msg)


# ------------------------------------------------------------------ client side
def socket_path(node_id: int) -> Path:
    """This node's host socket for this app version, in a folder only this user can read."""
    folder = Path(tempfile.gettempdir()) / f"llmqfl-hosts-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.stat().st_uid != os.getuid() or folder.stat().st_mode & 0o077:
        raise RuntimeError(f"{folder}: not private to this user; remove it and retry")
    app = hashlib.sha256(str(_APP_ROOT).encode()).hexdigest()[:12]
    return folder / f"{node_id & 0xFFFFFFFFFFFF:x}-{app}.sock"


@contextlib.contextmanager
def _connect(node_id: int) -> Iterator[socket.socket]:
    path = socket_path(node_id)
    conn = _try_connect(path)
    if conn is None:
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one start at a time, even with parallel messages
            conn = _try_connect(path) or _start_host(path)
    try:
        yield conn
    finally:
        conn.close()


def _try_connect(path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        return None
    return conn


def _start_host(path: Path) -> socket.socket:
    """Start the host for ``path`` and connect to it; a host that dies says why."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a socket left by a host that was killed
    log = path.with_suffix(".log")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_APP_ROOT), env.get("PYTHONPATH")]))
    with open(log, "ab") as out:
        host = subprocess.Popen(
            [sys.executable, "-m", "client_app.host_process", str(path), str(os.getppid())],
            cwd=_APP_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives this message's process
        )
    logger.info("node host started (pid %d, log %s)", host.pid, log)
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if (conn := _try_connect(path)) is not None:
            return conn
        if host.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"the node host exited with code {host.returncode}:\n{tail}")
        time.sleep(0.05)
    host.kill()
    raise RuntimeError(f"the node host did not listen within {START_SECONDS:.0f} s; see {log}")


# ------------------------------------------------------------------ wire format
def send(conn: socket.socket, *frames: bytes) -> None:
    conn.sendall(b"".join(struct.pack("!Q", len(f)) + f for f in frames))


def receive(conn: socket.socket, count: int = 3) -> list[bytes]:
    frames = []
    for _ in range(count):
        (size,) = struct.unpack("!Q", _exactly(conn, 8))
        frames.append(_exactly(conn, size))
    return frames


def _exactly(conn: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = conn.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("the node host closed the connection mid-message")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
