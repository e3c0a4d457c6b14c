"""Run the real ServerApp and ClientApp in one process, without Ray.

:class:`InProcessGrid` is a Flower ``Grid`` whose nodes are ``Context``
objects in this process: ``send_and_receive`` hands each (copied) message to
the ClientApp with its node's persistent context, and a ClientApp exception
becomes an error reply, as in Flower's simulation. Tests, benchmarks and
notebooks use it to run a whole federation with a given run config in
seconds; ``flwr run .`` remains the way to run on Flower's simulation engine
or deployment.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import traceback
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

SUPERLINK_NODE_ID = 1
NODE_ID_BASE = 0xF0E1_D2C3_B4A5_9687  # > 2**63, as real node IDs often are
_CLIENT_APP_ERROR = 2  # Flower's code for an exception raised by a ClientApp


def node_id(partition: int, run_id: int) -> int:
    """The node ID of partition ``partition`` in run ``run_id`` (above 2**63, as real ones)."""
    return NODE_ID_BASE + 7919 * partition + 104729 * run_id


class InProcessGrid(Grid):
    """A Grid whose ``num_nodes`` nodes run ``client_app`` in this process.

    Node ``i`` (partition ``i``) has node config ``{"partition-id": i,
    "num-partitions": num_nodes}`` and, like real nodes, a large unsigned
    64-bit node ID that changes from run to run (:func:`node_id`), as a
    SuperNode's does when it restarts; only its partition stays.
    """

    def __init__(
        self,
        client_app: ClientApp,
        num_nodes: int,
        run_config: Mapping[str, Any],
        run_id: int = 1,
        fail_nodes: Iterable[int] = (),
    ) -> None:
        self.client_app = client_app
        self.run_id = run_id
        self.contexts = {
            node_id(i, run_id): Context(
                run_id=run_id,
                node_id=node_id(i, run_id),
                node_config={"partition-id": i, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config=dict(run_config),
            )
            for i in range(num_nodes)
        }
        self.fail_nodes = set(fail_nodes)
        self.messages_sent = 0
        self._replies: dict[str, Message] = {}
        self._ids = itertools.count()

    # The Grid API the apps use ------------------------------------------------
    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return list(self.pull_messages(self.push_messages(messages)))

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Deliver each message at once (the ClientApp runs here); its reply waits for a pull."""
        ids = []
        for message in messages:
            node_id = message.metadata.dst_node_id
            if node_id not in self.contexts:
                continue  # like Flower: no reply from a node that does not exist
            # The SuperLink assigns message IDs; Metadata has no public setter for it.
            message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            instruction = copy.deepcopy(message)  # the client must not share the server's arrays
            self.messages_sent += 1
            self._replies[message.metadata.message_id] = self._deliver(instruction, node_id)
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """The replies to ``message_ids`` (each handed out once)."""
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def _deliver(self, instruction: Message, node_id: int) -> Message:
        try:
            if node_id in self.fail_nodes:
                raise RuntimeError(f"node {node_id} was told to fail")
            return self.client_app(instruction, self.contexts[node_id])
        except Exception:  # noqa: BLE001 - every ClientApp failure becomes an error reply
            return Message(
                Error(code=_CLIENT_APP_ERROR, reason=traceback.format_exc()), reply_to=instruction
            )

    # Not used by the apps ------------------------------------------------------
    def set_run(self, run_id: int) -> None:  # type: ignore[override]
        raise NotImplementedError

    @property
    def run(self) -> Any:  # type: ignore[override]
        raise NotImplementedError

    def create_message(self, *args: Any, **kwargs: Any) -> Message:  # type: ignore[override]
        raise NotImplementedError


def run_in_process(
    run_config: Mapping[str, Any],
    num_nodes: int,
    server_app: ServerApp | None = None,
    client_app: ClientApp | None = None,
    run_id: int = 1,
    fail_nodes: Iterable[int] = (),
    grid: InProcessGrid | None = None,
    node_configs: Mapping[int, Mapping[str, Any]] | None = None,
) -> InProcessGrid:
    """Run the ServerApp against ``num_nodes`` in-process clients; return the grid.

    ``node_configs`` adds entries to the node config of partition ``i`` for
    this run (as ``--node-config`` would on a SuperNode), e.g.
    ``{0: {"device": "fake:FakeManilaV2"}}``.

    Passing the ``grid`` of an earlier call reuses its nodes for a new run
    with the new ``run_config``. As in Flower, each run starts with empty node
    state; what the nodes computed before comes back from their disk cache
    (``teacher-cache``). With a new ``run_id`` the nodes also get new node
    IDs, as restarted SuperNodes do.
    """
    if server_app is None:
        from server_app.app import app as default_server_app

        server_app = default_server_app
    if client_app is None:
        from client_app.app import app as default_client_app

        client_app = default_client_app
    if grid is None:
        grid = InProcessGrid(
            client_app, num_nodes, run_config, run_id=run_id, fail_nodes=fail_nodes
        )
    else:
        _new_run(grid, run_config, run_id)
    for context in grid.contexts.values():
        partition = int(context.node_config["partition-id"])
        context.node_config = {
            "partition-id": partition,
            "num-partitions": context.node_config["num-partitions"],
            **(node_configs or {}).get(partition, {}),
        }
    context = Context(
        run_id=run_id,
        node_id=SUPERLINK_NODE_ID,
        node_config={},
        state=RecordDict(),
        run_config=dict(run_config),
    )
    with task_identity(run_id):
        server_app(grid, context)
    return grid


def _new_run(grid: InProcessGrid, run_config: Mapping[str, Any], run_id: int) -> None:
    """Ready ``grid``'s nodes for run ``run_id``: its config, new node IDs, empty state."""
    fail = {int(grid.contexts[n].node_config["partition-id"]) for n in grid.fail_nodes}
    grid.contexts = {
        node_id(int(c.node_config["partition-id"]), run_id): c for c in grid.contexts.values()
    }
    for new_id, context in grid.contexts.items():
        context.run_config = dict(run_config)
        context.run_id, context.node_id = run_id, new_id
        context.state = RecordDict()
    grid.fail_nodes = {node_id(p, run_id) for p in fail}
    grid.run_id = run_id


@contextlib.contextmanager
def task_identity(run_id: int = 1) -> Iterator[None]:
    """Act as the SuperLink's task of run ``run_id`` (instruction messages need one).

    Outside a real run, building an instruction ``Message`` raises
    ``TaskIdentity.run_id is not set``; this sets it, and restores the
    previous identity on exit.
    """
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, SUPERLINK_NODE_ID, 1
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved
