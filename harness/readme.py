"""The README's two commands, read from the README itself (never retyped elsewhere).

The set-up command is the first ``bash`` block under ``## Set up``; the main
command the first under ``## Run``; the test command the first under ``## Test``.
``tests/e2e/test_readme.py`` and ``bench/default_run.py`` run them as written.
"""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"```bash\n(.*?)```", re.DOTALL)


def readme_command(section: str, readme: Path = README) -> str:
    """The first ``bash`` block under the ``## <section>`` heading, comment lines dropped."""
    text = readme.read_text(encoding="utf-8")
    start = text.find(f"\n## {section}\n")
    if start < 0:
        raise ValueError(f"README has no '## {section}' section")
    end = text.find("\n## ", start + 1)
    found = _BLOCK.search(text[start : end if end > 0 else None])
    if found is None:
        raise ValueError(f"README's '## {section}' section has no bash block")
    lines = [line for line in found.group(1).splitlines() if not line.lstrip().startswith("#")]
    return "\n".join(lines).strip()
