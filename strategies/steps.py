"""Step policies: each selected client's local optimizer steps for the round.

The five ratio rules read ``r = student val loss / teacher val loss`` from the
client's last reply (both cross-entropy in nats on the client's own
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

``b0`` is ``local-steps``. Ours are rounded to the nearest integer and kept in
``[min-steps, max-steps]``; they lower a budget when the student beats its
teacher (``r < 1``). :class:`ReferenceRule` keeps the published behaviour (see
its docstring). :class:`BanditSteps` instead learns which budget buys the most
validation-loss reduction per compute second.

Every policy has one decision method, :meth:`StepPolicy.decide`, and
``state()`` / ``load_state()`` that round-trip through JSON.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from config.errors import ConfigError
from strategies.memory import ClientMemory, client_rng, finite


class StepPolicy:
    """Base: decides a selected client's step budget; may learn from replies."""

    name = "fixed"

    def __init__(self, base_steps: int, min_steps: int, max_steps: int) -> None:
        self.base_steps = base_steps
        self.min_steps = min_steps
        self.max_steps = max_steps

    def decide(
        self, server_round: int, partition: int, client: ClientMemory | None
    ) -> tuple[int, str]:
        """``(steps, reason)`` for ``partition`` this round (``client``: None if never seen)."""
        return self.base_steps, "fixed"

    def observe(self, partition: int, client: ClientMemory) -> None:  # noqa: B027 - optional hook
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
        self, server_round: int, partition: int, client: ClientMemory | None
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
        self, server_round: int, partition: int, client: ClientMemory | None
    ) -> tuple[int, str]:
        if client is None or client.rounds == 0:
            return self.base_steps, "first participation"
        student, teacher = client.student_train_loss, client.teacher_train_loss
        if server_round < 3 or not finite(student, teacher) or student <= teacher:
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

    A reply's reward goes to the arm picked for that client and round, even when
    a time-aware cap or a deadline cut the steps it ran: the reward is what
    picking that arm bought under the caps in force, and an arm that is always
    cut still counts as tried.
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
        self._picked: dict[tuple[int, int], int] = {}  # (round, partition) -> arm picked
        self._round = -1

    def decide(
        self, server_round: int, partition: int, client: ClientMemory | None
    ) -> tuple[int, str]:
        if server_round != self._round:  # a pick whose reply never came is forgotten
            self._round, self._pending = server_round, {}
            self._picked = {k: a for k, a in self._picked.items() if k[0] >= server_round}
        untried = [a for a in self.arms if self.counts[a] == 0]
        if untried:
            arm = min(untried, key=lambda a: (self._pending.get(a, 0), a))
            reason = "bandit: untried"
        elif client_rng(self.seed, server_round, partition).random() < self.epsilon:
            arm = self.arms[
                int(client_rng(self.seed + 1, server_round, partition).integers(len(self.arms)))
            ]
            reason = "bandit: explore"
        else:
            arm = max(self.arms, key=lambda a: (self.sums[a] / self.counts[a], -a))
            reason = f"bandit: best mean reward {self.sums[arm] / self.counts[arm]:.4f}/s"
        self._pending[arm] = self._pending.get(arm, 0) + 1
        self._picked[(server_round, partition)] = arm
        return arm, reason

    def observe(self, partition: int, client: ClientMemory) -> None:
        arm = self._picked.pop((client.last_round, partition), client.budget)
        if arm not in self.counts:
            return
        if not finite(client.global_val_loss, client.student_val_loss, client.student_seconds):
            return
        reward = (client.global_val_loss - client.student_val_loss) / max(
            client.student_seconds, 1e-6
        )
        self.counts[arm] += 1
        self.sums[arm] += reward

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
