"""Federated fine-tuning of the teachers' LoRA adapters (``teacher-federation=fedavg``).

For the first K = ``teacher-fedavg-rounds`` rounds every train message also
carries the global adapters and head (in round 1 no adapters: the clients
start from the same seeded initialisation, and with ``teacher-probe=pooled``
from the head the server fitted on the pooled class moments, sent alone);
each client fine-tunes them on its rows for
``teacher-epochs``, distils its student from the updated teacher and replies
with its trained adapters and head, which the server averages weighted by
examples. After round K, each client receives the final average once (in the
first round it is selected), loads it, and distils from that global teacher
from then on. With ``teacher-fedavg-early-end`` the federated rounds end
early, after a round in which fine-tuning lowered no client's validation
loss (every client kept its start, or ended above it): the average is final
then, and the later rounds' fine-tuning is saved. The student is federated as usual throughout.

Bytes of the teacher arrays are counted apart from the student's
(``teacher-bytes-sent`` / ``teacher-bytes-received`` in ``rounds.jsonl``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
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
from strategies.replies import REJECTED, reply_node
from strategies.robust import ROBUST, robust_aggregate

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


#: A teacher reply's deviation from the round's coordinate-wise median is clipped to
#: this many times the median deviation before the mean (``aggregation`` fedavg/fednova).
TEACHER_CLIP_FACTOR = 3.0


@dataclass
class TeacherReplies:
    """What :meth:`TeacherFederation.collect` made of a round's replies."""

    kept: list[Message]  # the replies whose student part the strategy may now judge
    failures: list[dict[str, Any]]  # replies refused for their teacher arrays
    bytes_received: int
    # With teacher-fedavg-early-end: the round after which the federated teacher became final.
    final_after: int | None = None
    pooled: bool = False  # whether the round's adapters made a new global teacher


def teacher_problem(
    arrays: Mapping[str, np.ndarray], expected: Mapping[str, tuple[tuple[int, ...], str]]
) -> str:
    """Why a reply's teacher arrays may not be averaged ("": they may).

    ``expected`` maps each array name to its shape and dtype: the global
    adapters', or in the first round the shapes most replies agree on.
    """
    if set(arrays) != set(expected):
        extra, missing = sorted(set(arrays) - set(expected)), sorted(set(expected) - set(arrays))
        return f"teacher arrays differ (extra {extra[:3]}, missing {missing[:3]})"
    for name, array in arrays.items():
        shape, dtype = expected[name]
        if tuple(array.shape) != shape or str(array.dtype) != dtype:
            got = f"{array.dtype}{list(array.shape)}"
            return f"teacher array {name!r} is {got}, {dtype}{list(shape)} expected"
        if not np.isfinite(array).all():
            return f"teacher array {name!r} has non-finite values"
    return ""


def signature(arrays: Mapping[str, np.ndarray]) -> dict[str, tuple[tuple[int, ...], str]]:
    """Each array's shape and dtype, by name."""
    return {k: (tuple(a.shape), str(a.dtype)) for k, a in arrays.items()}


def clipped_mean(
    contributions: Sequence[tuple[dict[str, np.ndarray], float]], factor: float
) -> dict[str, np.ndarray]:
    """The weighted mean after clipping each contribution's deviation from the
    coordinate-wise median (L2 over all arrays) to ``factor`` x the median deviation.

    With honest replies little or nothing is clipped; a reply scaled far from the
    others moves the mean by at most ``factor`` x a typical deviation x its weight.
    """
    names = sorted(contributions[0][0])
    center = {k: np.median(np.stack([a[k] for a, _ in contributions]), axis=0) for k in names}
    gaps = [
        math.sqrt(sum(float(np.square(a[k] - center[k]).sum()) for k in names))
        for a, _ in contributions
    ]
    bound = factor * float(np.median(gaps))
    clipped = []
    for (arrays, weight), gap in zip(contributions, gaps, strict=True):
        scale = min(1.0, bound / gap) if gap > 0 else 1.0
        clipped.append(({k: center[k] + scale * (arrays[k] - center[k]) for k in names}, weight))
    return average_arrays(clipped)


class TeacherFederation:
    """The server's side: what to send each round, and averaging what comes back.

    Teacher replies are checked before they count (:meth:`collect`) and pooled
    by ``aggregation``: a robust rule (median, trimmed-mean, krum) as for the
    student, else the example-weighted mean of the replies clipped towards
    their median (:func:`clipped_mean`).
    """

    def __init__(
        self,
        rounds: int,
        aggregation: str = "fedavg",
        trim_fraction: float = 0.2,
        byzantine: int = 1,
        start: dict[str, np.ndarray] | None = None,
        early_end: bool = False,
    ) -> None:
        self.rounds = rounds
        self.early_end = early_end
        self.start = start  # the head the teachers start from (pooled probe), if any
        self.aggregation, self.trim_fraction, self.byzantine = aggregation, trim_fraction, byzantine
        self.global_arrays: dict[str, np.ndarray] | None = None
        # The teacher that stays final if a judged average is not kept (see settle()).
        self.best_arrays: dict[str, np.ndarray] | None = start
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
            arrays = self.global_arrays if self.global_arrays is not None else self.start
            if teacher_round and arrays is not None:
                message.content[TEACHER_KEY] = ArrayRecord({k: Array(v) for k, v in arrays.items()})

    def collect(
        self,
        server_round: int,
        replies: Sequence[Message],
        sent: Sequence[Message],
        partitions: Mapping[int, int],
        student_problem: Callable[[Message], str | None] = lambda reply: None,
    ) -> TeacherReplies:
        """Record each client's teacher version; check and pool the round's adapters.

        Takes the teacher arrays out of the replies (the strategy aggregates the
        student alone). A reply whose student part the strategy would refuse
        (``student_problem``) adds nothing here; one whose teacher arrays fail
        :func:`teacher_problem` is refused whole: a failure record, one
        warning line, and it is left out of ``kept``. A client whose reply
        failed is sent the final average again when it next trains.
        """
        received = record_bytes(replies)
        offered = self._offered(replies, sent, partitions, student_problem)
        expected = self._expected([arrays for _, _, arrays, _ in offered])
        contributions, failures, refused = [], [], []
        improved: list[bool] = []
        for reply, client, arrays, report in offered:
            problem = teacher_problem(arrays, expected)
            if problem:
                logger.warning(
                    "round %d: reply of client %d rejected: %s", server_round, client, problem
                )
                failures.append(_refusal(reply, client, problem))
                refused.append(reply)
                self.versions.pop(client, None)
            else:
                contributions.append((arrays, float(report.num_examples)))
                improved.append(report.teacher_val_loss < report.teacher_untrained_val_loss)
        final_after = None
        if contributions and self.early_end and server_round < self.rounds and not any(improved):
            logger.info(
                "round %d: fine-tuning lowered no client's teacher validation loss; the "
                "federated teacher is final (teacher-fedavg-early-end)",
                server_round,
            )
            self.rounds = final_after = server_round
        if contributions:
            self.global_arrays = self.pool(contributions)
            logger.info(
                "round %d: teacher adapters of %d clients pooled (%d arrays)",
                server_round,
                len(contributions),
                len(self.global_arrays),
            )
        kept = [r for r in replies if all(r is not bad for bad in refused)]
        return TeacherReplies(kept, failures, received, final_after, bool(contributions))

    def _offered(
        self,
        replies: Sequence[Message],
        sent: Sequence[Message],
        partitions: Mapping[int, int],
        student_problem: Callable[[Message], str | None],
    ) -> list[tuple[Message, int, dict[str, np.ndarray], TrainReport]]:
        """Each usable reply's teacher arrays, taken out of it; records every teacher version."""
        offered = []
        for reply in replies:
            client = partitions.get(reply_node(reply, sent), -1)
            if reply.has_error() or student_problem(reply) is not None:
                self.versions.pop(client, None)
                continue
            report = TrainReport.from_mapping(reply.content.metric_records[METRICS_KEY])
            self.versions[client] = report.teacher_version
            if TEACHER_KEY in reply.content.array_records:
                record = reply.content.array_records[TEACHER_KEY]
                arrays = {k: a.numpy() for k, a in record.items()}
                del reply.content[TEACHER_KEY]
                offered.append((reply, client, arrays, report))
        return offered

    def _expected(
        self, offered: Sequence[Mapping[str, np.ndarray]]
    ) -> dict[str, tuple[tuple[int, ...], str]]:
        """The names, shapes and dtypes a teacher reply must have: the global adapters',
        or before there are any, those most of the round's replies share."""
        if self.global_arrays is not None:
            return signature(self.global_arrays)
        seen = [signature(arrays) for arrays in offered]
        return max(seen, key=seen.count) if seen else {}

    def pool(
        self, contributions: Sequence[tuple[dict[str, np.ndarray], float]]
    ) -> dict[str, np.ndarray]:
        """The global adapters from the accepted replies (see the class docstring)."""
        if self.aggregation in ROBUST:
            arrays = [{k: a.astype(np.float64) for k, a in c.items()} for c, _ in contributions]
            pooled = robust_aggregate(self.aggregation, arrays, self.trim_fraction, self.byzantine)
            return {k: np.asarray(v, dtype=np.float32) for k, v in pooled.items()}
        return clipped_mean(contributions, TEACHER_CLIP_FACTOR)

    def settle(self, server_round: int, keep: bool) -> None:
        """A judge's verdict on this round's average (``teacher-policy=validated``).

        ``keep``: the average is the best teacher yet, and the federation goes on.
        Otherwise the federation ends after this round, and the best teacher
        before it (an earlier average, or the start) is the final one.
        """
        if keep:
            self.best_arrays = self.global_arrays
            return
        self.rounds = min(self.rounds, server_round)
        if self.best_arrays is not None:
            self.global_arrays = self.best_arrays

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
        self.best_arrays = arrays if arrays is not None else self.start


def _refusal(reply: Message, client: int, problem: str) -> dict[str, Any]:
    """A failure record (as ``rounds.jsonl`` keeps them) for a refused teacher reply."""
    return {
        "node-id": int(reply.metadata.src_node_id),
        "partition-id": client,
        "code": REJECTED,
        "reason": f"rejected: {problem}",
    }
