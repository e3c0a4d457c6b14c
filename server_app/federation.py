"""The server's side of a run, step by step (see DESIGN.md, "One round, as data").

1. Validate the configuration (before anything slow) and open the results dir.
2. Embed the server's held-out split with the frozen base model.
3. Wait for nodes, ask each for its embedding statistics, fit the federated PCA.
4. Initialise the global student with that projection.
5. Each round: the strategy configures one message per selected node, the
   replies are aggregated (example-weighted FedAvg), the global student is
   evaluated on the server split, the round is written, and the strategy may
   stop the run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from config.errors import ConfigError
from config.messages import TEACHER_KEY, metric_int
from config.run_config import RunConfig
from llm.teacher import pooled_embeddings
from quantum.devices import parse_device
from quantum.distill import evaluate_student
from quantum.metering import sum_costs
from quantum.projection import MomentStats, pca_projection
from quantum.student import QuantumStudent, build_student
from server_app.checkpoint import check_resume, load_checkpoint, restore_rng, save_checkpoint
from server_app.results import ResultsWriter
from server_app.teacher_federation import TeacherFederation, record_bytes
from strategies.registry import build_strategy
from strategies.student_fedavg import StudentFedAvg, reply_node
from tasks.datasets import load_task
from tasks.splits import server_dataset

logger = logging.getLogger(__name__)

TEACHER_PREFIX = "teacher:"  # checkpoint arrays of the federated teacher adapters


@dataclass
class ServerSplit:
    """The server's held-out rows as student features."""

    features: np.ndarray
    labels: np.ndarray
    num_classes: int
    majority_rate: float


def load_server_split(config: RunConfig) -> ServerSplit:
    """Embed the held-out rows (the task's test split, capped at server-eval-rows)."""
    data, teacher = config.data, config.teacher
    test = load_task(data.task, "test", data.data_dir, kmer=data.kmer, kmer_stride=data.kmer_stride)
    held_out = server_dataset(test, data.server_eval_rows, config.federation.seed)
    features = pooled_embeddings(
        teacher.model, held_out.texts, teacher.max_length, teacher.embed_batch_size
    )
    return ServerSplit(features, held_out.labels, held_out.num_classes, held_out.majority_rate())


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


@dataclass
class Projection:
    """The fitted federated PCA and what the query round reported."""

    weight: np.ndarray
    bias: np.ndarray
    partitions: dict[int, int]  # node ID -> partition ID
    clients: list[dict[str, Any]]  # each node's query metrics
    bytes_received: int


def fit_projection(
    grid: Grid, node_ids: Iterable[int], n_components: int, timeout: float
) -> Projection:
    """Federated PCA: pool each node's embedding moments and take the top components.

    The projection whitens: ``weight @ x + bias`` has zero mean and unit
    variance per component over all clients' train rows.
    """
    messages = [
        Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=n, message_type="query.stats")
        for n in node_ids
    ]
    answers = list(grid.send_and_receive(messages, timeout=timeout))
    for answer in answers:  # a node's bad setting or data stops the run before training
        problem = config_problem(answer)
        if problem is not None:
            raise ConfigError(f"node {answer.metadata.src_node_id}: {problem}")
    replies = [r for r in answers if not r.has_error()]
    if not replies:
        raise RuntimeError("no node answered the embedding-statistics query")
    pooled: MomentStats | None = None
    partitions: dict[int, int] = {}
    clients = []
    for reply in replies:
        record = reply.content.array_records["stats"]
        stats = MomentStats.from_arrays({k: a.numpy() for k, a in record.items()})
        pooled = stats if pooled is None else pooled + stats
        metrics = reply.content.metric_records["metrics"]
        partitions[int(reply.metadata.src_node_id)] = metric_int(metrics, "partition-id")
        clients.append({"node-id": int(reply.metadata.src_node_id), **dict(metrics)})
    assert pooled is not None
    weight, bias = pca_projection(pooled, n_components)
    logger.info("federated PCA fitted on %d rows from %d nodes", pooled.n, len(replies))
    return Projection(weight, bias, partitions, clients, _bytes(replies))


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


def student_record(student: QuantumStudent) -> ArrayRecord:
    """The student's parameters as a Flower ArrayRecord."""
    return ArrayRecord({k: Array(v) for k, v in student.get_arrays().items()})


def evaluate_global(
    student: QuantumStudent, arrays: ArrayRecord, split: ServerSplit
) -> dict[str, float]:
    """Cross-entropy (nats) and accuracy of ``arrays`` on the server split."""
    student.set_arrays({k: a.numpy() for k, a in arrays.items()})
    loss, accuracy = evaluate_student(student, split.features, split.labels)
    return {"loss": loss, "accuracy": accuracy}


def _bytes(messages: Iterable[Message]) -> int:
    """Bytes of the student's (and statistics') arrays; teacher adapters are counted apart."""
    return sum(
        rec.count_bytes()
        for m in messages
        if not m.has_error()
        for key, rec in m.content.array_records.items()
        if key != TEACHER_KEY
    )


def run_federation(grid: Grid, config: RunConfig, writer: ResultsWriter) -> dict[str, Any]:
    """Run the federation; write every round; return the summary."""
    fed, student_cfg = config.federation, config.student
    started = time.perf_counter()
    split = load_server_split(config)
    server_embed_seconds = time.perf_counter() - started
    node_ids = wait_for_nodes(grid, fed.min_nodes, fed.node_wait_seconds)
    query_started = time.perf_counter()
    projection = fit_projection(grid, node_ids, student_cfg.n_qubits, fed.round_timeout)
    partitions = projection.partitions
    query_seconds = time.perf_counter() - query_started
    # The server evaluates the global student exactly, never on shots or a QPU.
    device = student_cfg.device if parse_device(student_cfg.device).family == "pennylane" else None
    student = build_student(
        config, split.features.shape[1], split.num_classes, device=device or "default.qubit"
    )
    student.set_projection(projection.weight, projection.bias)
    arrays = student_record(student)
    strategy: StudentFedAvg = build_strategy(config)
    teachers = (
        TeacherFederation(config.teacher.fedavg_rounds)
        if config.teacher.federation == "fedavg"
        else None
    )

    first_round = 1
    if fed.resume_from:
        first_round = _resume(fed.resume_from, config, student, strategy, writer, teachers)
        arrays = student_record(student)
        initial = writer.rounds[0]["global"]
    else:
        initial = evaluate_global(student, arrays, split)
        strategy.observe_global(0, initial)
        writer.write_round(
            {
                "round": 0,
                "global": initial,
                "clients": sorted(projection.clients, key=lambda c: c["partition-id"]),
                "participants": sorted(partitions.values()),
                "failures": [],
                "seconds": time.perf_counter() - started,
                "server-embed-seconds": server_embed_seconds,
                "train-seconds": query_seconds,
                "bytes-sent": 0,
                "bytes-received": projection.bytes_received,
            }
        )
        logger.info(
            "round 0: global acc %.3f loss %.4f (server split majority %.3f)",
            initial["accuracy"],
            initial["loss"],
            split.majority_rate,
        )
    stop_reason = "max-rounds"
    rounds_run = first_round - 1
    for server_round in range(first_round, fed.num_rounds + 1):
        round_started = time.perf_counter()
        messages = list(strategy.configure_train(server_round, arrays, ConfigRecord({}), grid))
        if teachers is not None:
            teachers.attach(server_round, messages)
        replies = list(grid.send_and_receive(messages, timeout=fed.round_timeout))
        teacher_bytes_received = (
            teachers.collect(server_round, replies, messages) if teachers is not None else 0
        )
        silent = _silent_nodes(messages, replies, partitions)
        if silent:
            logger.warning(
                "round %d: %d of %d nodes did not reply within round-timeout=%s: partitions %s",
                server_round,
                len(silent),
                len(messages),
                fed.round_timeout,
                [f["partition-id"] for f in silent],
            )
        train_done = time.perf_counter()
        new_arrays, _ = strategy.aggregate_train(server_round, replies)
        usable = len(strategy.last_client_metrics)
        needed = min(fed.min_train_nodes, len(messages))
        if new_arrays is not None and usable >= needed:
            arrays = new_arrays
        else:
            logger.warning(
                "round %d: %d usable replies, min-train-nodes=%d: the global student is unchanged",
                server_round,
                usable,
                fed.min_train_nodes,
            )
        aggregate_done = time.perf_counter()
        global_metrics = evaluate_global(student, arrays, split)
        strategy.observe_global(server_round, global_metrics)
        evaluate_seconds = time.perf_counter() - aggregate_done
        clients = [
            {
                **c,
                "partition-id": partitions.get(c["node-id"], c.get("partition-id")),
                "budget-reason": strategy.last_plan.get(c["node-id"], {}).get("reason"),
            }
            for c in strategy.last_client_metrics
        ]
        record = {
            "round": server_round,
            "participants": sorted(partitions.get(n, n) for n in strategy.last_plan),
            "selection-reason": strategy.last_selection_reason,
            "budgets": {
                str(partitions.get(n, n)): p["steps"] for n, p in strategy.last_plan.items()
            },
            "budget-reasons": {
                str(partitions.get(n, n)): p["reason"] for n, p in strategy.last_plan.items()
            },
            "clients": sorted(clients, key=lambda c: c["partition-id"]),
            "quantum-cost": sum_costs(clients),
            "failures": [
                {**f, "partition-id": partitions.get(f["node-id"])} for f in strategy.last_failures
            ]
            + silent,
            "update-applied": bool(new_arrays is not None and usable >= needed),
            "global": global_metrics,
            "seconds": time.perf_counter() - round_started,
            "train-seconds": train_done - round_started,
            "aggregate-seconds": aggregate_done - train_done,
            "evaluate-seconds": evaluate_seconds,
            "bytes-sent": _bytes(messages),
            "bytes-received": _bytes(replies),
            "teacher-bytes-sent": record_bytes(messages),
            "teacher-bytes-received": teacher_bytes_received,
        }
        writer.write_round(record)
        checkpoint_arrays = {k: a.numpy() for k, a in arrays.items()}
        if teachers is not None and teachers.global_arrays is not None:
            checkpoint_arrays.update(
                {TEACHER_PREFIX + k: v for k, v in teachers.global_arrays.items()}
            )
        save_checkpoint(
            writer.path,
            server_round,
            checkpoint_arrays,
            strategy.state(),
            writer.rounds,
            teacher_state=teachers.state() if teachers is not None else None,
        )
        rounds_run = server_round
        logger.info(
            "round %d/%d: %d/%d clients replied, global acc %.3f loss %.4f, "
            "client student val loss %.4f vs teacher %.4f, %.1f s",
            server_round,
            fed.num_rounds,
            len(clients),
            len(messages),
            global_metrics["accuracy"],
            global_metrics["loss"],
            _mean(clients, "student-val-loss"),
            _mean(clients, "teacher-val-loss"),
            record["seconds"],
        )
        reason = strategy.should_stop(server_round, writer.rounds)
        if reason is not None:
            stop_reason = reason
            logger.info("stopping after round %d: %s", server_round, reason)
            break

    writer.save_arrays("student.npz", {k: a.numpy() for k, a in arrays.items()})
    writer.write_json("strategy.json", {"class": type(strategy).__name__, **strategy.state()})
    final = writer.rounds[-1]["global"]
    return {
        "status": "completed",
        "strategy": type(strategy).__name__,
        "rounds": rounds_run,
        "stop-reason": stop_reason,
        "initial-global": initial,
        "final-global": final,
        "server-majority-rate": split.majority_rate,
        "server-rows": int(len(split.labels)),
        "total-seconds": time.perf_counter() - started,
        "server-embed-seconds": server_embed_seconds,
        "total-client-steps": sum(c.get("steps", 0) for r in writer.rounds for c in r["clients"]),
        "total-client-compute-seconds": sum(
            c.get("compute-seconds", 0.0) for r in writer.rounds for c in r["clients"]
        ),
        "total-bytes-sent": sum(r["bytes-sent"] for r in writer.rounds),
        "total-bytes-received": sum(r["bytes-received"] for r in writer.rounds),
        "failures": sum(len(r.get("failures", [])) for r in writer.rounds),
        "quantum-cost": sum_costs([c for r in writer.rounds for c in r["clients"]]),
    }


def _resume(
    path: str,
    config: RunConfig,
    student: QuantumStudent,
    strategy: StudentFedAvg,
    writer: Any,
    teachers: TeacherFederation | None,
) -> int:
    """Load the checkpoint into the student, strategy and results; return the next round."""
    check_resume(path, config.federation.num_rounds)
    checkpoint = load_checkpoint(path)
    student_arrays = {
        k: v for k, v in checkpoint.arrays.items() if not k.startswith(TEACHER_PREFIX)
    }
    if teachers is not None and checkpoint.teacher_state is not None:
        teacher_arrays = {
            k[len(TEACHER_PREFIX) :]: v
            for k, v in checkpoint.arrays.items()
            if k.startswith(TEACHER_PREFIX)
        }
        teachers.load_state(checkpoint.teacher_state, teacher_arrays or None)
    try:
        student.set_arrays(student_arrays)
    except ValueError as err:
        raise ConfigError(
            f"resume-from={path!r}: {err}; use the circuit settings of the checkpointed run"
        ) from None
    strategy.load_state(checkpoint.strategy_state)
    restore_rng(checkpoint.rng)
    for record in checkpoint.rounds:
        writer.write_round(record)
    logger.info("resumed from %s after round %d", path, checkpoint.round)
    return checkpoint.round + 1


def _silent_nodes(
    messages: list[Message], replies: list[Message], partitions: dict[int, int]
) -> list[dict[str, Any]]:
    """A failure record for each node that was sent work and never replied."""
    answered = {reply_node(r, messages) for r in replies}
    return [
        {
            "node-id": node,
            "partition-id": partitions.get(node),
            "code": None,
            "reason": "no reply within round-timeout",
        }
        for node in (int(m.metadata.dst_node_id) for m in messages)
        if node not in answered
    ]


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in rows if key in r]
    return float(np.mean(values)) if values else float("nan")
