"""Jobs on IBM backends: one job per SPSA step, Runtime Batch and Session, the cost model."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from qiskit.primitives import StatevectorSampler
from qiskit_ibm_runtime.fake_provider import FakeManilaV2

from quantum.circuits import CircuitSpec
from quantum.cost import epoch_batches, message_cost
from quantum.distill import evaluate_student, train_student
from quantum.sampler import (
    FALLBACK_SHOT_SECONDS,
    JOB_OVERHEAD_SECONDS,
    SamplerExecutor,
    job_qpu_seconds,
    shot_seconds,
)
from quantum.student import QuantumStudent
from strategies.shots import shot_budget

SPEC = CircuitSpec(3, 1, 2)


def _task(rows: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(rows, 3)).astype(np.float32)
    labels = rng.integers(0, 2, size=rows)
    return features, labels, rng.normal(size=(rows, 2)).astype(np.float32)


def _student(executor: SamplerExecutor) -> QuantumStudent:
    student = QuantumStudent(3, executor, seed=4)
    student.set_projection(np.eye(3, dtype=np.float32), np.zeros(3, dtype=np.float32))
    return student


def _spsa(student: QuantumStudent, steps: int, rows: int = 40) -> None:
    features, labels, teacher = _task(rows)
    train_student(
        student, features, labels, teacher, steps=steps, lr=0.1, batch_size=16,
        temperature=1.0, alpha=0.5, seed=9, optimizer="spsa",
    )  # fmt: skip


def test_the_one_job_spsa_step_gives_the_update_of_two_separate_jobs() -> None:
    """Qiskit's reference sampler with one shared generator draws the same shots however
    the rows are split into jobs, so both ways must give the same student, bit for bit.

    Both ways run the one transpiled circuit (one executor): two transpilations may
    lay the circuit out differently, and float differences then change the draws.
    """
    executor = SamplerExecutor(SPEC, FakeManilaV2(), shots=128, sampler=StatevectorSampler())
    start = _student(executor).get_arrays()
    trained = {}
    for stack in (True, False):
        executor.stack = stack
        executor._sampler = StatevectorSampler(seed=np.random.default_rng(11))  # fresh draws
        executor.reset_meter()
        student = _student(executor)
        _spsa(student, steps=4)
        trained[stack] = student.get_arrays()
        assert student.meter.jobs == (4 if stack else 8)
        rows = 2 * (16 + 16 + 8 + 16)  # 40 rows in batches of 16, both perturbations
        assert student.meter.executions == rows and student.meter.shots == rows * 128
    for key, value in trained[True].items():
        np.testing.assert_array_equal(value, trained[False][key], err_msg=key)
    assert not np.array_equal(trained[True]["weights"], start["weights"])  # it did move


@pytest.mark.parametrize("mode", ["batch", "session"])
def test_a_batch_or_session_holds_every_job_of_its_scope(mode: str) -> None:
    """qiskit-ibm-runtime's local testing mode runs Batch and Session jobs on a fake backend."""
    executor = SamplerExecutor(SPEC, FakeManilaV2(), shots=64, mode=mode, seed=3)
    student = _student(executor)
    features, labels, _ = _task()
    with executor.scope():
        evaluate_student(student, features, labels)
        _spsa(student, steps=2)
    inside = list(executor.job_modes)
    assert len(inside) == 3 and all(m is inside[0] for m in inside)
    assert type(inside[0]).__name__ == mode.capitalize() and not inside[0]._active  # closed
    with executor.scope():
        evaluate_student(student, features, labels)
    assert type(executor.job_modes[3]).__name__ == mode.capitalize()
    assert executor.job_modes[3] is not inside[0]  # a new scope, a new batch
    executor.reset_meter()
    evaluate_student(student, features, labels)  # outside a scope: a plain job
    assert executor.job_modes == [executor.backend] and executor.execution_mode == mode


def test_the_cost_model_counts_the_jobs_and_shots_a_message_runs() -> None:
    """message_cost's jobs, shots and estimated seconds are what the executor meters."""
    backend = FakeManilaV2()
    for optimizer, steps in (("spsa", 5), ("cobyla", 16)):
        executor = SamplerExecutor(SPEC, backend, shots=96, seed=1)
        assert executor.seconds_per_shot > 2.5e-4  # circuit time plus the 250 us rep delay
        student = _student(executor)
        features, labels, teacher = _task(37)
        val = features[:13]
        evaluate_student(student, val, labels[:13])
        train_student(
            student, features, labels, teacher, steps=steps, lr=0.1, batch_size=16,
            temperature=1.0, alpha=0.5, seed=9, optimizer=optimizer,
        )  # fmt: skip
        evaluate_student(student, val, labels[:13])
        expected = message_cost(
            optimizer=optimizer, steps=steps, shots=96, train_rows=37, val_rows=13,
            batch_size=16, seconds_per_shot=executor.seconds_per_shot,
        )  # fmt: skip
        metered = student.meter
        assert (metered.jobs, metered.shots, metered.executions) == (
            expected.jobs,
            expected.shots,
            expected.executions,
        ), optimizer
        assert metered.estimated_qpu_seconds == pytest.approx(expected.estimated_qpu_seconds)
    # An evaluate message (Flower's evaluate phase): the validation rows once, no step.
    executor = SamplerExecutor(SPEC, backend, shots=96, seed=1)
    student = _student(executor)
    features, labels, _ = _task(13)
    evaluate_student(student, features, labels)
    expected = message_cost(
        optimizer="spsa", steps=0, shots=96, train_rows=0, val_rows=13, batch_size=16,
        seconds_per_shot=executor.seconds_per_shot, validations=1,
    )  # fmt: skip
    metered = student.meter
    assert (metered.jobs, metered.shots, metered.executions) == (1, 96 * 13, 13)
    assert (expected.jobs, expected.shots, expected.executions) == (1, 96 * 13, 13)
    assert metered.estimated_qpu_seconds == pytest.approx(expected.estimated_qpu_seconds)
    assert epoch_batches(37, 16) == [16, 16, 5]
    assert job_qpu_seconds(10, 100, 1e-3) == pytest.approx(JOB_OVERHEAD_SECONDS + 1.0)
    assert job_qpu_seconds(10, 100, 0.0) == 0.0
    nothing = message_cost(
        optimizer="adam", steps=5, shots=96, train_rows=37, val_rows=13, batch_size=16,
        seconds_per_shot=0.0,
    )  # fmt: skip
    assert nothing.jobs == 0 and nothing.shots == 0


def test_shots_ramp_from_min_shots_to_shots() -> None:
    ramp = [
        shot_budget("ramp", r, shots=1024, min_shots=256, num_rounds=5)[0] for r in (1, 2, 3, 4, 5)
    ]
    assert ramp == [256, 448, 640, 832, 1024]
    assert shot_budget("fixed", 1, shots=1024, min_shots=256, num_rounds=5) == (1024, "fixed")
    assert shot_budget("ramp", 1, shots=300, min_shots=300, num_rounds=1)[0] == 300


class _NoDurations:
    """A circuit whose duration cannot be read (a backend target without timings)."""

    def estimate_duration(self, target: object, unit: str = "s") -> float:
        raise ValueError("target has no instruction durations")


class _ZeroDuration:
    def estimate_duration(self, target: object, unit: str = "s") -> float:
        return 0.0


def test_a_billed_shot_whose_time_cannot_be_read_is_never_priced_at_zero(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = FakeManilaV2()
    sampler_logger = logging.getLogger("quantum.sampler")
    sampler_logger.addHandler(caplog.handler)  # seen even where a run's logging set-up
    try:  # stopped propagation
        assert shot_seconds(_NoDurations(), backend, billed=True) == FALLBACK_SHOT_SECONDS
    finally:
        sampler_logger.removeHandler(caplog.handler)
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "fake_manila" in line and "conservatively" in line
    assert shot_seconds(_ZeroDuration(), object(), billed=True) == FALLBACK_SHOT_SECONDS
    # A simulator bills nothing: 0 there is the truth.
    assert shot_seconds(_NoDurations(), backend, billed=False) == 0.0
    # A readable duration is used as it is: gates + measurement + the repetition delay.
    executor = SamplerExecutor(SPEC, backend, shots=64, billed=True)
    assert FALLBACK_SHOT_SECONDS > executor.seconds_per_shot > backend.default_rep_delay
