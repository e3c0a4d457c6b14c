"""The ``query.stats`` exchange: which node serves which client, and what the clients' rows pool to.

Before round 1 (:func:`fit_projection`) every node that connected within
``node-wait-seconds`` is asked for its embedding statistics; the federated
PCA of the pooled moments becomes the student's projection and, with
``teacher-probe=pooled``, the pooled class moments the teachers' starting
head. Each round (:func:`identify_nodes`) a node the strategy does not know
yet (a restarted SuperNode) is asked the same, to name its partition. Every
reply is checked first (:mod:`server_app.stats_replies`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from config.errors import ConfigError
from config.messages import (
    CONFIG_KEY,
    DEVICE_KEY,
    INFO_KEY,
    StatsReport,
)
from config.run_config import RunConfig
from llm.probe import head_arrays, pool_class_moments, pooled_probe_head
from quantum.projection import MomentStats, pca_projection
from server_app.messaging import array_bytes, exchange
from server_app.server_data import ServerSplit
from server_app.stats_replies import (
    check_stats,
    claim_partitions,
    class_moments,
    pool_moments,
    stats_failure,
)
from strategies.replies import failure_record
from strategies.robust import ROBUST
from strategies.student_fedavg import StudentFedAvg

logger = logging.getLogger(__name__)


@dataclass
class Projection:
    """The fitted federated PCA and what the query round reported."""

    weight: np.ndarray
    bias: np.ndarray
    partitions: dict[int, int]  # node ID -> partition ID
    clients: list[dict[str, Any]]  # each node's query report, with its node ID
    bytes_received: int
    failures: list[dict[str, Any]]  # refused statistics replies
    probe_head: dict[str, np.ndarray] | None = None  # teacher-probe=pooled: the teachers' start


def stats_classes(config: RunConfig, val: ServerSplit) -> int | None:
    """The classes a statistics reply's class moments must have (None: it sends none)."""
    return val.num_classes if config.teacher.pooled_probe else None


def wait_for_nodes(grid: Grid, min_nodes: int, timeout: float) -> list[int]:
    """Connected node IDs once ``min_nodes`` are there, or whatever is there at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= min_nodes:
            return nodes
        if time.monotonic() >= deadline:
            if not nodes:
                raise RuntimeError(f"no node connected within node-wait-seconds={timeout}")
            logger.warning("only %d of min-nodes=%d connected; going on", len(nodes), min_nodes)
            return nodes
        time.sleep(0.5)


def fit_projection(
    grid: Grid, node_ids: Iterable[int], config: RunConfig, val: ServerSplit
) -> Projection:
    """Federated PCA: pool each node's embedding moments and take the top components.

    Each reply is checked first (:mod:`server_app.stats_replies`); a refused
    one is a failure record and its node is not bound. The projection whitens:
    ``weight @ x + bias`` has zero mean and unit variance per component over
    the accepted clients' train rows (robustly pooled with a robust
    ``aggregation``). With ``teacher-probe=pooled`` the class moments are
    pooled the same way into the teachers' starting head, its shrinkage chosen
    on ``val`` (the server's validation rows).
    """
    width, classes = val.features.shape[1], stats_classes(config, val)
    timeout = config.federation.round_timeout
    answers = exchange(grid, _stats_queries(node_ids), timeout)
    for answer in answers:  # a node's bad setting or data stops the run before training
        problem = config_problem(answer)
        if problem is not None:
            raise ConfigError(f"node {answer.metadata.src_node_id}: {problem}")
    answered = [r for r in answers if not r.has_error()]
    accepted, failures = checked_stats(answered, width, {}, [], classes)
    if not accepted:
        reasons = "; ".join(f["reason"] for f in failures) or "no reply"
        raise RuntimeError(f"no node answered the embedding-statistics query usably: {reasons}")
    robust = config.policy.aggregation in ROBUST
    pooled = pool_moments([stats for _, _, stats in accepted], robust)
    partitions: dict[int, int] = {}
    clients = []
    for reply, report, _ in accepted:
        node = int(reply.metadata.src_node_id)
        partitions[node] = report.partition_id
        info = reply.content.config_records.get(INFO_KEY, ConfigRecord({}))
        device = {"device": str(info[DEVICE_KEY])} if DEVICE_KEY in info else {}
        clients.append({"node-id": node, **report.to_dict(), **device})
    weight, bias = pca_projection(pooled, config.student.n_qubits)
    logger.info(
        "federated PCA%s: %d components of %d rows pooled from %d clients",
        " (median of the nodes' moments)" if robust else "",
        config.student.n_qubits,
        pooled.n,
        len(accepted),
    )
    head = None
    if classes is not None:
        moments = pool_class_moments([class_moments(reply) for reply, _, _ in accepted], robust)
        probe_weight, probe_bias, chosen = pooled_probe_head(moments, val.features, val.labels)
        head = head_arrays(probe_weight, probe_bias)
        logger.info(
            "pooled teacher probe: class moments of %d rows from %d clients, shrinkage %.2f, "
            "temperature %.2f",
            moments.n,
            len(accepted),
            *chosen,
        )
    received = array_bytes(answers)
    return Projection(weight, bias, partitions, clients, received, failures, head)


def checked_stats(
    replies: Sequence[Message],
    width: int,
    held: Mapping[int, int],
    connected: Iterable[int],
    classes: int | None = None,
) -> tuple[list[tuple[Message, StatsReport, MomentStats]], list[dict[str, Any]]]:
    """The statistics replies that may count, and a failure record (with one warning
    line) for each that may not: bad moments, or a partition another node holds.
    ``classes``: see :func:`~server_app.stats_replies.check_stats`."""
    good, failures = [], []
    for reply in replies:
        node = int(reply.metadata.src_node_id)
        checked, problem = check_stats(reply, width, classes)
        if checked is None:
            failures.append(stats_failure(node, None, problem))
        else:
            good.append((reply, *checked))
    claims = [(int(r.metadata.src_node_id), report.partition_id) for r, report, _ in good]
    _, refused = claim_partitions(held, claims, connected)
    for node, reason in refused.items():
        failures.append(stats_failure(node, dict(claims).get(node), reason))
    for failure in failures:
        logger.warning("statistics reply of node %s %s", failure["node-id"], failure["reason"])
    accepted = [g for g in good if int(g[0].metadata.src_node_id) not in refused]
    return accepted, failures


def config_problem(reply: Message) -> str | None:
    """The one-line ``ConfigError`` message a failed reply carries, if it carries one.

    Error reasons hold the ClientApp's exception as a traceback (in process) or
    as ``<class '...ConfigError'>:<'message'>`` (Flower's deployment engine).
    """
    reason = reply.error.reason if reply.has_error() else None
    if not reason or "ConfigError" not in reason:
        return None
    tail = reason.rsplit("ConfigError", 1)[1]
    line = tail.strip().lstrip(":'>< ").splitlines()[0] if tail.strip() else ""
    return line.rstrip("'>") or "invalid configuration"


def identify_nodes(
    grid: Grid, strategy: StudentFedAvg, config: RunConfig, val: ServerSplit
) -> list[dict[str, Any]]:
    """Ask connected nodes the strategy does not know yet which partition they serve.

    A SuperNode that restarted mid-run reconnects under a new node ID; its
    ``query.stats`` reply names its partition, so it is the same client again.
    Replies are checked as before round 1 (a partition whose holder is still
    connected stays with it). Returns a failure record for each node that
    could not say, or whose reply was refused.
    """
    connected = [int(n) for n in grid.get_node_ids()]
    unknown = [n for n in connected if n not in strategy.partitions]
    if not unknown:
        return []
    messages = _stats_queries(unknown)
    replies = exchange(grid, messages, config.federation.round_timeout)
    failures = [  # no partition: the node could not say which it serves
        failure_record(reply, messages, {}, int(reply.error.code), str(reply.error.reason))
        for reply in replies
        if reply.has_error()
    ]
    answered = [r for r in replies if not r.has_error()]
    width, classes = val.features.shape[1], stats_classes(config, val)
    accepted, refused = checked_stats(answered, width, strategy.partitions, connected, classes)
    for reply, report, _ in accepted:
        strategy.bind_nodes({int(reply.metadata.src_node_id): report.partition_id})
        strategy.declare_clients([report.to_dict()])
    return [*failures, *refused]


def _stats_queries(node_ids: Iterable[int]) -> list[Message]:
    return [
        Message(
            RecordDict({CONFIG_KEY: ConfigRecord({})}), dst_node_id=n, message_type="query.stats"
        )
        for n in node_ids
    ]
