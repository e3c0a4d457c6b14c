"""The ClientApp: feature statistics, distillation rounds, local evaluation.

- ``query.stats``: moment statistics of this client's frozen-base embeddings,
  for the federated PCA the server fits once before training.
- ``train``: on first participation fine-tune the LoRA teacher (cached for the
  run), then train the global student for exactly ``local-steps`` steps with
  ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE`` (plus
  FedProx's proximal term when ``proximal-mu > 0``) and reply with its arrays
  and metrics: the received global student's and the trained student's
  validation loss, and the teacher's, all on the local validation rows.
- ``evaluate``: the global student on the local validation rows.

Every reply carries the quantum cost of the work it did (executions, jobs,
shots, QPU and queue seconds, circuit wall time; see ``quantum.metering``),
on this node's device: its node config may set ``device`` for itself.
"""

from __future__ import annotations

import time

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client_app.node import ClientNode
from config.logs import configure_logging
from config.messages import (
    TEACHER_FINAL_KEY,
    TEACHER_KEY,
    TEACHER_ROUND_KEY,
    TEACHER_VERSION_KEY,
    TrainInstructions,
    metric_int,
)
from config.run_config import RunConfig
from llm.teacher import logit_metrics
from quantum.distill import evaluate_student, train_student
from quantum.projection import MomentStats
from quantum.student import QuantumStudent, build_student

app = ClientApp()


def _node(context: Context) -> ClientNode:
    configure_logging()
    # Files were checked by the ServerApp at start-up; the loader re-checks this node's copy.
    return ClientNode(context, RunConfig.from_flat(context.run_config, check_files=False))


def _student(node: ClientNode, msg: Message, in_features: int) -> QuantumStudent:
    train, _ = node.splits
    student = build_student(node.config, in_features, train.num_classes, device=node.device)
    record = msg.content.array_records["arrays"]
    student.set_arrays({key: array.numpy() for key, array in record.items()})
    return student


@app.query("stats")
def stats(msg: Message, context: Context) -> Message:
    """Reply with n, sum(x) and sum(x x^T) of the train embeddings."""
    started = time.perf_counter()
    node = _node(context)
    train_features, _ = node.features()
    moments = MomentStats.from_features(train_features.astype(np.float64))
    content = RecordDict(
        {
            "stats": ArrayRecord({k: Array(v) for k, v in moments.to_arrays().items()}),
            "metrics": MetricRecord(
                {
                    "partition-id": node.partition_id,
                    "num-examples": len(train_features),
                    "embed-seconds": node.seconds.get("embed", 0.0),
                    "compute-seconds": time.perf_counter() - started,
                }
            ),
        }
    )
    return Message(content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Distil the cached teacher into the global student for the given budget."""
    started = time.perf_counter()
    node = _node(context)
    orders = TrainInstructions.from_record(msg.content.config_records["config"])
    train_rows, val_rows = node.splits
    train_features, val_features = node.features()
    config = msg.content.config_records["config"]
    teacher_round = metric_int(config, TEACHER_ROUND_KEY) if TEACHER_ROUND_KEY in config else 0
    adapters = None
    if teacher_round:  # teacher federation: fine-tune (or load) the received adapters
        received = (
            {k: a.numpy() for k, a in msg.content.array_records[TEACHER_KEY].items()}
            if TEACHER_KEY in msg.content.array_records
            else None
        )
        teacher, adapters = node.federated_teacher(
            received, teacher_round, final=bool(config.get(TEACHER_FINAL_KEY, False))
        )
    else:
        teacher = node.teacher()
    student = _student(node, msg, train_features.shape[1])
    global_val_loss, global_val_accuracy = evaluate_student(student, val_features, val_rows.labels)
    teacher_train_loss, _ = logit_metrics(teacher.train_logits, train_rows.labels)
    fit = train_student(
        student,
        train_features,
        train_rows.labels,
        teacher.train_logits,
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
    val_loss, val_accuracy = evaluate_student(student, val_features, val_rows.labels)
    metrics = MetricRecord(
        {
            "num-examples": len(train_rows),
            "partition-id": node.partition_id,
            "student-val-loss": val_loss,
            "student-val-accuracy": val_accuracy,
            "global-val-loss": global_val_loss,
            "global-val-accuracy": global_val_accuracy,
            "teacher-val-loss": teacher.val_loss,
            "teacher-val-accuracy": teacher.val_accuracy,
            "teacher-untrained-val-loss": teacher.untrained_val_loss,
            "teacher-train-loss": teacher_train_loss,
            "student-train-loss": fit["train_loss"],
            "steps": int(fit["steps"]),
            "teacher-seconds": teacher.seconds_this_round,
            "teacher-cache-hits": node.cache_hits,
            TEACHER_VERSION_KEY: node.teacher_version,
            "embed-seconds": node.seconds.get("embed", 0.0),
            "student-seconds": fit["seconds"],
            "compute-seconds": time.perf_counter() - started,
            **student.meter.as_metrics(),
        }
    )
    arrays = ArrayRecord({k: Array(v) for k, v in student.get_arrays().items()})
    content = RecordDict({"arrays": arrays, "metrics": metrics})
    if adapters is not None:
        content[TEACHER_KEY] = ArrayRecord({k: Array(v) for k, v in adapters.items()})
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """The global student's cross-entropy (nats) and accuracy on local validation rows."""
    node = _node(context)
    _, val_rows = node.splits
    _, val_features = node.features()
    student = _student(node, msg, val_features.shape[1])
    loss, accuracy = evaluate_student(student, val_features, val_rows.labels)
    metrics = MetricRecord(
        {
            "num-examples": len(val_rows),
            "student-val-loss": loss,
            "student-val-accuracy": accuracy,
            **student.meter.as_metrics(),
        }
    )
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
