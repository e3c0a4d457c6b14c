"""Everything before round 1: the server's split, the nodes, the federated PCA, round 0.

1. Embed the server's held-out split with the frozen base model.
2. Wait for ``min-nodes`` nodes, ask each for its embedding statistics
   (``query.stats``) and fit the federated PCA of the pooled data (and, with
   ``teacher-probe=pooled``, the teachers' starting head from the pooled
   class moments).
3. Initialise the global student with that projection, build the strategy
   and, with ``teacher-federation=fedavg``, the teacher federation.
4. Resume from a checkpoint, or evaluate the initial student and write round 0.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from config.errors import ConfigError
from config.messages import (
    CONFIG_KEY,
    DEVICE_KEY,
    INFO_KEY,
    TEACHER_KEY,
    StatsReport,
)
from config.run_config import RunConfig
from llm.inference import pooled_embeddings
from llm.probe import head_arrays, pool_class_moments, pooled_probe_head
from quantum.devices import make_executor
from quantum.distill import evaluate_student
from quantum.projection import MomentStats, pca_projection
from quantum.student import QuantumStudent, build_student, circuit_spec, device_spec
from server_app.checkpoint import resume
from server_app.messaging import exchange
from server_app.qpu_budget import QpuBudget
from server_app.results import ResultsWriter
from server_app.round_record import initial_record
from server_app.stats_replies import (
    check_stats,
    claim_partitions,
    class_moments,
    pool_moments,
    stats_failure,
)
from server_app.teacher_federation import TeacherFederation, average_arrays
from strategies.registry import build_strategy
from strategies.replies import failure_record
from strategies.robust import ROBUST
from strategies.student_fedavg import StudentFedAvg
from tasks.datasets import DataSource, TextDataset
from tasks.splits import server_datasets

logger = logging.getLogger(__name__)


@dataclass
class ServerSplit:
    """Server rows as student features: the validation split, or the test split."""

    name: str  # "val" or "test"
    features: np.ndarray
    labels: np.ndarray
    num_classes: int
    majority_rate: float


class ServerData:
    """The server's two roles of rows (see ``tasks.splits``), embedded by the frozen base.

    :attr:`val` steers every decision and every per-round curve; :attr:`test`
    is embedded only when first scored (at the end, or each round with
    ``test-every-round``) and is read by no policy.
    """

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.test_embed_seconds = 0.0
        source = DataSource.from_config(config.data)
        val_rows, self.test_rows = server_datasets(source, config.data, config.federation.seed)
        self.val_rows = val_rows
        logger.info(
            "data: %s, %d classes; server validation %d rows (%s), test %d rows (scored at "
            "the end); embedding the validation rows with the frozen %s",
            source.description,
            val_rows.num_classes,
            len(val_rows),
            "the task's own" if source.has_split("validation") else "carved from train",
            len(self.test_rows),
            config.teacher.model,
        )
        self.val = embed_split(config, val_rows, "val")

    @functools.cached_property
    def test(self) -> ServerSplit:
        """The test rows (embedded on first use; the seconds go to ``test_embed_seconds``)."""
        started = time.perf_counter()
        split = embed_split(self.config, self.test_rows, "test")
        self.test_embed_seconds = time.perf_counter() - started
        return split


def embed_split(config: RunConfig, rows: TextDataset, name: str) -> ServerSplit:
    """``rows`` as student features: the frozen base model's pooled embeddings."""
    teacher = config.teacher
    features = pooled_embeddings(
        teacher.model, rows.texts, teacher.max_length, teacher.embed_batch_size
    )
    return ServerSplit(name, features, rows.labels, rows.num_classes, rows.majority_rate())


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


@dataclass
class Federation:
    """What the round loop works on, set up once before round 1."""

    config: RunConfig
    data: ServerData
    student: QuantumStudent
    arrays: ArrayRecord  # the global student
    strategy: StudentFedAvg
    teachers: TeacherFederation | None
    initial: dict[str, float]  # the initial global student on the validation split
    first_round: int
    started: float  # time.perf_counter() at the start of set-up
    server_embed_seconds: float
    # The best global student so far on the validation split (see best_val_round), and its round.
    best_arrays: ArrayRecord | None = None
    best_round: int = 0
    budget: QpuBudget | None = None  # the QPU bill and max-qpu-seconds
    # The last rounds' global students, oldest first, with their rounds (final-model=average).
    recent: list[tuple[int, ArrayRecord]] = field(default_factory=list)

    def observe_val(self, server_round: int, history: Sequence[Mapping[str, Any]]) -> None:
        """Keep the global student if ``history``'s last record is its best so far, and
        among the last ``final-average-rounds`` rounds' (``final-model=average``)."""
        if best_val_round(history) == server_round or self.best_arrays is None:
            self.best_arrays, self.best_round = self.arrays, server_round
        policy = self.config.policy
        if policy.final_model == "average":
            kept = [*self.recent, (server_round, self.arrays)]
            self.recent = kept[-policy.final_average_rounds :]

    def final_student(self) -> tuple[ArrayRecord, int]:
        """The student the run ends with (``final-model``) and the round it is from (-1: the
        last round's, or the mean of the last rounds' with ``average``)."""
        final_model = self.config.policy.final_model
        if final_model == "best-val" and self.best_arrays is not None:
            return self.best_arrays, self.best_round
        if final_model == "average" and self.recent:
            return mean_record([arrays for _, arrays in self.recent]), -1
        return self.arrays, -1


def mean_record(records: Sequence[ArrayRecord]) -> ArrayRecord:
    """The element-wise mean of global students with the same arrays (float32)."""
    mean = average_arrays([({k: a.numpy() for k, a in r.items()}, 1.0) for r in records])
    return ArrayRecord({k: Array(v) for k, v in mean.items()})


def best_val_round(history: Sequence[Mapping[str, Any]]) -> int:
    """The round of ``history`` whose global student scored best on the validation split.

    Best is the highest validation accuracy (the figure the run reports), ties
    broken by the lower validation loss, then by the earlier round.
    """
    best = max(history, key=lambda r: (r["val"]["accuracy"], -r["val"]["loss"], -r["round"]))
    return int(best["round"])


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


def array_bytes(messages: Iterable[Message]) -> int:
    """Bytes of the student's (and statistics') arrays; teacher adapters are counted apart."""
    return sum(
        rec.count_bytes()
        for m in messages
        if not m.has_error()
        for key, rec in m.content.array_records.items()
        if key != TEACHER_KEY
    )


def student_record(student: QuantumStudent) -> ArrayRecord:
    """The student's parameters as a Flower ArrayRecord."""
    return ArrayRecord({k: Array(v) for k, v in student.get_arrays().items()})


def evaluate_global(
    student: QuantumStudent, arrays: ArrayRecord, split: ServerSplit
) -> dict[str, float]:
    """Cross-entropy (nats) and accuracy of the global student ``arrays`` on ``split``."""
    student.set_arrays({k: a.numpy() for k, a in arrays.items()})
    loss, accuracy = evaluate_student(student, split.features, split.labels)
    return {"loss": loss, "accuracy": accuracy}


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


def teacher_federation(
    config: RunConfig, start: dict[str, np.ndarray] | None = None
) -> TeacherFederation | None:
    """The server's side of ``teacher-federation=fedavg`` (None when teachers stay local);
    ``start`` is the teachers' first head (the pooled probe), if any."""
    if config.teacher.federation != "fedavg":
        return None
    return TeacherFederation(
        config.teacher.fedavg_rounds,
        config.policy.aggregation,
        config.policy.trim_fraction,
        config.policy.krum_byzantine,
        start=start,
        early_end=config.teacher.fedavg_early_end,
    )


def set_up(grid: Grid, config: RunConfig, writer: ResultsWriter) -> Federation:
    """Steps 1-4 of the module docstring; round 0 (or the resumed rounds) is written."""
    fed, student_cfg = config.federation, config.student
    started = time.perf_counter()
    data = ServerData(config)
    server_embed_seconds = time.perf_counter() - started
    logger.info("waiting for at least %d clients; each embeds its rows for the PCA", fed.min_nodes)
    node_ids = wait_for_nodes(grid, fed.min_nodes, fed.node_wait_seconds)
    query_started = time.perf_counter()
    width = data.val.features.shape[1]
    projection = fit_projection(grid, node_ids, config, data.val)
    query_seconds = time.perf_counter() - query_started
    executor = make_executor(
        device_spec(student_cfg).exact,
        circuit_spec(student_cfg, data.val.num_classes),
        seed=fed.seed,
    )
    student = build_student(student_cfg, width, executor, fed.seed)
    student.set_projection(projection.weight, projection.bias)
    strategy = build_strategy(config)
    strategy.bind_nodes(projection.partitions)
    strategy.declare_clients(projection.clients)
    teachers = teacher_federation(config, projection.probe_head)
    budget = QpuBudget(config, projection.clients)
    federation = Federation(
        config=config,
        data=data,
        student=student,
        arrays=student_record(student),
        strategy=strategy,
        teachers=teachers,
        initial={},
        first_round=1,
        started=started,
        server_embed_seconds=server_embed_seconds,
        budget=budget,
    )
    if fed.resume_from:
        federation.first_round, best, recent = resume(
            fed.resume_from, config, student, strategy, writer, teachers
        )
        last = federation.first_round - 1
        federation.recent = [
            (last - len(recent) + 1 + i, ArrayRecord({k: Array(v) for k, v in arrays.items()}))
            for i, arrays in enumerate(recent)
        ]
        budget.check_before(strategy, federation.first_round, writer.rounds)
        federation.arrays = student_record(student)
        federation.initial = writer.rounds[0]["val"]
        federation.best_round = best_val_round(writer.rounds)
        federation.best_arrays = (
            ArrayRecord({k: Array(v) for k, v in best.items()}) if best else federation.arrays
        )
        return federation
    budget.check_before(strategy, 1, [])  # a run over max-qpu-seconds stops here
    federation.initial = evaluate_global(student, federation.arrays, data.val)
    federation.best_arrays = federation.arrays  # round 0's student is a candidate too
    strategy.observe_val(0, federation.initial)
    record = initial_record(
        federation.initial,
        projection.clients,
        seconds=time.perf_counter() - started,
        server_embed_seconds=server_embed_seconds,
        query_seconds=query_seconds,
        bytes_received=projection.bytes_received,
        failures=projection.failures,
    )
    if config.data.test_every_round:
        record["test"] = evaluate_global(student, federation.arrays, data.test)
    writer.write_round(record)
    logger.info(
        "round 0: validation acc %.3f loss %.4f (majority %.3f)",
        federation.initial["accuracy"],
        federation.initial["loss"],
        data.val.majority_rate,
    )
    return federation
