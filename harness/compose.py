"""Read docker-compose files as Compose does, without Docker: for checks and tests.

:func:`load_compose` parses one or more files (YAML anchors and ``<<`` merge
keys included), substitutes ``${VAR}``, ``${VAR:-default}`` and ``$$``, and
merges each later file into the earlier ones by Compose's rules for the keys
this project uses: mappings merge key by key; ``volumes`` merge by their
target path; ``ports`` and ``depends_on`` lists are joined; every other value
(``image``, ``command``, ...) is replaced. The project's compose files are
checked with it in the tests, so the checks need nothing beyond the Python
set-up; the real ``docker compose`` run is in ``tests/deploy/test_compose_run.py``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def substitute(text: str, env: Mapping[str, str]) -> str:
    """``${VAR}`` and ``${VAR:-default}`` from ``env`` (empty counts as unset); ``$$`` is ``$``."""

    def value(found: re.Match[str]) -> str:
        if found.group(0) == "$$":
            return "$"
        name, default = found.group(1), found.group(2)
        return env.get(name) or (default if default is not None else "")

    return _VARIABLE.sub(value, text)


def _target(volume: Any) -> str:
    if isinstance(volume, dict):
        return str(volume.get("target", ""))
    parts = str(volume).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def _merge(base: Any, over: Any, key: str = "") -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for name, value in over.items():
            merged[name] = _merge(base[name], value, name) if name in base else value
        return merged
    if key == "volumes" and isinstance(base, list) and isinstance(over, list):
        by_target = {_target(v): v for v in base}
        by_target.update({_target(v): v for v in over})
        return list(by_target.values())
    if key in ("ports", "depends_on") and isinstance(base, list) and isinstance(over, list):
        return base + [v for v in over if v not in base]
    return over


def load_compose(*files: str | Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The merged configuration of ``files`` (the first is the base), variables substituted."""
    env = dict(os.environ if env is None else env)
    merged: dict[str, Any] = {}
    for file in files:
        text = substitute(Path(file).read_text(encoding="utf-8"), env)
        document = yaml.safe_load(text) or {}
        document = {k: v for k, v in document.items() if not str(k).startswith("x-")}
        merged = _merge(merged, document)
    return merged
