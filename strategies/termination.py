"""Termination rules: whether the run stops after a round, and why.

Each rule reads the run's round records (``rounds.jsonl``) and gives a reason
to stop or None; :class:`Termination` combines several, none firing before
``stop-min-rounds``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from config.errors import ConfigError
from config.messages import TrainReport


class TerminationRule:
    """Base: reads the run's round records (``rounds.jsonl``) and may give a reason to stop."""

    name = "never"

    def check(self, server_round: int, history: Sequence[Mapping[str, Any]]) -> str | None:
        """A reason to stop after ``server_round``, or None (the base never stops)."""
        return None

    def state(self) -> dict[str, Any]:
        """JSON-serialisable state (the rules here are functions of the history)."""
        return {}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state` returned."""


class MaxRounds(TerminationRule):
    """Stop after ``num_rounds`` rounds (the run loop ends there anyway; this names it)."""

    name = "max-rounds"

    def __init__(self, num_rounds: int) -> None:
        self.num_rounds = num_rounds

    def check(self, server_round, history):  # type: ignore[no-untyped-def]
        if server_round >= self.num_rounds:
            return f"max-rounds: {server_round} of {self.num_rounds} rounds run"
        return None


def client_reports(record: Mapping[str, Any]) -> list[TrainReport]:
    """The train reports of a round record's clients."""
    return [TrainReport.from_mapping(c) for c in record.get("clients", [])]


def _trained(history: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in history if r.get("round", 0) >= 1]


class TeacherGap(TerminationRule):
    """Stop when the student is within ``epsilon`` nats of the teacher.

    The gap is the mean over the last round's clients of their student
    validation loss minus their teacher validation loss (both cross-entropy
    in nats on the same rows).
    """

    name = "teacher-gap"

    def __init__(self, epsilon: float) -> None:
        self.epsilon = epsilon

    def check(self, server_round, history):  # type: ignore[no-untyped-def]
        rounds = _trained(history)
        if not rounds:
            return None
        gaps = [
            r.student_val_loss - r.teacher_val_loss
            for r in client_reports(rounds[-1])
            if math.isfinite(r.student_val_loss - r.teacher_val_loss)
        ]
        if gaps and float(np.mean(gaps)) <= self.epsilon:
            return (
                f"teacher-gap: mean student-teacher val loss gap {np.mean(gaps):.4f} "
                f"<= {self.epsilon} nats"
            )
        return None


class Plateau(TerminationRule):
    """Stop when the validation loss has not dropped by ``min_delta`` for ``patience`` rounds.

    The loss is the global student's on the server's validation split, never the test rows.
    """

    name = "plateau"

    def __init__(self, patience: int, min_delta: float) -> None:
        self.patience = patience
        self.min_delta = min_delta

    def check(self, server_round, history):  # type: ignore[no-untyped-def]
        losses = [r["val"]["loss"] for r in history if "val" in r]
        if len(losses) <= self.patience:
            return None
        best_before = min(losses[: -self.patience])
        recent = min(losses[-self.patience :])
        if recent > best_before - self.min_delta:
            return (
                f"plateau: validation loss {recent:.4f} not below {best_before:.4f} - "
                f"{self.min_delta} for {self.patience} rounds"
            )
        return None


class NoisePlateau(TerminationRule):
    """Stop when the last ``patience`` rounds improved less than the validation loss's noise.

    With ``L_t`` the global student's validation loss after round ``t``, the
    improvement of the last ``k = patience`` rounds is ``min(L before them) -
    min(L in them)``, and the noise is the median absolute round-to-round
    change ``|L_t - L_(t-1)|`` over the rounds so far (from round 2 on: round
    1's first drop is not noise). The rule fires when ``improvement <= z *
    noise``: the run has stopped improving by more than its own scatter, so
    one unlucky round cannot end it and a slow steady gain keeps it going.
    """

    name = "noise-plateau"

    def __init__(self, patience: int, noise_factor: float) -> None:
        self.patience = patience
        self.noise_factor = noise_factor

    @staticmethod
    def noise(losses: Sequence[float]) -> float:
        """The median absolute round-to-round change, from round 2 on (NaN if too few)."""
        changes = [abs(b - a) for a, b in zip(losses[1:], losses[2:], strict=False)]
        return float(np.median(changes)) if changes else math.nan

    def check(self, server_round, history):  # type: ignore[no-untyped-def]
        losses = [r["val"]["loss"] for r in history if "val" in r]
        if len(losses) < self.patience + 3:  # round 0, round 1 and at least one change before
            return None
        improvement = min(losses[: -self.patience]) - min(losses[-self.patience :])
        noise = self.noise(losses)
        if math.isfinite(noise) and improvement <= self.noise_factor * noise:
            return (
                f"noise-plateau: the last {self.patience} rounds improved the validation loss "
                f"by {improvement:.4f} nats, within {self.noise_factor:g} x its noise {noise:.4f}"
            )
        return None


def teacher_gaps(history: Sequence[Mapping[str, Any]]) -> list[float]:
    """Per trained round, what the global student still lacks against the teachers.

    The mean over the round's clients of the new global student's validation loss
    on the client's rows (Flower's evaluate phase, ``federated-val``) minus the
    client's teacher's (its newest train reply's ``teacher-val-loss``), nats.
    Without an evaluate phase, the train replies' ``global-val-loss`` (the global
    student the client started from) stands in. Rounds with no such client are left out.
    """
    teachers: dict[int, float] = {}
    gaps = []
    for record in _trained(history):
        reports = client_reports(record)
        for r in reports:
            if math.isfinite(r.teacher_val_loss):
                teachers[r.partition_id] = r.teacher_val_loss
        evaluated = (record.get("federated-val") or {}).get("clients") or {}
        pairs = [
            (float(v["loss"]), teachers[int(p)])
            for p, v in evaluated.items()
            if int(p) in teachers and math.isfinite(float(v["loss"]))
        ]
        if not evaluated:
            pairs = [
                (r.global_val_loss, teachers[r.partition_id])
                for r in reports
                if r.partition_id in teachers and math.isfinite(r.global_val_loss)
            ]
        if pairs:
            gaps.append(float(np.mean([student - teacher for student, teacher in pairs])))
    return gaps


class TeacherNoise(TerminationRule):
    """Stop when what is left to learn from the teachers is within its round-to-round noise.

    ``G_t`` is :func:`teacher_gaps`' figure after round ``t`` and the noise is
    the median ``|G_t - G_(t-1)|`` over the rounds so far (the first drop,
    from the first measured round to the second, is not noise). The rule fires when the
    global student is as good as the teachers within the noise (``G <= z x
    noise``), or when the last ``patience`` rounds closed the gap by no more than
    ``z x noise`` (``min(G before them) - min(G in them)``): the student has
    learned what it can from the teachers, and one unlucky round cannot end
    the run. It reads only clients' validation rows.
    """

    name = "teacher-noise"

    def __init__(self, patience: int, noise_factor: float) -> None:
        self.patience = patience
        self.noise_factor = noise_factor

    def check(self, server_round, history):  # type: ignore[no-untyped-def]
        gaps = teacher_gaps(history)
        if len(gaps) < self.patience + 3:  # the first gap, its drop and a change before
            return None
        noise = NoisePlateau.noise(gaps)
        if not math.isfinite(noise):
            return None
        bound = self.noise_factor * noise
        if gaps[-1] <= bound:
            return (
                f"teacher-noise: the global student is within {gaps[-1]:.4f} nats of the "
                f"teachers, inside {self.noise_factor:g} x the noise {noise:.4f}"
            )
        closed = min(gaps[: -self.patience]) - min(gaps[-self.patience :])
        if closed <= bound:
            return (
                f"teacher-noise: the last {self.patience} rounds closed the gap to the teachers "
                f"({gaps[-1]:.4f} nats) by {closed:.4f}, within {self.noise_factor:g} x "
                f"its noise {noise:.4f}"
            )
        return None


class DistanceStagnation(TerminationRule):
    """The paper's rule: the mean client-server loss distance stopped changing.

    Per round, ``d = mean |client student val loss - server validation loss|``; stop when
    ``|d_t - d_(t-1)| < delta`` for ``patience`` consecutive rounds. (The
    published code compares against a previous distance it resets to
    infinity every round, so there it never fires.)
    """

    name = "distance"

    def __init__(self, patience: int, delta: float) -> None:
        self.patience = patience
        self.delta = delta

    @staticmethod
    def distances(history: Sequence[Mapping[str, Any]]) -> list[float]:
        """The mean client-server loss distance of every trained round."""
        out = []
        for record in _trained(history):
            server = record["val"]["loss"]
            losses = [
                r.student_val_loss
                for r in client_reports(record)
                if math.isfinite(r.student_val_loss)
            ]
            if losses:
                out.append(float(np.mean([abs(x - server) for x in losses])))
        return out

    def check(self, server_round, history):  # type: ignore[no-untyped-def]
        d = self.distances(history)
        if len(d) <= self.patience:
            return None
        changes = [abs(d[i] - d[i - 1]) for i in range(len(d) - self.patience, len(d))]
        if all(c < self.delta for c in changes):
            return (
                f"distance: mean client-server loss distance changed by < {self.delta} "
                f"for {self.patience} rounds (now {d[-1]:.4f})"
            )
        return None


TERMINATIONS = (
    "teacher-gap",
    "teacher-noise",
    "plateau",
    "noise-plateau",
    "distance",
    "max-rounds",
)


class Termination:
    """Any of several rules, none before ``min_rounds``; the first that fires is the reason."""

    def __init__(self, rules: Sequence[TerminationRule], min_rounds: int) -> None:
        self.rules = list(rules)
        self.min_rounds = min_rounds

    def check(self, server_round: int, history: Sequence[Mapping[str, Any]]) -> str | None:
        """The first rule's reason to stop after ``server_round``, or None."""
        if server_round < self.min_rounds:
            return None
        for rule in self.rules:
            reason = rule.check(server_round, history)
            if reason is not None:
                return reason
        return None

    def state(self) -> dict[str, Any]:
        """Each rule's state, by name."""
        return {rule.name: rule.state() for rule in self.rules}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        for rule in self.rules:
            rule.load_state(state.get(rule.name, {}))


def parse_rules(text: str) -> list[str]:
    """``"teacher-gap, plateau"`` -> ``["teacher-gap", "plateau"]`` (checked)."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    for name in names:
        if name not in TERMINATIONS:
            raise ConfigError(
                f"termination={text!r}: unknown rule {name!r}; use a comma-separated list of "
                f"{', '.join(TERMINATIONS)}"
            )
    return names


def build_termination(config: Any) -> Termination:
    """The ``termination`` rules of a ``RunConfig``."""
    policy = config.policy
    makers: dict[str, Callable[[], TerminationRule]] = {
        "teacher-gap": lambda: TeacherGap(policy.stop_epsilon),
        "plateau": lambda: Plateau(policy.stop_patience, policy.stop_min_delta),
        "noise-plateau": lambda: NoisePlateau(policy.stop_patience, policy.stop_noise_factor),
        "teacher-noise": lambda: TeacherNoise(policy.stop_patience, policy.stop_noise_factor),
        "distance": lambda: DistanceStagnation(policy.stop_patience, policy.stop_distance_delta),
        "max-rounds": lambda: MaxRounds(config.federation.num_rounds),
    }
    return Termination(
        [makers[n]() for n in parse_rules(policy.termination)], policy.stop_min_rounds
    )
