"""Run one measurement in a fresh Python process, so its memory and imports are its own.

A bench script calls ``run_child([script, args...], what)`` in the parent and
``report(result)`` in the child; the child's result travels back as one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
_MARK = "CHILD "


def report(result: dict[str, Any]) -> None:
    """In the child: hand ``result`` to the parent."""
    print(_MARK + json.dumps(result), flush=True)


def run_child(argv: list[str], what: str) -> dict[str, Any]:
    """In the parent: run ``python argv...`` and return what it reported; exit if it failed."""
    child = subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    line = next((x for x in child.stdout.splitlines() if x.startswith(_MARK)), None)
    if child.returncode != 0 or line is None:
        sys.exit(f"{what} failed:\n{child.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(line[len(_MARK) :])
    return result
