"""What the server reads off replies besides their arrays: whose they are, how they failed.

A reply names its sender; an error reply that the SuperLink wrote itself (for
example "Node Unavailable") names the SuperLink, and only the instruction it
answers says which node it is about (:func:`reply_node`). A failure, crashed
or refused, becomes one record (:func:`failure_record`) in ``rounds.jsonl``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flwr.app import Message

from config.messages import TrainReport

#: The ``code`` of a failure record for a reply that arrived but failed the checks.
REJECTED = -1


def failure_record(
    reply: Message,
    sent: Iterable[Message],
    partitions: Mapping[int, int],
    code: int,
    reason: str | None,
) -> dict[str, Any]:
    """``{"node-id", "partition-id", "code", "reason"}`` for a failed ``reply``; the reason
    is the last line of ``reason``, at most 300 characters."""
    node, reason = reply_node(reply, sent), reason or ""
    return {
        "node-id": node,
        "partition-id": partitions.get(node),
        "code": code,
        "reason": reason.strip().splitlines()[-1][:300] if reason.strip() else "",
    }


def step_mismatches(
    plan: Mapping[int, Mapping[str, Any]], reports: Mapping[int, TrainReport]
) -> list[dict[str, int]]:
    """``{"partition-id", "planned", "ran"}`` for each report whose steps differ from its plan."""
    return [
        {"partition-id": partition, "planned": int(plan[partition]["steps"]), "ran": report.steps}
        for partition, report in sorted(reports.items())
        if partition in plan and report.steps != int(plan[partition]["steps"])
    ]


def reply_node(reply: Message, instructions: Iterable[Message]) -> int:
    """The node a reply is about: its sender, or, for an error reply the SuperLink
    wrote itself (e.g. "Node Unavailable", sent from the SuperLink's own ID), the
    destination of the instruction it answers."""
    for instruction in instructions:
        message_id = instruction.metadata.message_id
        if message_id and message_id == reply.metadata.reply_to_message_id:
            return int(instruction.metadata.dst_node_id)
    return int(reply.metadata.src_node_id)
