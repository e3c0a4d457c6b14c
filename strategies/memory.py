"""What the server remembers of each client, and helpers the policies share."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from config.messages import TrainReport


@dataclass
class ClientMemory:
    """What the server knows of one client, from its last train reply.

    Losses are cross-entropy in nats on the client's validation rows, except
    ``student_train_loss`` (the distillation objective of its last steps) and
    ``teacher_train_loss`` (the teacher on its train rows), which only the
    reference rule reads. Seconds are the last reply's, except
    ``teacher_chunk_seconds`` and ``teacher_chunk_steps``, which describe the
    last teacher chunk the client trained, whenever that was.
    """

    budget: int
    rounds: int = 0
    last_round: int = 0
    partition_id: int = -1
    student_val_loss: float = math.nan
    teacher_val_loss: float = math.nan
    global_val_loss: float = math.nan
    student_train_loss: float = math.nan
    teacher_train_loss: float = math.nan
    student_seconds: float = math.nan
    num_examples: int = 0
    teacher_seconds: float = 0.0
    teacher_steps: int = 0
    teacher_total_steps: int = 0
    teacher_chunk_seconds: float = math.nan
    teacher_chunk_steps: int = 0
    # The teacher's validation loss untrained, then after each chunk that changed it.
    teacher_val_losses: list[float] = field(default_factory=list)
    embed_seconds: float = 0.0
    compute_seconds: float = math.nan
    # The global student after round ``evaluated_round`` on the client's validation rows
    # (Flower's evaluate phase, ``fraction-evaluate``); kept across train replies.
    evaluated_loss: float = math.nan
    evaluated_round: int = 0

    @property
    def measured(self) -> bool:
        """True once the client has replied with its losses."""
        return self.rounds > 0 and finite(self.student_val_loss, self.teacher_val_loss)

    @property
    def global_gap(self) -> float:
        """What the newest global student known still lacks against this client's
        teacher: its loss minus the teacher's, in nats on the client's validation rows.
        The evaluate phase's figure when it is at least as new as the last train reply
        (whose ``global_val_loss`` is the global student it started from), else that."""
        fresh = self.evaluated_round >= self.last_round and math.isfinite(self.evaluated_loss)
        return (self.evaluated_loss if fresh else self.global_val_loss) - self.teacher_val_loss

    @property
    def ratio(self) -> float:
        """Student over teacher validation loss (the paper's yardstick)."""
        return self.student_val_loss / self.teacher_val_loss

    @classmethod
    def from_reply(
        cls, report: TrainReport, server_round: int, before: ClientMemory | None
    ) -> ClientMemory:
        """The memory after a train reply (``before``: what was known)."""
        # A chunk's speed is known only when it was trained there (not read from the cache).
        trained_here = report.teacher_steps > 0 and report.teacher_seconds > 0
        return cls(
            budget=report.steps,
            rounds=(before.rounds if before else 0) + 1,
            last_round=server_round,
            partition_id=report.partition_id,
            student_val_loss=report.student_val_loss,
            teacher_val_loss=report.teacher_val_loss,
            global_val_loss=report.global_val_loss,
            student_train_loss=report.student_train_loss,
            teacher_train_loss=report.teacher_train_loss,
            student_seconds=report.student_seconds,
            num_examples=report.num_examples,
            teacher_seconds=report.teacher_seconds,
            teacher_steps=report.teacher_steps,
            teacher_total_steps=report.teacher_total_steps,
            teacher_chunk_seconds=(
                report.teacher_seconds
                if trained_here
                else (before.teacher_chunk_seconds if before else math.nan)
            ),
            teacher_chunk_steps=(
                report.teacher_steps
                if trained_here
                else (before.teacher_chunk_steps if before else 0)
            ),
            teacher_val_losses=_teacher_history(report, before),
            embed_seconds=report.embed_seconds,
            compute_seconds=report.compute_seconds,
            evaluated_loss=before.evaluated_loss if before else math.nan,
            evaluated_round=before.evaluated_round if before else 0,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (NaN becomes None)."""
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClientMemory:
        """The inverse of :meth:`to_dict`."""
        names = {f.name for f in fields(cls)}
        values: dict[str, Any] = {
            k: (math.nan if v is None else v) for k, v in data.items() if k in names
        }
        return cls(**values)


def _teacher_history(report: TrainReport, before: ClientMemory | None) -> list[float]:
    """The teacher's validation losses, one per version of it (a new one when its steps grew)."""
    history = list(before.teacher_val_losses) if before else []
    previous = before.teacher_total_steps if before else 0
    if (
        not history
        and report.teacher_total_steps
        and math.isfinite(report.teacher_untrained_val_loss)
    ):
        history.append(report.teacher_untrained_val_loss)  # before its first chunk
    if report.teacher_total_steps != previous or not history:
        history.append(report.teacher_val_loss)
    return history


def finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def client_rng(seed: int, server_round: int, partition: int = 0) -> np.random.Generator:
    """A generator seeded by (seed, round, client): the same draw in every run and resume."""
    return np.random.default_rng([seed, server_round, partition])
