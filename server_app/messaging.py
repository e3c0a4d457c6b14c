"""Sending a round's messages and collecting the replies, without Flower's 3-second wait.

Flower 1.42's ``Grid.send_and_receive`` pulls the replies every 3 seconds, so a
round waits up to 3 s after the last reply arrived. :func:`exchange` pushes
the messages and pulls every ``poll_seconds`` instead (one cheap request to
the SuperLink each time), with the same result and the same timeout.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

#: Seconds between two pulls for replies.
POLL_SECONDS = 0.1


def exchange(
    grid: Grid, messages: Iterable[Message], timeout: float, poll_seconds: float = POLL_SECONDS
) -> list[Message]:
    """Push ``messages`` and return the replies that arrive within ``timeout`` seconds.

    A node that does not reply in time simply has no reply in the list, as
    with ``Grid.send_and_receive``.
    """
    waiting = set(grid.push_messages(messages))
    deadline = time.monotonic() + timeout
    replies: list[Message] = []
    while waiting:
        arrived = list(grid.pull_messages(waiting))
        replies.extend(arrived)
        waiting -= {reply.metadata.reply_to_message_id for reply in arrived}
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(poll_seconds)
    return replies
