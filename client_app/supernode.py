"""``flower-supernode`` with shorter waits, for rounds of seconds on the deployment engine.

Flower 1.42's SuperNode sleeps a hard-coded 3 s whenever it finds no message
for it, and 0.5 s between its checks for a finished reply
(``flwr/supernode/start_client_internal.py``), so a round's messages reach
the nodes up to 3 s after the server sent them. No setting changes that.
This entry point runs Flower's own SuperNode with those sleeps capped at
:data:`MAX_SLEEP` seconds (about five pulls a second while idle, each a small
request to the SuperLink)::

    python -m client_app.supernode --superlink superlink:8000 --insecure ...

It replaces the ``time`` that one module of flwr 1.42.0 sees, and nothing
else; with any other flwr version it runs the stock SuperNode unchanged.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

logger = logging.getLogger(__name__)

#: Longest sleep of the patched SuperNode's loops, seconds.
MAX_SLEEP = 0.2
PATCHED_VERSION = "1.42.0"


class _CappedTime:
    """The ``time`` module, but ``sleep`` waits at most :data:`MAX_SLEEP` seconds."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(min(seconds, MAX_SLEEP))


def cap_idle_sleep() -> bool:
    """Patch flwr 1.42.0's SuperNode loop; return False (and leave it) on any other version."""
    import flwr
    from flwr.supernode import start_client_internal

    version = getattr(flwr, "__version__", "")
    if version != PATCHED_VERSION or not hasattr(start_client_internal, "time"):
        logger.warning("flwr %s: running the stock SuperNode (its 3 s waits stay)", version)
        return False
    start_client_internal.time = _CappedTime()  # type: ignore[assignment]
    return True


def main() -> int:
    """Run ``flower-supernode`` with the arguments given, its waits capped."""
    from flwr.supernode.cli import flower_supernode

    cap_idle_sleep()
    sys.argv[0] = "flower-supernode"
    flower_supernode()
    return 0


if __name__ == "__main__":
    sys.exit(main())
