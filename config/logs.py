"""Logging set-up for the apps: the project's lines in Flower's style, library noise filtered.

:func:`configure_logging` gives the project's package loggers Flower's own
console handler (``INFO :      message``), and filters, at their source, the
library messages that say nothing to a user of this app:

- transformers' ``LOAD REPORT`` when the only finding is the new, untrained
  classification head (``classifier`` or ``score`` MISSING, as every teacher
  starts); any other load finding is still shown;
- transformers' ``Loading weights`` progress bars;
- bitsandbytes' "Failed to load CPU gemm_4bit_forward from kernels-community"
  (it falls back to its own kernel, which the QLoRA tests check);
- the FutureWarning that transformers' ``is_gradient_checkpointing`` is
  deprecated (raised inside PEFT, not by this project), and the
  DeprecationWarning that ``torch.jit.script_method`` is (raised when a
  library defines a TorchScript module at import).

Other warnings pass untouched.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator

PACKAGES = (
    "client_app",
    "config",
    "harness",
    "llm",
    "quantum",
    "server_app",
    "strategies",
    "tasks",
)
#: Names the new classification head has (see ``llm.presets.HEAD_NAMES``).
_HEAD = re.compile(r"^\s*(classifier|score)\.\S+\s*\|\s*MISSING\s*\|")
_TABLE_ROW = re.compile(r"^\s*\S+\s*\|\s*[A-Z ]+\s*\|")
_KERNELS_LINE = "Failed to load CPU gemm_4bit_forward from kernels-community"


def expected_load_report(message: str) -> bool:
    """True for a transformers LOAD REPORT whose only rows are the fresh head's MISSING keys."""
    if "LOAD REPORT" not in message:
        return False
    rows = [line for line in message.splitlines() if _TABLE_ROW.match(line)]
    rows = [row for row in rows if not row.strip().startswith("Key")]
    return bool(rows) and all(_HEAD.match(row) for row in rows)


class _LibraryNoise(logging.Filter):
    """Drops the library records the module docstring lists; keeps every other record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (expected_load_report(message) or message.startswith(_KERNELS_LINE))


_NOISE = _LibraryNoise()


def quiet_libraries() -> None:
    """Install the filters of the module docstring (idempotent)."""
    for name in ("transformers", "transformers.modeling_utils", "bitsandbytes.backends.cpu.ops"):
        library_logger = logging.getLogger(name)
        if _NOISE not in library_logger.filters:
            library_logger.addFilter(_NOISE)
        for handler in library_logger.handlers:
            if _NOISE not in handler.filters:
                handler.addFilter(_NOISE)
    warnings.filterwarnings(
        "ignore", message=r".*is_gradient_checkpointing.*deprecated", category=FutureWarning
    )
    warnings.filterwarnings(
        "ignore", message=r".*torch\.jit\.script_method.*deprecated", category=DeprecationWarning
    )
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    except ImportError:  # transformers absent: nothing to quieten
        pass


def configure_logging(level: int = logging.INFO) -> None:
    """Give the project's package loggers Flower's console handler (idempotent)."""
    from flwr.common.logger import console_handler

    quiet_libraries()
    for name in PACKAGES:
        package_logger = logging.getLogger(name)
        package_logger.setLevel(level)
        if console_handler not in package_logger.handlers:
            for handler in list(package_logger.handlers):
                package_logger.removeHandler(handler)
            package_logger.addHandler(console_handler)
            package_logger.propagate = False


@contextlib.contextmanager
def quiet(name: str, level: int = logging.ERROR) -> Iterator[None]:
    """Logger ``name`` at ``level`` for the duration (e.g. a library's construction warnings)."""
    found = logging.getLogger(name)
    before = found.level
    found.setLevel(level)
    try:
        yield
    finally:
        found.setLevel(before)
