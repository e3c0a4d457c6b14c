"""The guided strategy's three decisions, each a small policy with serialisable state.

- **Steps** (:data:`STEP_POLICIES`): each selected client's local optimizer
  steps. The five ratio rules read ``r = student val loss / teacher val loss``
  from the client's last reply (both cross-entropy in nats on the client's own
  validation rows) and move the client's last budget ``b``:

  ================  ==============================  ==============================
  rule              ours (raises and lowers)        the published code (raise only)
  ================  ==============================  ==============================
  incremental       ``b + b0 (r - 1)``              ``b + int(b (r - 1))``
  dynamic-weighted  ``b (1/2 + r/2)``               ``int(b/2 + b r / 2)``
  logarithmic       ``b (1 + ln r)``                ``b + int(ln(1 + r) b)``
  adaptive          ``b r``                         ``int(b r)``
  hybrid            ``b + clip(b (r - 1), +-inc)``  ``b + min(int(b r), inc)``
  ================  ==============================  ==============================

  ``b0`` is ``local-steps``. Ours are rounded to the nearest integer and kept
  in ``[min-steps, max-steps]``; they lower a budget when the student beats
  its teacher (``r < 1``). :class:`ReferenceRule` keeps the published
  behaviour (see its docstring). :class:`BanditSteps` instead learns which
  budget buys the most validation-loss reduction per compute second.
- **Selection** (:data:`SELECTIONS`): which connected nodes train.
- **Termination** (:data:`TERMINATIONS`): whether the run stops after a round.

Every policy has one decision method, and ``state()`` / ``load_state()``
that round-trip through JSON.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from config.errors import ConfigError


@dataclass
class ClientMemory:
    """What the server knows of one client, from its last train reply.

    Losses are cross-entropy in nats on the client's validation rows, except
    ``student_train_loss`` (the distillation objective of its last steps) and
    ``teacher_train_loss`` (the teacher on its train rows), which only the
    reference rule reads.
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

    @property
    def measured(self) -> bool:
        """True once the client has replied with its losses."""
        return self.rounds > 0 and _finite(self.student_val_loss, self.teacher_val_loss)

    @property
    def ratio(self) -> float:
        """Student over teacher validation loss (the paper's yardstick)."""
        return self.student_val_loss / self.teacher_val_loss

    @classmethod
    def from_reply(
        cls, metrics: Mapping[str, Any], server_round: int, before: ClientMemory | None
    ) -> ClientMemory:
        """The memory after a reply's ``metrics`` (``before``: what was known)."""

        def get(key: str) -> float:
            value = metrics.get(key)
            return float(value) if isinstance(value, int | float) else math.nan

        return cls(
            budget=int(metrics.get("steps", before.budget if before else 0)),
            rounds=(before.rounds if before else 0) + 1,
            last_round=server_round,
            partition_id=int(metrics.get("partition-id", -1)),
            student_val_loss=get("student-val-loss"),
            teacher_val_loss=get("teacher-val-loss"),
            global_val_loss=get("global-val-loss"),
            student_train_loss=get("student-train-loss"),
            teacher_train_loss=get("teacher-train-loss"),
            student_seconds=get("student-seconds"),
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


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def _node_rng(seed: int, server_round: int, node_id: int = 0) -> np.random.Generator:
    # Node IDs are unsigned 64-bit: split them into 32-bit words for the seed sequence.
    return np.random.default_rng([seed, server_round, node_id & 0xFFFFFFFF, node_id >> 32])


# ---------------------------------------------------------------- steps
class StepPolicy:
    """Base: decides a selected client's step budget; may learn from replies."""

    name = "fixed"

    def __init__(self, base_steps: int, min_steps: int, max_steps: int) -> None:
        self.base_steps = base_steps
        self.min_steps = min_steps
        self.max_steps = max_steps

    def decide(
        self, server_round: int, node_id: int, client: ClientMemory | None
    ) -> tuple[int, str]:
        """``(steps, reason)`` for ``node_id`` this round (``client``: None if never seen)."""
        return self.base_steps, "fixed"

    def observe(self, node_id: int, client: ClientMemory) -> None:  # noqa: B027 - optional hook
        """Learn from a reply (the bandit does; the rules need not)."""

    def clamp(self, steps: float) -> int:
        """Round to the nearest integer inside ``[min-steps, max-steps]``."""
        return int(min(max(round(steps), self.min_steps), self.max_steps))

    def state(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        return {}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state` returned."""


RatioRule = Callable[[float, float, int, int], float]

#: Our rules: (budget, ratio, base budget, max increment) -> new budget, before clamping.
RATIO_RULES: dict[str, RatioRule] = {
    "incremental": lambda b, r, b0, inc: b + b0 * (r - 1.0),
    "dynamic-weighted": lambda b, r, b0, inc: b * (0.5 + 0.5 * r),
    "logarithmic": lambda b, r, b0, inc: b * (1.0 + math.log(r)),
    "adaptive": lambda b, r, b0, inc: b * r,
    "hybrid": lambda b, r, b0, inc: b + min(max(b * (r - 1.0), -inc), inc),
}


class RatioSteps(StepPolicy):
    """One of the five ratio rules (see the module docstring), bounded, up or down."""

    def __init__(
        self, rule: str, base_steps: int, min_steps: int, max_steps: int, max_increment: int
    ) -> None:
        super().__init__(base_steps, min_steps, max_steps)
        self.name = rule
        self.rule = RATIO_RULES[rule]
        self.max_increment = max_increment

    def decide(
        self, server_round: int, node_id: int, client: ClientMemory | None
    ) -> tuple[int, str]:
        if client is None or not client.measured or client.teacher_val_loss <= 0:
            return self.clamp(self.base_steps), "first participation"
        ratio = client.ratio
        steps = self.clamp(self.rule(client.budget, ratio, self.base_steps, self.max_increment))
        return steps, f"{self.name}: ratio {ratio:.3f}, {client.budget} -> {steps}"


#: The published code's rules on (budget, ratio, max increment), integer arithmetic as there.
REFERENCE_RULES: dict[str, Callable[[int, float, int], int]] = {
    "incremental": lambda b, r, inc: b + int(b * (r - 1)),
    "dynamic-weighted": lambda b, r, inc: int(b * 0.5 + b * 0.5 * r),
    "logarithmic": lambda b, r, inc: b + int(math.log(1 + r) * b),
    "adaptive": lambda b, r, inc: int(b * r),
    "hybrid": lambda b, r, inc: b + min(int(b * r), inc),
}


class ReferenceRule(StepPolicy):
    """The published code's budget rule, faithfully.

    From the third round on, and only when the client's raw student training
    loss (the distillation objective of its last steps) exceeds its teacher's
    raw training loss, the budget becomes ``min(rule(b, r), max-steps)`` with
    ``r`` their ratio; otherwise it stays. It never lowers a budget, and it
    compares losses in different units (the objective includes the ``T^2``
    KL term); this is the behaviour our rules correct.
    """

    def __init__(self, rule: str, base_steps: int, max_steps: int, max_increment: int) -> None:
        super().__init__(base_steps, 0, max_steps)
        self.name = f"reference-{rule}"
        self.rule = REFERENCE_RULES[rule]
        self.max_increment = max_increment

    def decide(
        self, server_round: int, node_id: int, client: ClientMemory | None
    ) -> tuple[int, str]:
        if client is None or client.rounds == 0:
            return self.base_steps, "first participation"
        student, teacher = client.student_train_loss, client.teacher_train_loss
        if server_round < 3 or not _finite(student, teacher) or student <= teacher:
            return client.budget, "kept"
        ratio = student / teacher if teacher > 0 else 1.0
        steps = min(self.rule(client.budget, ratio, self.max_increment), self.max_steps)
        return steps, f"{self.name}: raw ratio {ratio:.3f}, {client.budget} -> {steps}"


class BanditSteps(StepPolicy):
    """Epsilon-greedy bandit over budgets; reward = val-loss reduction per student second.

    One bandit shared by all clients. A reply's reward is ``(global-val-loss -
    student-val-loss) / student-seconds``: how much the client's local steps
    lowered the validation loss of the global student it received, per second
    they took. Untried budgets are tried first (smallest first), then the
    best mean reward is exploited, except with probability ``epsilon``, when a
    random budget is tried; the draw is seeded by (seed, round, node).
    """

    name = "bandit"

    def __init__(
        self,
        arms: Sequence[int],
        base_steps: int,
        min_steps: int,
        max_steps: int,
        epsilon: float,
        seed: int,
    ) -> None:
        super().__init__(base_steps, min_steps, max_steps)
        self.arms = sorted({int(a) for a in arms})
        self.epsilon = epsilon
        self.seed = seed
        self.counts = {a: 0 for a in self.arms}
        self.sums = {a: 0.0 for a in self.arms}
        self._pending: dict[int, int] = {}  # picks made this round, before replies
        self._round = -1

    def decide(
        self, server_round: int, node_id: int, client: ClientMemory | None
    ) -> tuple[int, str]:
        if server_round != self._round:
            self._round, self._pending = server_round, {}
        untried = [a for a in self.arms if self.counts[a] == 0]
        if untried:
            arm = min(untried, key=lambda a: (self._pending.get(a, 0), a))
            reason = "bandit: untried"
        elif _node_rng(self.seed, server_round, node_id).random() < self.epsilon:
            arm = self.arms[
                int(_node_rng(self.seed + 1, server_round, node_id).integers(len(self.arms)))
            ]
            reason = "bandit: explore"
        else:
            arm = max(self.arms, key=lambda a: (self.sums[a] / self.counts[a], -a))
            reason = f"bandit: best mean reward {self.sums[arm] / self.counts[arm]:.4f}/s"
        self._pending[arm] = self._pending.get(arm, 0) + 1
        return arm, reason

    def observe(self, node_id: int, client: ClientMemory) -> None:
        if client.budget not in self.counts:
            return
        if not _finite(client.global_val_loss, client.student_val_loss, client.student_seconds):
            return
        reward = (client.global_val_loss - client.student_val_loss) / max(
            client.student_seconds, 1e-6
        )
        self.counts[client.budget] += 1
        self.sums[client.budget] += reward

    def mean_rewards(self) -> dict[int, float]:
        """Mean reward of each tried budget."""
        return {a: self.sums[a] / self.counts[a] for a in self.arms if self.counts[a]}

    def state(self) -> dict[str, Any]:
        return {
            "arms": self.arms,
            "counts": {str(a): c for a, c in self.counts.items()},
            "sums": {str(a): s for a, s in self.sums.items()},
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.arms = [int(a) for a in state["arms"]]
        self.counts = {int(a): int(c) for a, c in state["counts"].items()}
        self.sums = {int(a): float(s) for a, s in state["sums"].items()}


def default_arms(min_steps: int, max_steps: int) -> list[int]:
    """``min-steps`` doubling up to ``max-steps`` (both included)."""
    arms, arm = [], min_steps
    while arm < max_steps:
        arms.append(arm)
        arm *= 2
    return [*arms, max_steps]


def parse_arms(text: str) -> list[int]:
    """``"5,10,20"`` -> ``[5, 10, 20]``; raises ConfigError naming bandit-arms."""
    try:
        arms = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(
            f"bandit-arms={text!r}: use comma-separated integers, e.g. '5,10,20'"
        ) from None
    if not arms:
        raise ConfigError(f"bandit-arms={text!r}: give at least one budget, e.g. '5,10,20'")
    return arms


STEP_POLICIES = ("fixed", *RATIO_RULES, "bandit")


# ---------------------------------------------------------------- selection
class SelectionPolicy:
    """Base: all connected nodes train."""

    name = "all"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def select(
        self,
        server_round: int,
        node_ids: Sequence[int],
        k: int,
        clients: Mapping[int, ClientMemory],
        global_loss: float,
    ) -> tuple[list[int], str]:
        """``(selected node IDs, reason)``: ``k`` of the sorted ``node_ids`` (all, here)."""
        return sorted(node_ids), "all"

    def state(self) -> dict[str, Any]:
        """JSON-serialisable state (the selections here are functions of their inputs)."""
        return {}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state` returned."""

    def _shuffled(self, server_round: int, node_ids: Sequence[int]) -> list[int]:
        # Positions, not IDs, go through numpy: IDs are unsigned 64-bit.
        ordered = sorted(int(n) for n in node_ids)
        order = _node_rng(self.seed, server_round).permutation(len(ordered))
        return [ordered[i] for i in order]

    def _ranked(
        self,
        server_round: int,
        node_ids: Sequence[int],
        k: int,
        clients: Mapping[int, ClientMemory],
        score: Callable[[ClientMemory], float],
    ) -> list[int]:
        """Unmeasured nodes first (seeded order), then measured ones by ascending score."""
        shuffled = self._shuffled(server_round, node_ids)
        unmeasured = [n for n in shuffled if n not in clients or not clients[n].measured]
        measured = sorted(
            (n for n in shuffled if n in clients and clients[n].measured),
            key=lambda n: (score(clients[n]), n),
        )
        return sorted((unmeasured + measured)[:k])


class RandomK(SelectionPolicy):
    """``k`` nodes uniformly at random, seeded by (seed, round)."""

    name = "random-k"

    def select(self, server_round, node_ids, k, clients, global_loss):  # type: ignore[no-untyped-def]
        return sorted(self._shuffled(server_round, node_ids)[:k]), f"random {k}"


class ClosestToServer(SelectionPolicy):
    """The paper's rule: the ``k`` nodes whose last student val loss is closest to the server's.

    Nodes never measured go first, so every node is measured once.
    """

    name = "closest"

    def select(self, server_round, node_ids, k, clients, global_loss):  # type: ignore[no-untyped-def]
        if not math.isfinite(global_loss):
            return sorted(self._shuffled(server_round, node_ids)[:k]), "no server loss yet: random"
        chosen = self._ranked(
            server_round, node_ids, k, clients, lambda c: abs(c.student_val_loss - global_loss)
        )
        return chosen, f"closest {k} to server loss {global_loss:.4f}"


class LargestGap(SelectionPolicy):
    """The ``k`` nodes whose student is furthest above its teacher (val loss, nats)."""

    name = "gap"

    def select(self, server_round, node_ids, k, clients, global_loss):  # type: ignore[no-untyped-def]
        chosen = self._ranked(
            server_round,
            node_ids,
            k,
            clients,
            lambda c: -(c.student_val_loss - c.teacher_val_loss),
        )
        return chosen, f"largest student-teacher gap, {k}"


class PowerOfChoice(SelectionPolicy):
    """Power-of-choice: sample ``d = ceil(poc-candidates * k)`` nodes, keep the ``k`` worst.

    "Worst" is the highest last student val loss; unmeasured candidates first.
    """

    name = "power-of-choice"

    def __init__(self, seed: int = 0, candidates: float = 2.0) -> None:
        super().__init__(seed)
        self.candidates = candidates

    def select(self, server_round, node_ids, k, clients, global_loss):  # type: ignore[no-untyped-def]
        d = min(len(node_ids), max(k, math.ceil(self.candidates * k)))
        pool = self._shuffled(server_round, node_ids)[:d]
        chosen = self._ranked(server_round, pool, k, clients, lambda c: -c.student_val_loss)
        return chosen, f"power-of-choice: {k} of {d} candidates"


SELECTIONS: dict[str, type[SelectionPolicy]] = {
    cls.name: cls for cls in (SelectionPolicy, RandomK, ClosestToServer, LargestGap, PowerOfChoice)
}


# ---------------------------------------------------------------- termination
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
            c["student-val-loss"] - c["teacher-val-loss"]
            for c in rounds[-1].get("clients", [])
            if "student-val-loss" in c and "teacher-val-loss" in c
        ]
        if gaps and float(np.mean(gaps)) <= self.epsilon:
            return (
                f"teacher-gap: mean student-teacher val loss gap {np.mean(gaps):.4f} "
                f"<= {self.epsilon} nats"
            )
        return None


class Plateau(TerminationRule):
    """Stop when the global loss has not dropped by ``min_delta`` for ``patience`` rounds."""

    name = "plateau"

    def __init__(self, patience: int, min_delta: float) -> None:
        self.patience = patience
        self.min_delta = min_delta

    def check(self, server_round, history):  # type: ignore[no-untyped-def]
        losses = [r["global"]["loss"] for r in history if "global" in r]
        if len(losses) <= self.patience:
            return None
        best_before = min(losses[: -self.patience])
        recent = min(losses[-self.patience :])
        if recent > best_before - self.min_delta:
            return (
                f"plateau: global loss {recent:.4f} not below {best_before:.4f} - "
                f"{self.min_delta} for {self.patience} rounds"
            )
        return None


class DistanceStagnation(TerminationRule):
    """The paper's rule: the mean client-server loss distance stopped changing.

    Per round, ``d = mean |client student val loss - global loss|``; stop when
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
            server = record["global"]["loss"]
            losses = [
                c["student-val-loss"] for c in record.get("clients", []) if "student-val-loss" in c
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


TERMINATIONS = ("teacher-gap", "plateau", "distance", "max-rounds")


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


# ---------------------------------------------------------------- from the run config
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


def build_step_policy(config: Any) -> StepPolicy:
    """The ``steps-policy`` of a ``RunConfig``."""
    policy, base = config.policy, config.student.local_steps
    name = policy.steps_policy
    if name == "bandit":
        arms = (
            parse_arms(policy.bandit_arms)
            if policy.bandit_arms
            else default_arms(policy.min_steps, policy.max_steps)
        )
        return BanditSteps(
            arms,
            base,
            policy.min_steps,
            policy.max_steps,
            policy.bandit_epsilon,
            config.federation.seed,
        )
    if name in RATIO_RULES:
        return RatioSteps(name, base, policy.min_steps, policy.max_steps, policy.max_increment)
    return StepPolicy(base, policy.min_steps, policy.max_steps)


def build_selection(config: Any) -> SelectionPolicy:
    """The ``selection`` policy of a ``RunConfig``."""
    name, seed = config.policy.selection, config.federation.seed
    if name == "power-of-choice":
        return PowerOfChoice(seed, config.policy.poc_candidates)
    return SELECTIONS[name](seed)


def build_termination(config: Any) -> Termination:
    """The ``termination`` rules of a ``RunConfig``."""
    policy = config.policy
    makers: dict[str, Callable[[], TerminationRule]] = {
        "teacher-gap": lambda: TeacherGap(policy.stop_epsilon),
        "plateau": lambda: Plateau(policy.stop_patience, policy.stop_min_delta),
        "distance": lambda: DistanceStagnation(policy.stop_patience, policy.stop_distance_delta),
        "max-rounds": lambda: MaxRounds(config.federation.num_rounds),
    }
    return Termination(
        [makers[n]() for n in parse_rules(policy.termination)], policy.stop_min_rounds
    )
