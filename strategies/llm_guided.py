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
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from flwr.app import ArrayRecord, Message, MetricRecord

from config.run_config import RunConfig
from strategies.selection import SelectionPolicy, build_selection
from strategies.steps import RATIO_RULES, ReferenceRule, StepPolicy, build_step_policy
from strategies.student_fedavg import StudentFedAvg
from strategies.termination import MaxRounds, Termination, build_termination

logger = logging.getLogger(__name__)


class LLMGuidedStrategy(StudentFedAvg):
    """FedAvg whose selection, step budgets and termination are pluggable policies.

    Parameters
    ----------
    steps, selection, termination
        The three policies (see :mod:`strategies.steps`, :mod:`strategies.selection`
        and :mod:`strategies.termination`).
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.steps = steps
        self.selection = selection
        self.termination = termination

    @classmethod
    def from_config(cls, config: RunConfig) -> StudentFedAvg:
        return cls(
            steps=build_step_policy(config),
            selection=build_selection(config),
            termination=build_termination(config),
            **cls.config_kwargs(config),
        )

    def select_clients(self, server_round: int, partitions: Sequence[int]) -> list[int]:
        """The selection policy's ``k`` clients."""
        k = self.num_to_select(len(partitions))
        chosen, self.last_selection_reason = self.selection.select(
            server_round, [int(p) for p in partitions], k, self.clients, self.val_loss
        )
        return chosen

    def step_budget(self, server_round: int, partition: int) -> tuple[int, str]:
        """The steps policy's budget for client ``partition``, from its last reply."""
        return self.steps.decide(server_round, partition, self.clients.get(partition))

    def should_stop(self, server_round: int, history: Sequence[Mapping[str, Any]]) -> str | None:
        """The first termination rule that fires after ``server_round``, or None."""
        return self.termination.check(server_round, history)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate as :class:`StudentFedAvg`, then let the steps policy learn from the replies."""
        result = super().aggregate_train(server_round, replies)
        for partition in self.last_reports:
            self.steps.observe(partition, self.clients[partition])
        return result

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
