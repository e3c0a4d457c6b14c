"""The LLM-guided strategy, its published reference, and FedProx.

:class:`LLMGuidedStrategy` is :class:`StudentFedAvg` (so Flower's ``FedAvg``)
whose three decisions are policies from :mod:`strategies.steps`,
:mod:`strategies.selection` and :mod:`strategies.termination`, chosen by
the run config: ``selection`` picks the nodes, ``steps-policy`` sets each
one's budget from its teacher's validation loss, and ``termination`` stops
the run. Each decision's reason goes into ``rounds.jsonl``.

:class:`LLMQFLReference` re-implements the published code's behaviour so
comparisons are fair: every node trains every round, budgets follow
:class:`~strategies.steps.ReferenceRule` (raise only, from round 3, raw
losses), and the run never stops early (the published code computes its
selection and termination but does not apply them).

:class:`FedProx` is FedAvg with a proximal term on the clients.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from flwr.app import Message

from config.run_config import RunConfig
from strategies.rounds import Selection, TrainOutcome, TrainRound
from strategies.selection import SelectionPolicy, build_selection
from strategies.steps import RATIO_RULES, ReferenceRule, StepPolicy, build_step_policy
from strategies.student_fedavg import StudentFedAvg
from strategies.teacher import TeacherPolicy, build_teacher_policy
from strategies.termination import MaxRounds, Termination, build_termination
from strategies.timing import deadline_seconds, estimate_seconds, fit_to_deadline, speed

logger = logging.getLogger(__name__)


class LLMGuidedStrategy(StudentFedAvg):
    """FedAvg whose selection, step budgets and termination are pluggable policies.

    Parameters
    ----------
    steps, selection, termination
        The three policies (see :mod:`strategies.steps`, :mod:`strategies.selection`
        and :mod:`strategies.termination`).
    teacher : TeacherPolicy, optional
        How much each client fine-tunes its teacher (:mod:`strategies.teacher`);
        default: ``teacher_epochs`` at first participation.
    deadline : str (default: "off")
        Time-aware budgets (:mod:`strategies.timing`): ``off``, ``median`` or
        a number of seconds.
    skip_epsilon : float (default: -1.0)
        A client whose student came within this of its teacher (validation
        loss, nats) sits out up to ``skip_rounds`` rounds (< 0: never).
    skip_rounds : int (default: 2)
    teacher_batch_size : int (default: 16)
        ``teacher-batch-size``, to turn a client's teacher steps into epochs.
    max_epochs : float (default: 0.0)
        ``student-max-epochs``: no client's step budget exceeds this many
        passes over its train rows at ``student_batch_size`` rows a step
        (never below the steps policy's ``min_steps``); 0: no cap. On a small
        partition a fixed budget is dozens of passes over the same rows: the
        extra steps only fit the client's own labels, and cost compute.
    student_batch_size : int (default: 64)
    teacher_max_steps : int (default: 0)
        ``teacher-max-steps``: no client's teacher is fine-tuned for more than
        this many steps in all; the teacher policy's epochs are cut to fit
        (0: no cap). A teacher needs about so many optimizer steps, not so
        many epochs: on a large partition a fixed number of epochs is many
        more steps than it needs, and the largest partitions cost the most.
    **kwargs
        :class:`StudentFedAvg`'s arguments. ``fraction_train`` sets ``k``, the
        number of nodes a selection policy picks (never below
        ``min_train_nodes``, never more than are connected).
    """

    def __init__(
        self,
        *,
        steps: StepPolicy,
        selection: SelectionPolicy,
        termination: Termination,
        teacher: TeacherPolicy | None = None,
        deadline: str = "off",
        skip_epsilon: float = -1.0,
        skip_rounds: int = 2,
        max_epochs: float = 0.0,
        student_batch_size: int = 64,
        teacher_max_steps: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.steps = steps
        self.selection = selection
        self.termination = termination
        if teacher is not None:
            self.teacher_policy = teacher
        self.deadline = deadline
        self.skip_epsilon = skip_epsilon
        self.skip_rounds = skip_rounds
        self.max_epochs = max_epochs
        self.student_batch_size = student_batch_size
        self.teacher_max_steps = teacher_max_steps

    @classmethod
    def from_config(cls, config: RunConfig) -> StudentFedAvg:
        policy = config.policy
        return cls(
            steps=build_step_policy(config),
            selection=build_selection(config),
            termination=build_termination(config),
            teacher=build_teacher_policy(config),
            deadline=policy.deadline,
            skip_epsilon=policy.skip_epsilon,
            skip_rounds=policy.skip_rounds,
            max_epochs=policy.student_max_epochs,
            student_batch_size=config.student.batch_size,
            teacher_max_steps=policy.teacher_max_steps,
            **cls.config_kwargs(config),
        )

    def select_clients(self, server_round: int, partitions: Sequence[int]) -> list[int]:
        """The selection policy's ``k`` clients, leaving out clients that match their teacher."""
        resting = self.resting(server_round, partitions)
        candidates = [int(p) for p in partitions if p not in resting]
        if len(candidates) < min(self.min_train_nodes, len(partitions)):
            candidates, resting = [int(p) for p in partitions], []
        k = self.num_to_select(len(candidates))
        federating = server_round <= self.teacher_policy.federated_rounds
        if federating and self.selection.all_while_teachers_federate:
            k = len(candidates)  # the federated teacher learns from every node's rows
        chosen, reason = self.selection.select(
            server_round, candidates, k, self.clients, self.val_loss
        )
        if federating and self.selection.all_while_teachers_federate:
            reason += f"; all {k}: teacher adapters federated in round {server_round}"
        if resting:
            reason += f"; resting (student matches teacher): {resting}"
        return Selection(chosen, reason)

    def resting(self, server_round: int, partitions: Sequence[int]) -> list[int]:
        """Clients whose student came within ``skip_epsilon`` of their teacher in their last
        round, if that was at most ``skip_rounds`` rounds ago (then they are measured again)."""
        if self.skip_epsilon < 0:
            return []
        resting = []
        for partition in partitions:
            client = self.clients.get(partition)
            if client is None or not client.measured:
                continue
            matched = client.student_val_loss - client.teacher_val_loss <= self.skip_epsilon
            if matched and server_round - client.last_round <= self.skip_rounds:
                resting.append(int(partition))
        return sorted(resting)

    def plan_round(
        self, server_round: int, partitions: Sequence[int]
    ) -> tuple[dict[int, dict[str, Any]], str]:
        """The policies' plan, then time-aware: no client planned past the round's deadline."""
        plan, selection_reason = super().plan_round(server_round, partitions)
        speeds = {}
        for partition in plan:
            client = self.clients.get(partition)
            measured = speed(client, self.teacher_batch_size) if client is not None else None
            if measured is not None:
                speeds[partition] = measured
        estimates = {
            p: estimate_seconds(speeds[p], plan[p]["steps"], plan[p]["teacher-epochs"])
            for p in speeds
        }
        deadline = deadline_seconds(self.deadline, estimates)
        if deadline is None:
            return plan, selection_reason
        budgets = {p: (plan[p]["steps"], plan[p]["teacher-epochs"]) for p in plan}
        for partition, (steps, epochs, why) in fit_to_deadline(
            budgets, speeds, deadline, self.steps.min_steps
        ).items():
            if why:
                if epochs != plan[partition]["teacher-epochs"]:
                    plan[partition]["teacher-reason"] += f"; deferred: deadline {deadline:.1f} s"
                plan[partition]["steps"], plan[partition]["teacher-epochs"] = steps, epochs
                plan[partition]["reason"] += f"; {why}"
        return plan, selection_reason

    def step_budget(self, server_round: int, partition: int) -> tuple[int, str]:
        """The steps policy's budget for client ``partition``, from its last reply, within
        ``max_epochs`` passes over the client's declared train rows."""
        steps, reason = self.steps.decide(server_round, partition, self.clients.get(partition))
        rows = self.declared_examples.get(partition, 0)
        if self.max_epochs <= 0 or rows <= 0:
            return steps, reason
        cap = max(self.steps.min_steps, math.ceil(self.max_epochs * rows / self.student_batch_size))
        if steps <= cap:
            return steps, reason
        return cap, f"{reason}; capped at {self.max_epochs:g} epochs of {rows} rows: {cap}"

    def teacher_budget(self, server_round: int, partition: int) -> tuple[float, str]:
        """The teacher policy's epochs for client ``partition``, cut so that its teacher's
        steps in all stay within ``teacher_max_steps``."""
        epochs, reason = super().teacher_budget(server_round, partition)
        rows = self.declared_examples.get(partition, 0)
        if self.teacher_max_steps <= 0 or epochs <= 0 or rows <= 0:
            return epochs, reason
        client = self.clients.get(partition)
        done = client.teacher_total_steps if client is not None else 0
        left = self.teacher_max_steps - done
        if left <= 0:
            return 0.0, f"kept: {done} steps done, the cap of {self.teacher_max_steps}"
        # The client runs ceil(epochs x rows / batch) steps: round down so that it stays within.
        cap = math.floor(left * self.teacher_batch_size / rows * 1e4) / 1e4
        if epochs <= cap:
            return epochs, reason
        return cap, f"{reason}; capped at {self.teacher_max_steps} steps: {cap:g} epochs"

    def should_stop(self, server_round: int, history: Sequence[Mapping[str, Any]]) -> str | None:
        """The first termination rule that fires after ``server_round``, or None."""
        return self.termination.check(server_round, history)

    def aggregate_round(self, train: TrainRound, replies: Iterable[Message]) -> TrainOutcome:
        """Aggregate as :class:`StudentFedAvg`, then let the steps policy learn from the replies."""
        outcome = super().aggregate_round(train, replies)
        for partition in outcome.reports:
            self.steps.observe(partition, self.clients[partition])
        return outcome

    def state(self) -> dict[str, Any]:
        return {
            **super().state(),
            "steps": self.steps.state(),
            "selection": self.selection.state(),
            "termination": self.termination.state(),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        super().load_state(state)
        self.steps.load_state(state["steps"])
        self.selection.load_state(state["selection"])
        self.termination.load_state(state["termination"])


class LLMQFLReference(LLMGuidedStrategy):
    """The published LLM-QFL code's rules (see the module docstring)."""

    @classmethod
    def from_config(cls, config: RunConfig) -> StudentFedAvg:
        policy = config.policy
        rule = policy.steps_policy if policy.steps_policy in RATIO_RULES else "adaptive"
        return cls(
            steps=ReferenceRule(
                rule, config.student.local_steps, policy.max_steps, policy.max_increment
            ),
            selection=SelectionPolicy(config.federation.seed),
            termination=Termination([MaxRounds(config.federation.num_rounds)], 1),
            **cls.config_kwargs(config),
        )


class FedProx(StudentFedAvg):
    """FedAvg whose clients add ``proximal-mu / 2 * ||w - w_global||^2`` to their loss."""

    @classmethod
    def from_config(cls, config: RunConfig) -> StudentFedAvg:
        return cls(proximal_mu=config.policy.proximal_mu, **cls.config_kwargs(config))
