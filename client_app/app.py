"""The ClientApp: feature statistics, distillation rounds, local evaluation.

- ``query.stats``: moment statistics of this client's frozen-base embeddings,
  for the federated PCA the server fits once before training.
- ``train``: fine-tune the LoRA teacher for the epochs the server sent (on
  first participation, by default; see ``client_app.node``), then train the
  global student for exactly ``local-steps`` steps with
  ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE`` (plus
  FedProx's proximal term when ``proximal-mu > 0``) and reply with its arrays
  and a :class:`~config.messages.TrainReport`: the received global student's
  and the trained student's validation loss, and the teacher's, all on the
  local validation rows.
- ``evaluate``: the global student on the local validation rows.

Every reply carries the quantum cost of the work it did (executions, jobs,
shots, QPU and queue seconds, circuit wall time; see ``quantum.metering``),
on this node's device: its node config may set ``device`` for itself.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from client_app.host import node_host
from client_app.node import ClientNode
from client_app.state import TeacherView
from config.logs import configure_logging
from config.messages import (
    BACKEND_KEY,
    CONFIG_KEY,
    DEVICE_KEY,
    EXECUTION_MODE_KEY,
    INFO_KEY,
    METRICS_KEY,
    PROBE_STATS_KEY,
    STATS_KEY,
    STUDENT_KEY,
    TEACHER_KEY,
    EvaluateReport,
    StatsReport,
    TrainInstructions,
    TrainReport,
)
from llm.probe import ClassMoments, logit_metrics
from quantum.distill import evaluate_student, train_student
from quantum.projection import MomentStats

app = ClientApp(mods=[node_host])  # one process per node on the deployment engine


def _node(context: Context) -> ClientNode:
    configure_logging()
    return ClientNode(context)


def _arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {key: array.numpy() for key, array in record.items()}


def _record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({key: Array(value) for key, value in arrays.items()})


@app.query("stats")
def stats(msg: Message, context: Context) -> Message:
    """Reply with n, sum(x) and sum(x x^T) of the train embeddings (and, for the pooled
    teacher probe, the class moments of their unit-length rows)."""
    started = time.perf_counter()
    node = _node(context)
    train_features, _ = node.features()
    moments = MomentStats.from_features(train_features.astype(np.float64))
    report = StatsReport(
        partition_id=node.partition_id,
        num_examples=len(train_features),
        embed_seconds=node.node.slowdown * node.seconds.get("embed", 0.0),
        compute_seconds=node.node.slowdown * (time.perf_counter() - started),
        val_examples=len(node.splits[1]),
        seconds_per_shot=node.executor.seconds_per_shot,
        teacher_total_steps=node.held_teacher_steps,
    )
    content = RecordDict(
        {
            STATS_KEY: _record(moments.to_arrays()),
            METRICS_KEY: report.to_record(),
            INFO_KEY: ConfigRecord({DEVICE_KEY: node.runtime.device.name}),
        }
    )
    if node.config.teacher.pooled_probe:
        train_rows = node.splits[0]
        classes = ClassMoments.from_rows(train_features, train_rows.labels, train_rows.num_classes)
        content[PROBE_STATS_KEY] = _record(classes.to_arrays())
    return Message(content, reply_to=msg)


def _teacher(
    node: ClientNode, msg: Message, orders: TrainInstructions
) -> tuple[TeacherView, dict[str, np.ndarray] | None]:
    """This round's teacher, and the adapters to send back (teacher federation only)."""
    if not orders.teacher_round:
        if node.config.teacher.federation == "fedavg" and node.teacher_version < 1:
            raise RuntimeError(
                "teacher-federation=fedavg: this node holds no federated teacher (its state "
                "was lost); the server sends it the final average when it next trains"
            )
        return node.teacher(orders.teacher_epochs, orders.teacher_restore_steps), None
    records = msg.content.array_records
    received = _arrays(records[TEACHER_KEY]) if TEACHER_KEY in records else None
    return node.federated_teacher(
        received, orders.teacher_round, final=orders.teacher_final, epochs=orders.teacher_epochs
    )


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Distil the cached teacher into the global student for the given budget."""
    started = time.perf_counter()
    node = _node(context)
    orders = TrainInstructions.from_record(msg.content.config_records[CONFIG_KEY])
    slow = node.node.slowdown
    train_rows, val_rows = node.splits
    train_features, val_features = node.features()
    teacher, adapters = _teacher(node, msg, orders)
    student = node.student(
        train_features.shape[1],
        _arrays(msg.content.array_records[STUDENT_KEY]),
        orders.server_round,
        shots=orders.shots,
    )
    teacher_train_loss, _ = logit_metrics(teacher.train_logits, train_rows.labels)
    with student.executor.scope():  # one Runtime Batch or Session for the message's jobs
        global_val = evaluate_student(student, val_features, val_rows.labels)
        fit = _distil(node, student, teacher.train_logits, orders)
        val_loss, val_accuracy = evaluate_student(student, val_features, val_rows.labels)
    global_val_loss, global_val_accuracy = global_val
    report = TrainReport(
        partition_id=node.partition_id,
        num_examples=len(train_rows),
        steps=int(fit["steps"]),
        evaluations=int(fit["evaluations"]),
        student_val_loss=val_loss,
        student_val_accuracy=val_accuracy,
        global_val_loss=global_val_loss,
        global_val_accuracy=global_val_accuracy,
        teacher_val_loss=teacher.val_loss,
        teacher_val_accuracy=teacher.val_accuracy,
        teacher_untrained_val_loss=teacher.untrained_val_loss,
        probe_val_accuracy=node.probe_val_accuracy(),
        teacher_train_loss=teacher_train_loss,
        student_train_loss=fit["train_loss"],
        teacher_seconds=slow * teacher.seconds_this_round,
        teacher_steps=teacher.steps_this_round,
        teacher_total_steps=teacher.total_steps,
        teacher_restore_steps=teacher.restore_steps,
        teacher_cache_hits=node.cache_hits,
        teacher_version=teacher.version,
        embed_seconds=slow * node.seconds.get("embed", 0.0),
        student_seconds=slow * fit["seconds"],
        compute_seconds=slow * (time.perf_counter() - started),
        cost=student.meter.totals(),
    )
    return _train_reply(msg, student, report, adapters)


def _distil(
    node: ClientNode, student: Any, teacher_logits: np.ndarray, orders: TrainInstructions
) -> dict[str, float]:
    """The round's local distillation steps on the node's train rows (``train_student``)."""
    train_rows, _ = node.splits
    train_features, _ = node.features()
    return train_student(
        student,
        train_features,
        train_rows.labels,
        teacher_logits,
        steps=orders.local_steps,
        lr=orders.student_lr,
        projection_lr=orders.projection_lr,
        batch_size=node.config.student.batch_size,
        temperature=orders.temperature,
        alpha=orders.alpha,
        seed=(node.config.federation.seed, orders.server_round, node.partition_id),
        proximal_mu=orders.proximal_mu,
        optimizer=node.optimizer,
    )


def _train_reply(
    msg: Message, student: Any, report: TrainReport, adapters: dict[str, np.ndarray] | None
) -> Message:
    """The train reply: the local student, its report, its backend and, if sent, adapters."""
    content = RecordDict(
        {
            STUDENT_KEY: _record(student.get_arrays()),
            METRICS_KEY: report.to_record(),
            INFO_KEY: ConfigRecord(
                {
                    BACKEND_KEY: student.executor.backend_name,
                    EXECUTION_MODE_KEY: student.executor.execution_mode,
                }
            ),
        }
    )
    if adapters is not None:
        content[TEACHER_KEY] = _record(adapters)
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """The global student's cross-entropy (nats) and accuracy on local validation rows."""
    node = _node(context)
    _, val_rows = node.splits
    _, val_features = node.features()
    records = msg.content.config_records
    server_round = records[CONFIG_KEY].get("server-round", 0) if CONFIG_KEY in records else 0
    student = node.student(
        val_features.shape[1],
        _arrays(msg.content.array_records[STUDENT_KEY]),
        int(server_round),  # type: ignore[arg-type]
    )
    loss, accuracy = evaluate_student(student, val_features, val_rows.labels)
    report = EvaluateReport(
        num_examples=len(val_rows),
        student_val_loss=loss,
        student_val_accuracy=accuracy,
        cost=student.meter.totals(),
    )
    return Message(RecordDict({METRICS_KEY: report.to_record()}), reply_to=msg)
