"""Federated fine-tuning of the teachers' LoRA adapters (``teacher-federation=fedavg``).

For the first K = ``teacher-fedavg-rounds`` rounds every train message also
carries the global adapters and head (none in round 1: the clients start from
the same seeded initialisation); each client fine-tunes them on its rows for
``teacher-epochs``, distils its student from the updated teacher and replies
with its trained adapters and head, which the server averages weighted by
examples. After round K, each client receives the final average once (in the
first round it is selected), loads it, and distils from that global teacher
from then on. The student is federated as usual throughout.

Bytes of the teacher arrays are counted apart from the student's
(``teacher-bytes-sent`` / ``teacher-bytes-received`` in ``rounds.jsonl``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Message

from config.messages import (
    CONFIG_KEY,
    METRICS_KEY,
    TEACHER_FINAL_KEY,
    TEACHER_KEY,
    TEACHER_ROUND_KEY,
    TrainReport,
)
from strategies.student_fedavg import reply_node

logger = logging.getLogger(__name__)


def average_arrays(
    contributions: Sequence[tuple[dict[str, np.ndarray], float]],
) -> dict[str, np.ndarray]:
    """Weighted mean of same-named arrays: sum(w_i * a_i) / sum(w_i), float32 (teacher
    adapters across clients, global students across rounds).

    Raises
    ------
    ValueError
        If there is nothing to average, or the names or shapes differ.
    """
    if not contributions:
        raise ValueError("no arrays to average")
    names = set(contributions[0][0])
    total = float(sum(weight for _, weight in contributions))
    if total <= 0:
        raise ValueError("weights sum to zero")
    out: dict[str, np.ndarray] = {}
    for name in sorted(names):
        acc = np.zeros_like(contributions[0][0][name], dtype=np.float64)
        for arrays, weight in contributions:
            if set(arrays) != names or arrays[name].shape != acc.shape:
                raise ValueError(f"the arrays to average differ at {name!r}")
            acc += weight * arrays[name].astype(np.float64)
        out[name] = (acc / total).astype(np.float32)
    return out


def record_bytes(messages: Iterable[Message]) -> int:
    """Bytes of the teacher ArrayRecords in ``messages``."""
    return sum(
        m.content.array_records[TEACHER_KEY].count_bytes()
        for m in messages
        if not m.has_error() and TEACHER_KEY in m.content.array_records
    )


class TeacherFederation:
    """The server's side: what to send each round, and averaging what comes back."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self.global_arrays: dict[str, np.ndarray] | None = None
        self.versions: dict[int, int] = {}  # partition -> teacher round behind its logits

    def attach(
        self, server_round: int, messages: Sequence[Message], partitions: Mapping[int, int]
    ) -> None:
        """Add the teacher round, and the global arrays where needed, to each message.

        ``partitions`` maps node IDs to the clients (partitions) they serve.
        """
        for message in messages:
            config = message.content.config_records[CONFIG_KEY]
            client = partitions.get(int(message.metadata.dst_node_id), -1)
            if server_round <= self.rounds:
                teacher_round, final = server_round, False
            elif self.versions.get(client) != self.rounds + 1 and self.global_arrays is not None:
                teacher_round, final = self.rounds + 1, True
            else:
                teacher_round, final = 0, False
            config[TEACHER_ROUND_KEY] = teacher_round
            config[TEACHER_FINAL_KEY] = final
            if teacher_round and self.global_arrays is not None:
                message.content[TEACHER_KEY] = ArrayRecord(
                    {k: Array(v) for k, v in self.global_arrays.items()}
                )

    def collect(
        self,
        server_round: int,
        replies: Sequence[Message],
        sent: Sequence[Message],
        partitions: Mapping[int, int],
    ) -> int:
        """Record each client's teacher version; average the round's adapters.

        Takes the teacher arrays out of the replies (the strategy aggregates the
        student alone) and returns their bytes. A client whose reply failed is
        sent the final average again when it next trains.
        """
        received = record_bytes(replies)
        contributions = []
        for reply in replies:
            client = partitions.get(reply_node(reply, sent), -1)
            if reply.has_error():
                self.versions.pop(client, None)
                continue
            report = TrainReport.from_mapping(reply.content.metric_records[METRICS_KEY])
            self.versions[client] = report.teacher_version
            if TEACHER_KEY in reply.content.array_records:
                record = reply.content.array_records[TEACHER_KEY]
                arrays = {k: a.numpy() for k, a in record.items()}
                del reply.content[TEACHER_KEY]
                contributions.append((arrays, float(report.num_examples)))
        if contributions:
            self.global_arrays = average_arrays(contributions)
            logger.info(
                "round %d: teacher adapters of %d clients averaged (%d arrays)",
                server_round,
                len(contributions),
                len(self.global_arrays),
            )
        return received

    def state(self) -> dict[str, Any]:
        """The federated rounds and each client's teacher version (for the record)."""
        return {"rounds": self.rounds, "versions": {str(k): v for k, v in self.versions.items()}}

    def load_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray] | None) -> None:
        """Resume with the global adapters; every client is sent the final average again.

        A resumed run's clients may be new processes that lost the teacher they
        loaded, so the versions they had are not trusted.
        """
        self.rounds = int(state["rounds"])
        self.versions = {}
        self.global_arrays = arrays
