"""What travels between server and clients: one definition for both directions.

Downlink: :class:`TrainInstructions`, a client's orders for one round (its
``ConfigRecord``). Uplink: :class:`StatsReport` (the ``query.stats`` reply),
:class:`TrainReport` (a ``train`` reply) and :class:`EvaluateReport`, each a
``MetricRecord``. This module is the one place where metric and config keys
are spelled; everyone else reads and writes these dataclasses.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flwr.app import ConfigRecord, MetricRecord

# Teacher federation (teacher-federation=fedavg): the ArrayRecord of LoRA
# adapters and head in train messages and replies, and the config keys that say
# what a client does with it.
TEACHER_KEY = "teacher"
TEACHER_ROUND_KEY = "teacher-round"  # 0: no teacher work this round
TEACHER_FINAL_KEY = "teacher-final"  # load the final average, do not train
#: The ArrayRecord of the student in train messages and replies, and of the statistics.
STUDENT_KEY = "arrays"
STATS_KEY = "stats"
#: A ``query.stats`` reply's class moments of its unit embeddings (``llm.probe.ClassMoments``),
#: sent when the run's teachers start from the pooled probe (``teacher-probe=pooled``).
PROBE_STATS_KEY = "probe-stats"
METRICS_KEY = "metrics"
CONFIG_KEY = "config"
#: A train reply's ConfigRecord of text facts: ``backend``, what ran its circuits.
INFO_KEY = "node-info"
BACKEND_KEY = "backend"
#: node-info: the Qiskit Runtime execution mode of the reply's jobs (``local``: no jobs).
EXECUTION_MODE_KEY = "execution-mode"
#: node-info of a ``query.stats`` reply: the device the node runs its student on.
DEVICE_KEY = "device"

#: Reply-metric key of each quantum cost figure (``quantum.metering.CostMeter`` field -> key).
COST_METRICS = {
    "executions": "quantum-executions",
    "jobs": "quantum-jobs",
    "shots": "quantum-shots",
    "qpu_seconds": "qpu-seconds",
    "queue_seconds": "queue-seconds",
    "wall_seconds": "quantum-seconds",
    "estimated_qpu_seconds": "estimated-qpu-seconds",
}

_Report = TypeVar("_Report", bound="_MetricReport")


def teacher_steps(epochs: float, rows: int, batch_size: int) -> int:
    """Optimizer steps that ``epochs`` of teacher fine-tuning over ``rows`` train rows
    take: the one conversion a client trains by and the server checks its reply by."""
    return math.ceil(epochs * rows / batch_size) if epochs > 0 else 0


def _number(record: Mapping[str, Any], key: str) -> float:
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"message field {key!r} should be a number, got {value!r}")
    return value


def _metric(key: str, default: Any = dataclasses.MISSING) -> Any:
    return field(default=default, metadata={"key": key})


class _MetricReport:
    """A flat record of numbers: each field's ``metadata["key"]`` is its metric key."""

    def to_dict(self) -> dict[str, Any]:
        """``{metric key: value}`` (ints and floats), quantum cost figures flattened in."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name == "cost":
                out.update({COST_METRICS[k]: v for k, v in value.items()})
            else:
                out[f.metadata["key"]] = value
        return out

    def to_record(self) -> MetricRecord:
        """As a Flower MetricRecord, without the figures that were not measured (NaN).

        The reader's default for such a field is NaN again (:meth:`from_mapping`), and
        the server can hold every metric that is sent to being a finite number.
        """
        return MetricRecord(
            {
                k: v
                for k, v in self.to_dict().items()
                if not (isinstance(v, float) and math.isnan(v))
            }
        )

    @classmethod
    def from_mapping(cls: type[_Report], metrics: Mapping[str, Any]) -> _Report:
        """Read a MetricRecord (or a ``rounds.jsonl`` client entry) that :meth:`to_dict` wrote.

        Fields without a default must be present; the others default when absent.

        Raises
        ------
        ValueError
            Naming the first missing required key, or a value that is not a number.
        """
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name == "cost":
                values["cost"] = {
                    name: float(_number(metrics, key))
                    for name, key in COST_METRICS.items()
                    if key in metrics
                }
                continue
            key = f.metadata["key"]
            if key not in metrics:
                if f.default is dataclasses.MISSING:
                    raise ValueError(f"reply metric {key!r} is missing")
                continue
            try:
                number = _number(metrics, key)
            except TypeError as err:
                raise ValueError(str(err)) from None
            values[f.name] = int(number) if f.type == "int" else float(number)
        return cls(**values)


@dataclass(frozen=True)
class StatsReport(_MetricReport):
    """A ``query.stats`` reply's metrics (the statistics travel as an ArrayRecord)."""

    partition_id: int = _metric("partition-id")
    num_examples: int = _metric("num-examples")
    embed_seconds: float = _metric("embed-seconds", 0.0)
    compute_seconds: float = _metric("compute-seconds", 0.0)
    val_examples: int = _metric("val-examples", 0)
    seconds_per_shot: float = _metric("seconds-per-shot", 0.0)
    #: Fine-tuning steps of the teacher the node holds (0: none, e.g. a restarted node).
    teacher_total_steps: int = _metric("teacher-total-steps", 0)


@dataclass(frozen=True)
class TrainReport(_MetricReport):
    """A ``train`` reply's metrics.

    Losses are cross-entropy in nats on the client's own validation rows, except
    ``student_train_loss`` (the distillation objective of its last steps) and
    ``teacher_train_loss`` (the teacher on its train rows). ``global_*`` is the
    received global student before local training. Seconds are wall seconds of
    this message's work (a node with a ``slowdown`` reports them multiplied by
    it); ``cost`` holds the quantum cost figures of :data:`COST_METRICS`.
    ``steps`` are the student steps the client actually ran (Adam steps, COBYLA
    evaluations, SPSA iterations) and ``evaluations`` the objective evaluations
    they took; ``teacher_steps`` the teacher's fine-tuning steps in this message
    (its new chunk), ``teacher_restore_steps`` the steps it ran to rebuild a
    teacher it had lost, and ``teacher_total_steps`` all the teacher it holds
    has had. ``probe_val_accuracy`` is a logistic-regression probe of the frozen
    base's embeddings of the client's train rows, on its validation rows: the
    teacher's yardstick.
    """

    partition_id: int = _metric("partition-id")
    num_examples: int = _metric("num-examples")
    steps: int = _metric("steps")
    evaluations: int = _metric("evaluations", 0)
    student_val_loss: float = _metric("student-val-loss", math.nan)
    student_val_accuracy: float = _metric("student-val-accuracy", math.nan)
    global_val_loss: float = _metric("global-val-loss", math.nan)
    global_val_accuracy: float = _metric("global-val-accuracy", math.nan)
    teacher_val_loss: float = _metric("teacher-val-loss", math.nan)
    teacher_val_accuracy: float = _metric("teacher-val-accuracy", math.nan)
    teacher_untrained_val_loss: float = _metric("teacher-untrained-val-loss", math.nan)
    probe_val_accuracy: float = _metric("probe-val-accuracy", math.nan)
    teacher_train_loss: float = _metric("teacher-train-loss", math.nan)
    student_train_loss: float = _metric("student-train-loss", math.nan)
    teacher_seconds: float = _metric("teacher-seconds", 0.0)
    teacher_steps: int = _metric("teacher-steps", 0)
    teacher_total_steps: int = _metric("teacher-total-steps", 0)
    teacher_restore_steps: int = _metric("teacher-restore-steps", 0)
    teacher_cache_hits: int = _metric("teacher-cache-hits", 0)
    teacher_version: int = _metric("teacher-version", 0)
    embed_seconds: float = _metric("embed-seconds", 0.0)
    student_seconds: float = _metric("student-seconds", 0.0)
    compute_seconds: float = _metric("compute-seconds", 0.0)
    cost: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluateReport(_MetricReport):
    """An ``evaluate`` reply's metrics: the global student on local validation rows."""

    num_examples: int = _metric("num-examples")
    student_val_loss: float = _metric("student-val-loss")
    student_val_accuracy: float = _metric("student-val-accuracy")
    cost: dict[str, float] = field(default_factory=dict)


#: The metric keys of a train reply, by field name (for readers of ``rounds.jsonl``).
TRAIN_KEYS = {f.name: f.metadata["key"] for f in dataclasses.fields(TrainReport) if f.metadata}


@dataclass(frozen=True)
class TrainInstructions:
    """A client's orders for one round (its ``ConfigRecord`` under ``"config"``).

    Attributes
    ----------
    server_round : int
    local_steps : int
        Student optimizer steps to run, exactly.
    student_lr, projection_lr : float
        Adam learning rates of the circuit and of a trainable projection.
    temperature : float
        Distillation temperature T.
    alpha : float
        Weight of the KL term; ``1 - alpha`` weighs the cross-entropy.
    proximal_mu : float
        FedProx: weight of ``mu/2 ||w - w_global||^2`` (0 = plain local training).
    teacher_epochs : float
        Epochs (over the client's train rows) to fine-tune its teacher further
        this round (with teacher federation: the received global adapters); 0
        keeps it as it is. The client runs :func:`teacher_steps` of them, and
        not one more.
    teacher_restore_steps : int
        Steps to rebuild a teacher the client lost (a restarted node, a resumed
        run): the steps the server knows its teacher had. A client that still
        holds them runs none.
    teacher_round : int
        Teacher federation: the teacher round this message belongs to (0: none).
    teacher_final : bool
        Teacher federation: load the final averaged adapters, do not train them.
    shots : int
        Shots per row on a shot-based device this round (0: the node's ``shots``).
    """

    server_round: int
    local_steps: int
    student_lr: float
    projection_lr: float
    temperature: float
    alpha: float
    proximal_mu: float = 0.0
    teacher_epochs: float = 0.0
    teacher_restore_steps: int = 0
    teacher_round: int = 0
    teacher_final: bool = False
    shots: int = 0

    def to_record(self) -> ConfigRecord:
        """As a Flower ConfigRecord (keys in run-config style)."""
        return ConfigRecord(
            {
                "server-round": self.server_round,
                "local-steps": self.local_steps,
                "student-lr": self.student_lr,
                "projection-lr": self.projection_lr,
                "temperature": self.temperature,
                "alpha": self.alpha,
                "proximal-mu": self.proximal_mu,
                "teacher-epochs": self.teacher_epochs,
                "teacher-restore-steps": self.teacher_restore_steps,
                TEACHER_ROUND_KEY: self.teacher_round,
                TEACHER_FINAL_KEY: self.teacher_final,
                "shots": self.shots,
            }
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> TrainInstructions:
        """Read the record :meth:`to_record` wrote."""
        return cls(
            server_round=int(_number(record, "server-round")),
            local_steps=int(_number(record, "local-steps")),
            student_lr=float(_number(record, "student-lr")),
            projection_lr=float(_number(record, "projection-lr")),
            temperature=float(_number(record, "temperature")),
            alpha=float(_number(record, "alpha")),
            proximal_mu=float(_number(record, "proximal-mu")),
            teacher_epochs=float(_number(record, "teacher-epochs")),
            teacher_restore_steps=(
                int(_number(record, "teacher-restore-steps"))
                if "teacher-restore-steps" in record
                else 0
            ),
            teacher_round=int(_number(record, TEACHER_ROUND_KEY)),
            teacher_final=bool(record[TEACHER_FINAL_KEY]),
            shots=int(_number(record, "shots")) if "shots" in record else 0,
        )
