"""Flower's own log lines around the federation's rounds."""

from __future__ import annotations

import logging
from collections.abc import Callable


class QuietAfterStop(logging.Filter):
    """Drops the lines Flower's ``start()`` logs for rounds after the run stopped.

    Its closing lines ("Strategy execution finished", the results of the
    rounds that ran) are kept.
    """

    ROUND_LINES = frozenset({"", "[ROUND %s/%s]", "Global evaluation", "\t└──> MetricRecord: %s"})

    def __init__(self, stopped: Callable[[], bool]) -> None:
        super().__init__()
        self.stopped = stopped
        self.closing = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.stopped() or record.funcName != "start" or self.closing:
            return True
        if str(record.msg).startswith("Strategy execution finished"):
            self.closing = True
            return True
        return record.msg not in self.ROUND_LINES
