"""Everything before round 1: the server's split, the nodes, the federated PCA, round 0.

1. Embed the server's held-out split with the frozen base model.
2. Wait for ``min-nodes`` nodes, ask each for its embedding statistics
   (``query.stats``) and fit the federated PCA of the pooled data (and, with
   ``teacher-probe=pooled``, the teachers' starting head from the pooled
   class moments).
3. Initialise the global student with that projection, build the strategy
   and, with ``teacher-federation=fedavg``, the teacher federation.
4. Resume from a checkpoint, or evaluate the initial student and write round 0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.serverapp import Grid

from config.run_config import RunConfig
from quantum.devices import make_executor
from quantum.student import QuantumStudent, build_student, circuit_spec, device_spec
from server_app.checkpoint import resume
from server_app.node_query import Projection, fit_projection, wait_for_nodes
from server_app.qpu_budget import QpuBudget
from server_app.results import ResultsWriter
from server_app.round_record import initial_record
from server_app.server_data import ServerData, evaluate_global
from server_app.teacher_federation import TeacherFederation, average_arrays
from server_app.teacher_report import judge_global_teacher
from strategies.registry import build_strategy
from strategies.student_fedavg import StudentFedAvg

logger = logging.getLogger(__name__)


@dataclass
class Federation:
    """What the round loop works on, set up once before round 1."""

    config: RunConfig
    data: ServerData
    student: QuantumStudent
    arrays: ArrayRecord  # the global student
    strategy: StudentFedAvg
    teachers: TeacherFederation | None
    initial: dict[str, float]  # the initial global student on the validation split
    first_round: int
    started: float  # time.perf_counter() at the start of set-up
    server_embed_seconds: float
    # The best global student so far on the validation split (see best_val_round), and its round.
    best_arrays: ArrayRecord | None = None
    best_round: int = 0
    budget: QpuBudget | None = None  # the QPU bill and max-qpu-seconds
    # The last rounds' global students, oldest first, with their rounds (final-model=average).
    recent: list[tuple[int, ArrayRecord]] = field(default_factory=list)

    def observe_val(self, server_round: int, history: Sequence[Mapping[str, Any]]) -> None:
        """Keep the global student if ``history``'s last record is its best so far, and
        among the last ``final-average-rounds`` rounds' (``final-model=average``)."""
        if best_val_round(history) == server_round or self.best_arrays is None:
            self.best_arrays, self.best_round = self.arrays, server_round
        if self.config.final_model == "average":
            kept = [*self.recent, (server_round, self.arrays)]
            self.recent = kept[-self.config.policy.final_average_rounds :]

    def final_student(self) -> tuple[ArrayRecord, int]:
        """The student the run ends with (``final-model``) and the round it is from (-1: the
        last round's, or the mean of the last rounds' with ``average``)."""
        final_model = self.config.final_model
        if final_model == "best-val" and self.best_arrays is not None:
            return self.best_arrays, self.best_round
        if final_model == "average" and self.recent:
            return mean_record([arrays for _, arrays in self.recent]), -1
        return self.arrays, -1


def mean_record(records: Sequence[ArrayRecord]) -> ArrayRecord:
    """The element-wise mean of global students with the same arrays (float32)."""
    mean = average_arrays([({k: a.numpy() for k, a in r.items()}, 1.0) for r in records])
    return ArrayRecord({k: Array(v) for k, v in mean.items()})


def best_val_round(history: Sequence[Mapping[str, Any]]) -> int:
    """The round of ``history`` whose global student scored best on the validation split.

    Best is the highest validation accuracy (the figure the run reports), ties
    broken by the lower validation loss, then by the earlier round.
    """
    best = max(history, key=lambda r: (r["val"]["accuracy"], -r["val"]["loss"], -r["round"]))
    return int(best["round"])


def student_record(student: QuantumStudent) -> ArrayRecord:
    """The student's parameters as a Flower ArrayRecord."""
    return ArrayRecord({k: Array(v) for k, v in student.get_arrays().items()})


def teacher_federation(
    config: RunConfig, start: dict[str, np.ndarray] | None = None
) -> TeacherFederation | None:
    """The server's side of ``teacher-federation=fedavg`` (None when teachers stay local);
    ``start`` is the teachers' first head (the pooled probe), if any."""
    if config.teacher.federation != "fedavg":
        return None
    return TeacherFederation(
        config.teacher.fedavg_rounds,
        config.policy.aggregation,
        config.policy.trim_fraction,
        config.policy.krum_byzantine,
        start=start,
        early_end=config.teacher.fedavg_early_end,
    )


def set_up(grid: Grid, config: RunConfig, writer: ResultsWriter) -> Federation:
    """Steps 1-4 of the module docstring; round 0 (or the resumed rounds) is written."""
    fed, student_cfg = config.federation, config.student
    started = time.perf_counter()
    data = ServerData(config)
    server_embed_seconds = time.perf_counter() - started
    logger.info("waiting for at least %d clients; each embeds its rows for the PCA", fed.min_nodes)
    node_ids = wait_for_nodes(grid, fed.min_nodes, fed.node_wait_seconds)
    query_started = time.perf_counter()
    projection = fit_projection(grid, node_ids, config, data.val)
    query_seconds = time.perf_counter() - query_started
    executor = make_executor(
        device_spec(student_cfg).exact,
        circuit_spec(student_cfg, data.val.num_classes),
        seed=fed.seed,
    )
    student = build_student(student_cfg, data.val.features.shape[1], executor, fed.seed)
    student.set_projection(projection.weight, projection.bias)
    strategy = build_strategy(config)
    strategy.bind_nodes(projection.partitions)
    strategy.declare_clients(projection.clients)
    federation = Federation(
        config=config,
        data=data,
        student=student,
        arrays=student_record(student),
        strategy=strategy,
        teachers=teacher_federation(config, projection.probe_head),
        initial={},
        first_round=1,
        started=started,
        server_embed_seconds=server_embed_seconds,
        budget=QpuBudget(config, projection.clients),
    )
    if fed.resume_from:
        _resume(federation, writer)
    else:
        _round_zero(federation, writer, projection, query_seconds)
    return federation


def _resume(federation: Federation, writer: ResultsWriter) -> None:
    """Step 4 of a resumed run: the checkpoint's students, strategy, teachers and rounds."""
    config, strategy, teachers = federation.config, federation.strategy, federation.teachers
    federation.first_round, best, recent = resume(
        config.federation.resume_from, config, federation.student, strategy, writer, teachers
    )
    last = federation.first_round - 1
    federation.recent = [
        (last - len(recent) + 1 + i, ArrayRecord({k: Array(v) for k, v in arrays.items()}))
        for i, arrays in enumerate(recent)
    ]
    if teachers is not None:  # the federated teacher may have become final early
        strategy.teacher_policy.end_federation(teachers.rounds)
    assert federation.budget is not None
    federation.budget.check_before(strategy, federation.first_round, writer.rounds)
    federation.arrays = student_record(federation.student)
    federation.initial = writer.rounds[0]["val"]
    federation.best_round = best_val_round(writer.rounds)
    federation.best_arrays = (
        ArrayRecord({k: Array(v) for k, v in best.items()}) if best else federation.arrays
    )


def _round_zero(
    federation: Federation, writer: ResultsWriter, projection: Projection, query_seconds: float
) -> None:
    """Step 4 of a new run: the initial student scored on the validation split, round 0 written."""
    data, student = federation.data, federation.student
    assert federation.budget is not None
    federation.budget.check_before(federation.strategy, 1, [])  # over max-qpu-seconds: stop
    federation.initial = evaluate_global(student, federation.arrays, data.val)
    federation.best_arrays = federation.arrays  # round 0's student is a candidate too
    federation.strategy.observe_val(0, federation.initial)
    record = initial_record(
        federation.initial,
        projection.clients,
        seconds=time.perf_counter() - federation.started,
        server_embed_seconds=federation.server_embed_seconds,
        query_seconds=query_seconds,
        bytes_received=projection.bytes_received,
        failures=projection.failures,
    )
    if federation.config.data.test_every_round:
        record["test"] = evaluate_global(student, federation.arrays, data.test)
    teachers, policy = federation.teachers, federation.strategy.teacher_policy
    if policy.reads_server_val and teachers is not None and teachers.start is not None:
        record["teacher-val"] = judge_global_teacher(
            federation.config, policy, teachers, 0, (data.val_rows, data.val.features)
        )
    writer.write_round(record)
    logger.info(
        "round 0: validation acc %.3f loss %.4f (majority %.3f)",
        federation.initial["accuracy"],
        federation.initial["loss"],
        data.val.majority_rate,
    )
