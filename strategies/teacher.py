"""Teacher policies: how many more epochs each client fine-tunes its LLM teacher this round.

Fine-tuning the teacher is most of a client's compute (about two thirds in the
default run), so the guided strategy steers it too:

- :class:`TeacherOnce` (FedAvg's and the paper's behaviour): ``teacher-epochs``
  in the first round a client trains, nothing after.
- :class:`SteeredTeacher`: a chunk of ``teacher-chunk-epochs`` in the first
  round, then one more chunk in a round the client trains only while it pays,
  read from the client's last reply (validation losses, nats):

  - the teacher is still improving: its last chunk lowered its validation
    loss by at least ``teacher-min-delta``; a teacher that stopped improving
    has converged and is not trained again;
  - and the teacher has had fewer than ``teacher-epochs`` in all.

A rule that also paused a teacher once its student matched it on the
client's validation rows was tried and dropped: on small non-IID partitions
the student matches a weak teacher early by learning the local labels, and
on the benchmark federation (``bench/compare_strategies.py``, one seed) the
global student then stayed 5-7 validation points below FedAvg's.

With teacher federation (``teacher-federation=fedavg``) the same decisions
apply in the K = ``teacher-fedavg-rounds`` federated rounds, where a chunk
fine-tunes the received global adapters: :class:`TeacherOnce` gives
``teacher-epochs`` in each of them, as every client fine-tunes the new average.
After round K the global teacher is final and every budget is 0.

Each policy has one decision method, :meth:`TeacherPolicy.decide`, and
``state()`` / ``load_state()`` (their decisions are functions of the client's
memory, so the state is empty).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from strategies.memory import ClientMemory


class TeacherPolicy:
    """Base: ``epochs`` in a client's first round, nothing after (:class:`TeacherOnce`).

    ``federated_rounds``: K with teacher federation (0: local teachers).
    """

    name = "once"

    def __init__(self, epochs: float, federated_rounds: int = 0) -> None:
        self.epochs = epochs
        self.federated_rounds = federated_rounds

    def decide(
        self, server_round: int, partition: int, client: ClientMemory | None
    ) -> tuple[float, str]:
        """``(epochs, reason)`` of teacher fine-tuning for ``partition`` this round."""
        if self.federated_rounds:
            if server_round > self.federated_rounds:
                return 0.0, "the federated teacher is final"
            return self.epochs, f"federated round {server_round} of {self.federated_rounds}"
        if client is None or client.teacher_total_steps == 0:
            return self.epochs, "first participation"
        return 0.0, "kept"

    def end_federation(self, rounds: int) -> None:
        """The federated teacher is final after round ``rounds`` (an early end, or a
        resumed run's teacher state): no later round fine-tunes it."""
        if self.federated_rounds:
            self.federated_rounds = min(self.federated_rounds, rounds)

    def state(self) -> dict[str, Any]:
        """JSON-serialisable state (none: decisions follow from the client's memory)."""
        return {}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state` returned."""


TeacherOnce = TeacherPolicy


def teacher_epochs_done(client: ClientMemory, batch_size: int) -> float:
    """Epochs of fine-tuning the client's teacher has had (its steps over steps per epoch)."""
    per_epoch = max(1, math.ceil(client.num_examples / batch_size)) if client.num_examples else 0
    return client.teacher_total_steps / per_epoch if per_epoch else 0.0


class SteeredTeacher(TeacherPolicy):
    """Chunks while they pay (see the module docstring).

    Parameters
    ----------
    max_epochs : float
        ``teacher-epochs``: the most a teacher is trained in all.
    chunk_epochs : float
        ``teacher-chunk-epochs``: one round's chunk.
    min_delta : float
        ``teacher-min-delta``: the smallest drop of the teacher's validation
        loss by its last chunk (nats) that makes another chunk worth it.
    batch_size : int
        ``teacher-batch-size``, to count the epochs a client's steps make.
    """

    name = "steered"

    def __init__(
        self,
        max_epochs: float,
        chunk_epochs: float,
        min_delta: float,
        batch_size: int,
        federated_rounds: int = 0,
    ) -> None:
        super().__init__(max_epochs, federated_rounds)
        self.chunk_epochs = chunk_epochs
        self.min_delta = min_delta
        self.batch_size = batch_size

    def decide(
        self, server_round: int, partition: int, client: ClientMemory | None
    ) -> tuple[float, str]:
        if self.federated_rounds and server_round > self.federated_rounds:
            return 0.0, "the federated teacher is final"
        if client is None or client.teacher_total_steps == 0:
            return min(self.chunk_epochs, self.epochs), "first chunk"
        done = teacher_epochs_done(client, self.batch_size)
        if done >= self.epochs - 1e-9:
            return 0.0, f"kept: {done:.2f} of {self.epochs:g} epochs done"
        losses = client.teacher_val_losses
        if len(losses) >= 2 and losses[-2] - losses[-1] < self.min_delta:
            drop = losses[-2] - losses[-1]
            return 0.0, f"converged: last chunk lowered its val loss by {drop:.4f} nats"
        # What is left, rounded down to 1e-4 epochs so the client's ceil() stays within it.
        chunk = min(self.chunk_epochs, math.floor((self.epochs - done) * 1e4) / 1e4)
        return chunk, f"still improving: {done:.2f} epochs done, {chunk:g} more"


TEACHER_POLICIES = {"once": TeacherPolicy, "steered": SteeredTeacher}


def build_teacher_policy(config: Any) -> TeacherPolicy:
    """The ``teacher-policy`` of a ``RunConfig``."""
    policy, teacher = config.policy, config.teacher
    federated = federated_teacher_rounds(config)
    if policy.teacher_policy == "steered":
        return SteeredTeacher(
            teacher.epochs,
            policy.teacher_chunk_epochs,
            policy.teacher_min_delta,
            teacher.batch_size,
            federated,
        )
    return TeacherPolicy(teacher.epochs, federated)


def federated_teacher_rounds(config: Any) -> int:
    """K, the rounds whose teacher adapters are federated (0 with local teachers)."""
    teacher = config.teacher
    return int(teacher.fedavg_rounds) if teacher.federation == "fedavg" else 0
