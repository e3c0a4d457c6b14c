"""What a node builds once per run and reuses for every message: data, device, executor.

Flower keeps a ClientApp process alive across messages in simulation (a Ray
actor, or the in-process harness), so :func:`runtime` keeps one
:class:`NodeRuntime` per (run, node, settings) in this process: the
partition's rows, the parsed device and the executor with its backend and
transpiled circuit are built on the first message and reused after. On the
deployment engine, where Flower starts a process per message, the node's
messages run in one long-lived process (:mod:`client_app.host`) for the same
effect. The backend an ``ibm:least-busy`` device resolved to is also kept in
the node's ``context.state``, so a rebuilt runtime (a restarted node) uses the
same QPU for the rest of the run.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections import OrderedDict

from flwr.app import ConfigRecord, Context

from config.node_config import NodeConfig
from config.run_config import RunConfig
from quantum.devices import DeviceSpec, make_executor
from quantum.executor import Executor
from quantum.optimizers import resolve_optimizer
from quantum.student import circuit_spec, device_spec
from tasks.datasets import DataSource, TextDataset
from tasks.splits import client_datasets

logger = logging.getLogger(__name__)

#: Runtimes kept per process (runs of a long-lived process, e.g. a test session).
MAX_RUNTIMES = 64
_BACKEND = "device-backend"  # the node state's record of the backend its executor uses


class NodeRuntime:
    """A node's settings, rows and executor for one run (see the module docstring)."""

    def __init__(self, run_config: RunConfig, node: NodeConfig) -> None:
        self.config = run_config
        self.node = node
        # A node may run its student on its own device (e.g. one site on a QPU).
        self.device: DeviceSpec = device_spec(run_config.student, node.device)
        self.optimizer = resolve_optimizer(run_config.student.optimizer, self.device)
        self.device.check_access()  # before any data is loaded or teacher trained
        self._executor: Executor | None = None
        if node.device:
            logger.info("client %d: device %s from its node config", node.partition_id, node.device)

    @functools.cached_property
    def splits(self) -> tuple[TextDataset, TextDataset]:
        """(train, local validation) rows of this node's partition."""
        data = self.config.data
        return client_datasets(
            DataSource.from_config(data),
            data,
            self.node.partition_id,
            self.node.num_partitions,
            self.config.federation.seed,
        )

    def executor(self, state_record: ConfigRecord) -> Executor:
        """The node's executor, built on first use; ``state_record`` remembers its backend.

        ``ibm:least-busy`` is resolved once per run: the chosen backend's name is
        written to ``state_record`` (the node's ``context.state``) and used by
        every later build.
        """
        if self._executor is None:
            device = self.device
            if device.backend == "least-busy" and _BACKEND in state_record:
                device = dataclasses.replace(device, backend=str(state_record[_BACKEND]))
            train, _ = self.splits
            circuit = circuit_spec(self.config.student, train.num_classes)
            self._executor = make_executor(device, circuit, seed=self.config.federation.seed)
            (logger.info if device.shots_based else logger.debug)(
                "client %d: student circuits on %s (%s)",
                self.node.partition_id,
                self._executor.backend_name,
                device.name,
            )
        state_record[_BACKEND] = self._executor.backend_name
        return self._executor


_RUNTIMES: OrderedDict[tuple[int, int, str, str], NodeRuntime] = OrderedDict()


def runtime(context: Context) -> NodeRuntime:
    """This node's runtime for the context's run, built on the first message."""
    key = (
        int(context.run_id),
        int(context.node_id),
        json.dumps(dict(context.run_config), sort_keys=True, default=str),
        json.dumps(dict(context.node_config), sort_keys=True, default=str),
    )
    if key not in _RUNTIMES:
        built = NodeRuntime(
            RunConfig.from_flat(context.run_config), NodeConfig.from_flat(context.node_config)
        )
        logger.info("client %d: runtime built for run %d", built.node.partition_id, key[0])
        _RUNTIMES[key] = built
        while len(_RUNTIMES) > MAX_RUNTIMES:
            _RUNTIMES.popitem(last=False)
    _RUNTIMES.move_to_end(key)
    return _RUNTIMES[key]
