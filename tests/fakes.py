"""A SuperNode's reply as the server receives it, for tests that need no Ray and no SuperLink.

Test modules import it as ``from fakes import reply`` (pytest puts ``tests/`` on the path).
"""

from __future__ import annotations

import time

from flwr.app import Message, MessageType, Metadata, RecordDict


def reply(
    content: RecordDict,
    node: int,
    message_type: str = MessageType.TRAIN,
    reply_to: str = "i",
) -> Message:
    """A reply from node ``node`` holding ``content``, answering the message ``reply_to``."""
    metadata = Metadata(
        run_id=1,
        message_id="",
        src_node_id=node,
        dst_node_id=1,
        reply_to_message_id=reply_to,
        group_id="1",
        created_at=time.time(),
        ttl=60.0,
        message_type=message_type,
    )
    return Message(content, metadata=metadata)


class Grid:
    """A grid that knows only which nodes are connected (what the strategies ask of it)."""

    def __init__(self, node_ids: list[int]) -> None:
        self.node_ids = list(node_ids)

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)
