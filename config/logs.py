"""Logging set-up for the apps: the project's loggers print beside Flower's."""

from __future__ import annotations

import logging

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


def configure_logging(level: int = logging.INFO) -> None:
    """Give the project's package loggers one stream handler (idempotent)."""
    for name in PACKAGES:
        package_logger = logging.getLogger(name)
        package_logger.setLevel(level)
        if not package_logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
            package_logger.addHandler(handler)
            package_logger.propagate = False
