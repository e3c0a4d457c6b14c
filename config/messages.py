"""What the server tells a client each round: one definition, both directions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flwr.app import ConfigRecord

# Teacher federation (teacher-federation=fedavg): the ArrayRecord of LoRA
# adapters and head in train messages and replies, the config keys that say
# what a client does with it, and the reply metric naming its teacher round.
TEACHER_KEY = "teacher"
TEACHER_ROUND_KEY = "teacher-round"  # 0: no teacher work this round
TEACHER_FINAL_KEY = "teacher-final"  # load the final average, do not train
TEACHER_VERSION_KEY = "teacher-version"


def _number(record: Mapping[str, Any], key: str) -> float:
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"message field {key!r} should be a number, got {value!r}")
    return value


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
    """

    server_round: int
    local_steps: int
    student_lr: float
    projection_lr: float
    temperature: float
    alpha: float
    proximal_mu: float = 0.0

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
        )


def metric_int(record: Mapping[str, Any], key: str) -> int:
    """An integer metric of a reply's MetricRecord."""
    return int(_number(record, key))


def metric_float(record: Mapping[str, Any], key: str) -> float:
    """A float metric of a MetricRecord."""
    return float(_number(record, key))
