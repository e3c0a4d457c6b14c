"""Strategies by name: the built-in ones, ``flwr:Name`` (a Flower strategy aggregating the
student, :mod:`strategies.flower_aggregator`), or ``package.module:Class``."""

from __future__ import annotations

import importlib
from typing import Any

from config.errors import ConfigError
from config.fields import check, check_choice
from config.run_config import RunConfig
from strategies.flower_aggregator import (
    FlowerAggregated,
    build_aggregator,
    flower_class,
    strategy_options,
)
from strategies.llm_guided import FedProx, LLMGuidedStrategy, LLMQFLReference
from strategies.selection import SELECTIONS
from strategies.steps import RATIO_RULES, STEP_POLICIES, parse_arms
from strategies.student_fedavg import StudentFedAvg
from strategies.teacher import build_teacher_policy
from strategies.termination import parse_rules

BUILTIN: dict[str, type[StudentFedAvg]] = {
    "fedavg": StudentFedAvg,
    "fedprox": FedProx,
    "llm-guided": LLMGuidedStrategy,
    "llmqfl-reference": LLMQFLReference,
}


def _import_class(spec: str) -> Any:
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(
            f"strategy={spec!r}: module {module_name!r} cannot be imported ({err}); "
            "install it or put it on PYTHONPATH"
        ) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ConfigError(f"strategy={spec!r}: {module_name!r} has no attribute {class_name!r}")
    return cls


def check_strategy(config: RunConfig) -> None:
    """Raise a one-line :class:`ConfigError` unless the strategy and its policies are usable.

    Checks ``strategy`` (a built-in name or an importable ``module:Class``) and
    the policy keys against the lists this package owns.
    """
    resolve_strategy(config.federation.strategy)
    policy, strategy = config.policy, config.federation.strategy
    if flower_class(strategy) is not None:
        build_aggregator(strategy, strategy_options(config.federation.strategy_options))
        check(
            policy.aggregation == "fedavg",
            "aggregation",
            policy.aggregation,
            f"strategy={strategy!r} aggregates the student itself; leave aggregation at fedavg",
        )
    check_choice("steps-policy", policy.steps_policy, STEP_POLICIES)
    bounds = f"[min-steps, max-steps] = [{policy.min_steps}, {policy.max_steps}]"
    if policy.bandit_arms:
        arms = parse_arms(policy.bandit_arms)
        check(
            all(policy.min_steps <= a <= policy.max_steps for a in arms),
            "bandit-arms",
            policy.bandit_arms,
            f"every budget must be in {bounds}",
        )
    check_choice("selection", policy.selection, tuple(SELECTIONS))
    if strategy == "llm-guided":  # the one strategy that reads teacher-policy
        build_teacher_policy(config)  # teacher-policy=validated needs federated teachers
    parse_rules(policy.termination)
    local_steps = config.student.local_steps
    if strategy in ("llm-guided", "llmqfl-reference") and policy.steps_policy in RATIO_RULES:
        check(
            policy.min_steps <= local_steps <= policy.max_steps,
            "local-steps",
            local_steps,
            f"the starting budget must be in {bounds}",
        )
    if strategy == "llmqfl-reference":  # fixed, the default, keeps its published rule
        check_choice("steps-policy", policy.steps_policy, ("fixed", *RATIO_RULES))


def resolve_strategy(name: str) -> Any:
    """The strategy class for a built-in name or ``package.module:Class``."""
    if name in BUILTIN:
        return BUILTIN[name]
    if flower_class(name) is not None:
        return FlowerAggregated
    if ":" in name:
        cls = _import_class(name)
        if not hasattr(cls, "from_config"):
            raise ConfigError(
                f"strategy={name!r}: the class needs a from_config(config) classmethod "
                "(subclass strategies.StudentFedAvg, or Flower's flwr.serverapp.strategy.Strategy)"
            )
        return cls
    raise ConfigError(
        f"strategy={name!r}: unknown; use one of {', '.join(sorted(BUILTIN))} "
        "flwr:<a Flower strategy> or 'package.module:Class'"
    )


def build_strategy(config: RunConfig) -> StudentFedAvg:
    """Instantiate the run's strategy from its typed configuration."""
    strategy: StudentFedAvg = resolve_strategy(config.federation.strategy).from_config(config)
    return strategy
