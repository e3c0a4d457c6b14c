"""The pieces every run-config section is built from: a keyed field and its checks.

A field made by :func:`setting` carries its run-config key and its meaning in
``metadata``; the checks raise one-line ``ConfigError`` messages that name
the key, the value and the rule.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any

from config.errors import ConfigError


def is_seconds(text: str) -> bool:
    """Whether ``text`` is a number of seconds > 0."""
    try:
        return float(text) > 0
    except ValueError:
        return False


def setting(key: str, default: Any, help: str) -> Any:  # noqa: A002 - mirrors dataclass field(help=)
    """A dataclass field whose metadata names its run-config key and its meaning."""
    return field(default=default, metadata={"key": key, "help": help})


def check(ok: bool, key: str, value: Any, rule: str) -> None:
    """Raise ``ConfigError("<key>=<value>: <rule>")`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}={value!r}: {rule}")


def check_choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    """Raise a one-line ``ConfigError`` unless ``value`` is one of ``allowed``."""
    check(value in allowed, key, value, f"must be one of {', '.join(allowed)}")


def at_least(section: Any, minimum: float, *names: str) -> None:
    """Each named field of ``section`` must be >= ``minimum``."""
    for f in dataclasses.fields(section):
        if f.name in names:
            value = getattr(section, f.name)
            check(value >= minimum, f.metadata["key"], value, f"must be >= {minimum:g}")


def positive(section: Any, *names: str) -> None:
    """Each named field of ``section`` must be > 0."""
    for f in dataclasses.fields(section):
        if f.name in names:
            value = getattr(section, f.name)
            check(value > 0, f.metadata["key"], value, "must be > 0")
