"""The node host's process: runs every message of one node (see :mod:`client_app.host`).

    python -m client_app.host_process <socket> <pid to outlive>

Started by the node's first message; answers on the Unix socket until the
process ``pid`` exits or ``LLMQFL_NODE_HOST_IDLE`` seconds pass without a message.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import time
from pathlib import Path

from flwr.common.serde import (
    context_from_proto,
    context_to_proto,
    message_from_proto,
    message_to_proto,
)
from flwr.proto.message_pb2 import Context as ProtoContext
from flwr.proto.message_pb2 import Message as ProtoMessage

from client_app.app import app
from client_app.host import IDLE_ENV, IDLE_SECONDS, receive, send
from config.logs import PACKAGES, configure_logging

logger = logging.getLogger("client_app.host_process")  # also when run as __main__


class _Collect(logging.Handler):
    """Keeps one message's log records, to send back with its reply."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.records.append((record.name, record.levelno, text))


def _handle(conn: socket.socket) -> None:
    """Run one message through the ClientApp and send back reply, context and logs."""
    message_bytes, context_bytes = receive(conn, 2)
    msg = message_from_proto(ProtoMessage.FromString(message_bytes))
    context = context_from_proto(ProtoContext.FromString(context_bytes))
    collect = _Collect()
    loggers = [logging.getLogger(), *map(logging.getLogger, PACKAGES)]  # packages don't propagate
    for each in loggers:
        each.addHandler(collect)
    error, reply_bytes = "", b""
    try:
        reply_bytes = message_to_proto(app(msg, context)).SerializeToString()
    except Exception as err:  # noqa: BLE001 - the message's process raises it for Flower
        logger.exception("the ClientApp raised")
        error = f"{type(err).__name__}: {err}"
    finally:
        for each in loggers:
            each.removeHandler(collect)
    head = json.dumps({"error": error, "logs": collect.records}).encode()
    send(conn, head, reply_bytes, context_to_proto(context).SerializeToString())


def serve(path: Path, watch_pid: int, idle: float) -> None:
    """Answer messages on ``path`` until ``watch_pid`` exits or ``idle`` seconds pass."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    listener.settimeout(1.0)
    last = time.monotonic()
    try:
        while time.monotonic() - last < idle and _alive(watch_pid):
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(None)
                try:
                    _handle(conn)
                except (ConnectionError, OSError) as err:
                    logger.warning("node host: a message's process went away (%s)", err)
            last = time.monotonic()
    finally:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("socket", type=Path)
    parser.add_argument("watch_pid", type=int)
    args = parser.parse_args(argv)
    configure_logging()
    idle = float(os.environ.get(IDLE_ENV, IDLE_SECONDS))
    logger.info("node host %d on %s (idle limit %.0f s)", os.getpid(), args.socket, idle)
    serve(args.socket, args.watch_pid, idle)


if __name__ == "__main__":
    main()
