"""The node host: a deployment ``flwr-clientapp`` process hands its message to the node's host.

These tests call the ClientApp as Flower's per-message process would (its
``sys.argv[0]`` is ``flwr-clientapp``); the host is a real subprocess. The
deployment engine end to end is in ``tests/deploy/test_deployment.py``.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

from client_app import host, runtime
from client_app.app import app
from client_app.state import NodeState
from harness.inprocess import task_identity
from quantum.student import make_student

STATS = RecordDict({"config": ConfigRecord({})})


@pytest.fixture()
def clientapp_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """This process poses as a deployment ClientApp; yields the folder of the host's socket."""
    short = Path(tempfile.mkdtemp(prefix="lqh", dir="/tmp"))  # a Unix socket path is short
    monkeypatch.setattr(sys, "argv", ["flwr-clientapp", "--token", "1"])
    monkeypatch.setattr(tempfile, "tempdir", str(short))
    monkeypatch.setenv(host.IDLE_ENV, "5")  # the hosts of these tests end soon after them
    monkeypatch.setattr(runtime, "_RUNTIMES", collections.OrderedDict())
    with task_identity():
        yield short / f"llmqfl-hosts-{os.getuid()}"
    shutil.rmtree(short, ignore_errors=True)


def _context(shared_data: Path, node_config: dict | None = None) -> Context:
    return Context(
        run_id=1,
        node_id=7,
        state=RecordDict(),
        run_config={
            "task": "tweeteval",
            "data-dir": str(shared_data / "tweeteval_sentiment"),
            "max-train-rows": 120,
        },
        node_config=node_config or {"partition-id": 1, "num-partitions": 2},
    )


def _ask(message_type: str, content: RecordDict, context: Context) -> Message:
    message = Message(content, dst_node_id=7, message_type=message_type)
    message.metadata.__dict__["_message_id"] = "m1"
    reply = app(message, context)
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    assert reply.metadata.reply_to_message_id == "m1"
    return reply


def _host_log(folder: Path) -> str:
    (log,) = folder.glob("*.log")
    return log.read_text()


def test_a_nodes_messages_share_one_runtime_in_its_host(
    shared_data: Path, clientapp_process: Path
) -> None:
    context = _context(shared_data)
    stats = _ask("query.stats", STATS, context)
    assert stats.content.metric_records["metrics"]["num-examples"] == 48
    # The host's context state came back: the node's features are kept for later messages.
    assert NodeState(context.state).arrays("features")

    student = make_student(384, 3, trainable_projection=True)
    arrays = ArrayRecord({k: Array(v) for k, v in student.get_arrays().items()})
    evaluation = _ask("evaluate", RecordDict({"arrays": arrays}), context)
    assert evaluation.content.metric_records["metrics"]["num-examples"] == 12

    assert not runtime._RUNTIMES  # nothing was built in the message's own process
    assert _host_log(clientapp_process).count("client 1: runtime built for run 1") == 1

    # A host that is lost (a restarted node) costs one rebuild, and the run goes on.
    pid = int(_host_log(clientapp_process).split("node host ", 1)[1].split(" ", 1)[0])
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)  # the host is this process's child here
    _ask("query.stats", STATS, context)
    assert _host_log(clientapp_process).count("client 1: runtime built for run 1") == 2

    # Idle, the host exits and removes its socket.
    deadline = time.monotonic() + 60
    while list(clientapp_process.glob("*.sock")) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not list(clientapp_process.glob("*.sock"))


def test_an_error_in_the_host_reaches_flower_as_the_messages_error(
    shared_data: Path, clientapp_process: Path
) -> None:
    message = Message(STATS, dst_node_id=7, message_type="query.stats")
    with pytest.raises(RuntimeError, match="node config lacks 'partition-id'"):
        app(message, _context(shared_data, node_config={"num-partitions": 2}))


def test_with_the_host_off_each_process_builds_its_own_runtime(
    shared_data: Path, clientapp_process: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(host.HOST_ENV, "off")
    _ask("query.stats", STATS, _context(shared_data))
    assert len(runtime._RUNTIMES) == 1
    assert not clientapp_process.exists() or not list(clientapp_process.iterdir())
