"""Strategies by name: the built-in ones, or ``package.module:Class``."""

from __future__ import annotations

import importlib
from typing import Any

from config.errors import ConfigError
from strategies.llm_guided import FedProx, LLMGuidedStrategy, LLMQFLReference
from strategies.student_fedavg import StudentFedAvg

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


def check_strategy_name(name: str) -> None:
    """Raise :class:`ConfigError` unless ``name`` names a usable strategy."""
    resolve_strategy(name)


def resolve_strategy(name: str) -> Any:
    """The strategy class for a built-in name or ``package.module:Class``."""
    if name in BUILTIN:
        return BUILTIN[name]
    if ":" in name:
        cls = _import_class(name)
        if not hasattr(cls, "from_config"):
            raise ConfigError(
                f"strategy={name!r}: the class needs a from_config(config) classmethod "
                "(subclass strategies.StudentFedAvg)"
            )
        return cls
    raise ConfigError(
        f"strategy={name!r}: unknown; use one of {', '.join(sorted(BUILTIN))} "
        "or 'package.module:Class'"
    )


def build_strategy(config: Any) -> StudentFedAvg:
    """Instantiate the run's strategy from its typed configuration."""
    strategy: StudentFedAvg = resolve_strategy(config.federation.strategy).from_config(config)
    return strategy
