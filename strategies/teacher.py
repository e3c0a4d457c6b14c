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

- :class:`ValidatedTeacher` (teacher federation only): a chunk per federated
  round while each new global teacher lowers the loss on the server's
  validation rows below the best teacher yet, the pooled probe the teachers
  start from included; the best is final. It is the one policy that reads
  the teacher every client distils from, on rows no client trains on.

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

from config.errors import ConfigError
from strategies.memory import ClientMemory


class TeacherPolicy:
    """Base: ``epochs`` in a client's first round, nothing after (:class:`TeacherOnce`).

    ``federated_rounds``: K with teacher federation (0: local teachers).
    """

    name = "once"
    #: Whether the round flow scores each federated teacher on the server's validation
    #: rows and hands the loss to :meth:`judge`.
    reads_server_val = False

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

    def judge(self, teacher_round: int, loss: float) -> bool:
        """Read the global teacher's loss on the server's validation rows (only policies
        that :attr:`reads_server_val`); True: its federation may go on."""
        return True

    @property
    def best(self) -> tuple[int, float] | None:
        """``(teacher round, loss)`` of the best global teacher judged (None: none judged)."""
        return None

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


class ValidatedTeacher(TeacherPolicy):
    """Teacher federation steered by the global teacher's loss on the server's validation rows.

    Each federated round fine-tunes one chunk of ``teacher-chunk-epochs``
    (within ``teacher-max-steps``) from the global teacher. After the round
    the server scores the new average on its validation rows
    (:meth:`judge`): the teacher federation goes on while each average lowers
    that loss by at least ``teacher-min-delta`` below the best teacher yet,
    the teachers' start (the pooled probe, round 0) included. The first
    average that does not ends it, and the best teacher is the final one:
    where fine-tuning did not beat the pooled probe, every client distils
    from the probe, whose logits it computes from the embeddings it holds.
    Needs ``teacher-federation=fedavg`` (only then does the server hold the
    teacher every client distils from).

    The losses read are kept as :attr:`scores` (``[teacher round, nats]``),
    saved and restored with the strategy.
    """

    name = "validated"
    reads_server_val = True

    def __init__(self, chunk_epochs: float, min_delta: float, federated_rounds: int) -> None:
        super().__init__(chunk_epochs, federated_rounds)
        self.min_delta = min_delta
        self.scores: list[tuple[int, float]] = []

    @property
    def best(self) -> tuple[int, float] | None:
        """``(teacher round, loss)`` of the best global teacher, the last one kept (None:
        none scored yet); an average within ``min_delta`` of it was not kept."""
        best = None
        for teacher_round, loss in self.scores:
            if best is None or loss < best[1] - self.min_delta:
                best = (teacher_round, loss)
        return best

    def decide(
        self, server_round: int, partition: int, client: ClientMemory | None
    ) -> tuple[float, str]:
        if server_round > self.federated_rounds:
            return 0.0, "the federated teacher is final"
        best = self.best
        if best is None:
            return self.epochs, f"federated round {server_round}: a first chunk"
        teacher_round, loss = best
        start = "the start" if teacher_round == 0 else f"the average of round {teacher_round}"
        return self.epochs, (
            f"federated round {server_round}: {start} is the best teacher yet, server val "
            f"loss {loss:.4f} nats"
        )

    def judge(self, teacher_round: int, loss: float) -> bool:
        """Record the global teacher of ``teacher_round`` (0: the start) and its loss on the
        server's validation rows; True when it is the new best by at least ``min_delta``
        (its federation may go on), False when the best teacher yet stays final."""
        best = self.best
        self.scores.append((teacher_round, float(loss)))
        return best is None or loss < best[1] - self.min_delta

    def state(self) -> dict[str, Any]:
        return {"scores": [list(s) for s in self.scores]}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.scores = [(int(r), float(loss)) for r, loss in state.get("scores", [])]


TEACHER_POLICIES = {"once": TeacherPolicy, "steered": SteeredTeacher, "validated": ValidatedTeacher}


def build_teacher_policy(config: Any) -> TeacherPolicy:
    """The ``teacher-policy`` of a ``RunConfig``."""
    policy, teacher = config.policy, config.teacher
    federated = federated_teacher_rounds(config)
    if policy.teacher_policy == "validated":
        if not federated:
            raise ConfigError(
                "teacher-policy='validated' scores the global teacher on the server's "
                "validation rows: it needs teacher-federation='fedavg' (for local teachers "
                "use teacher-policy='once' or 'steered')"
            )
        return ValidatedTeacher(policy.teacher_chunk_epochs, policy.teacher_min_delta, federated)
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
