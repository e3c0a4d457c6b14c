"""Devices, IBM credentials, cost metering and the gradient-free optimizers."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import quantum.devices as devices
from config.errors import ConfigError
from quantum.circuits import CircuitSpec
from quantum.devices import make_qiskit_backend, parse_device
from quantum.distill import evaluate_student, train_student
from quantum.metering import CostMeter, job_seconds, sum_costs
from quantum.optimizers import resolve_optimizer
from quantum.student import make_student

FAKE_TOKEN = "fake-token-0123456789abcdef"


def test_device_names_parse_to_their_family() -> None:
    assert parse_device("default.qubit").diff_method == "backprop"
    assert parse_device("lightning.qubit").diff_method == "adjoint"
    for name in ("qiskit.aer", "fake:FakeManilaV2", "ibm:ibm_torino", "ibm:least-busy"):
        assert parse_device(name).shots_based
    assert parse_device("ibm:least-busy").is_hardware and not parse_device("qiskit.aer").is_hardware


def test_missing_ibm_credentials_give_one_line_naming_the_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    for name in devices.IBM_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(devices, "_SAVED_ACCOUNT", devices.Path(str(tmp_path)) / "none.json")
    with pytest.raises(ConfigError) as err:
        make_qiskit_backend(parse_device("ibm:least-busy"), 4)
    message = str(err.value)
    assert "\n" not in message
    assert "QISKIT_IBM_TOKEN" in message and "QISKIT_IBM_INSTANCE" in message


class _RefusingService:
    """Stands in for QiskitRuntimeService where the network would be used; echoes the token."""

    def __init__(self) -> None:
        import os

        raise RuntimeError(f"401 Client Error: invalid token {os.environ['QISKIT_IBM_TOKEN']}")


class _FakeService:
    """A service whose least busy backend is the offline FakeManilaV2 replica."""

    def least_busy(self, **kwargs: object) -> object:
        from qiskit_ibm_runtime.fake_provider import FakeManilaV2

        assert kwargs["min_num_qubits"] == 4 and kwargs["operational"] is True
        return FakeManilaV2()


def test_a_token_never_reaches_errors_or_logs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import qiskit_ibm_runtime

    monkeypatch.setenv("QISKIT_IBM_TOKEN", FAKE_TOKEN)
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(qiskit_ibm_runtime, "QiskitRuntimeService", _RefusingService)
    with pytest.raises(ConfigError) as err:
        make_qiskit_backend(parse_device("ibm:least-busy"), 4)
    assert "***" in str(err.value) and FAKE_TOKEN not in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__

    # With a (fake) working service the student runs and meters, and logs no token.
    monkeypatch.setattr(qiskit_ibm_runtime, "QiskitRuntimeService", _FakeService)
    student = make_student(6, 3, n_qubits=4, n_layers=1, device="ibm:least-busy", shots=64)
    student(torch.zeros(3, 6))
    metrics = student.meter.as_metrics()
    assert metrics["quantum-jobs"] == 1 and metrics["quantum-shots"] == 3 * 64
    assert FAKE_TOKEN not in caplog.text and FAKE_TOKEN not in repr(metrics)


class _RefusingSavedService:
    """Stands in for QiskitRuntimeService reading a saved account; echoes that token."""

    def __init__(self) -> None:
        saved = json.loads(devices._SAVED_ACCOUNT.read_text())
        raise RuntimeError(f"401 Client Error: invalid token {saved['work']['token']}")


def test_a_token_from_a_saved_account_is_redacted_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No QISKIT_IBM_TOKEN: the token comes from save_account's file, and is still hidden."""
    import qiskit_ibm_runtime

    monkeypatch.delenv("QISKIT_IBM_TOKEN", raising=False)
    saved = tmp_path / "qiskit-ibm.json"
    account = {"channel": "ibm_quantum_platform", "token": FAKE_TOKEN, "instance": "crn:x"}
    saved.write_text(json.dumps({"work": account, "broken": "not an account"}))
    monkeypatch.setattr(devices, "_SAVED_ACCOUNT", saved)
    monkeypatch.setattr(qiskit_ibm_runtime, "QiskitRuntimeService", _RefusingSavedService)
    with pytest.raises(ConfigError) as err:
        make_qiskit_backend(parse_device("ibm:least-busy"), 4)
    assert "invalid token ***" in str(err.value) and FAKE_TOKEN not in str(err.value)
    # An unreadable account file hides nothing and breaks nothing.
    saved.write_text("{not json")
    assert devices.redact(f"x {FAKE_TOKEN}") == f"x {FAKE_TOKEN}"


def test_a_saved_account_token_reaches_no_log_error_or_file_of_a_run(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    shared_data: Path,
) -> None:
    """A federation on ``ibm:least-busy`` whose service refuses the saved account's token:
    the run stops with one line, and the token is in no log line, error or results file."""
    import qiskit_ibm_runtime

    from harness.inprocess import run_in_process

    monkeypatch.delenv("QISKIT_IBM_TOKEN", raising=False)
    saved = tmp_path / "account" / "qiskit-ibm.json"
    saved.parent.mkdir()
    saved.write_text(json.dumps({"work": {"channel": "ibm_cloud", "token": FAKE_TOKEN}}))
    monkeypatch.setattr(devices, "_SAVED_ACCOUNT", saved)
    monkeypatch.setattr(qiskit_ibm_runtime, "QiskitRuntimeService", _RefusingSavedService)
    caplog.set_level(logging.DEBUG)
    results = tmp_path / "results"
    config = {
        "task": "tweeteval",
        "data-dir": str(shared_data / "tweeteval_sentiment"),
        "results-dir": str(results),
        "min-nodes": 2,
        "max-train-rows": 60,
        "device": "ibm:least-busy",
        "optimizer": "spsa",
    }
    with pytest.raises(ConfigError) as err:
        run_in_process(config, num_nodes=2)
    assert "invalid token ***" in str(err.value) and "\n" not in str(err.value)
    assert FAKE_TOKEN not in str(err.value) and FAKE_TOKEN not in caplog.text
    written = [p for p in results.rglob("*") if p.is_file()] if results.exists() else []
    assert not [p for p in written if FAKE_TOKEN in p.read_text(errors="replace")]


@pytest.mark.parametrize(
    ("name", "kind", "differentiable"),
    [
        ("default.qubit", "PennyLaneExecutor", True),
        ("lightning.qubit", "PennyLaneExecutor", True),
        ("qiskit.aer", "SamplerExecutor", False),
        ("fake:FakeManilaV2", "SamplerExecutor", False),
        ("ibm:least-busy", "SamplerExecutor", False),
    ],
)
def test_every_device_kind_is_built_through_the_one_parser(
    name: str, kind: str, differentiable: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """parse_device reads the name once; make_executor builds the one object that runs it."""
    import qiskit_ibm_runtime

    monkeypatch.setenv("QISKIT_IBM_TOKEN", FAKE_TOKEN)
    monkeypatch.setattr(qiskit_ibm_runtime, "QiskitRuntimeService", _FakeService)
    spec = parse_device(name, shots=32)
    executor = devices.make_executor(spec, CircuitSpec(4, 1, 3), seed=1)
    assert type(executor).__name__ == kind and executor.differentiable is differentiable
    out = executor.run(torch.full((2, 4), 0.3, dtype=torch.float64), torch.zeros(12).double())
    assert out.shape == (2, 3) and out.dtype == torch.float64
    assert executor.meter.executions == 2
    assert executor.meter.shots == (0 if differentiable else 2 * 32)


def test_no_module_but_the_device_layer_reads_a_device_name() -> None:
    """Device names are spelled (prefixes, names) only in quantum/devices.py."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    pattern = re.compile(r"[\"'](fake:|ibm:|qiskit\.aer|lightning\.qubit)")
    spelled = [
        str(path.relative_to(repo))
        for folder in ("tasks", "llm", "quantum", "strategies", "client_app", "server_app")
        for path in (repo / folder).rglob("*.py")
        if path.name != "devices.py" and pattern.search(path.read_text())
    ]
    assert spelled == []


def test_job_seconds_reads_the_cloud_and_the_local_formats() -> None:
    cloud = {
        "timestamps": {
            "created": "2026-03-01T10:00:00.000Z",
            "running": "2026-03-01T10:02:30.500Z",
            "finished": "2026-03-01T10:02:41Z",
        },
        "usage": {"quantum_seconds": 4, "seconds": 4},
    }
    assert job_seconds(cloud) == (4.0, 150.5)
    start = dt.datetime(2026, 3, 1, 10, 0, 0)
    local = {
        "timestamps": {
            "created": start,
            "running": start + dt.timedelta(seconds=2),
            "finished": start,
        },
        "usage": {"quantum_seconds": 0, "seconds": 0},
    }
    assert job_seconds(local) == (0.0, 2.0)
    assert job_seconds({}) == (0.0, 0.0)
    meter = CostMeter()
    meter.add_job(cloud)
    meter.add_job(None)
    assert (meter.jobs, meter.qpu_seconds, meter.queue_seconds) == (2, 4.0, 150.5)
    total = sum_costs([meter.as_metrics(), {"quantum-jobs": 3}, {}])
    assert total["quantum-jobs"] == 5 and total["qpu-seconds"] == 4.0


def test_optimizer_resolution() -> None:
    assert resolve_optimizer("auto", parse_device("default.qubit")) == "adam"
    assert resolve_optimizer("auto", parse_device("fake:FakeManilaV2")) == "spsa"
    assert resolve_optimizer("cobyla", parse_device("lightning.qubit")) == "cobyla"
    with pytest.raises(
        ConfigError, match="optimizer='adam': device='qiskit.aer' samples with shots"
    ):
        resolve_optimizer("adam", parse_device("qiskit.aer"))
    with pytest.raises(ConfigError, match="optimizer='lbfgs': must be one of"):
        resolve_optimizer("lbfgs", parse_device("default.qubit"))


def _task(rows: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, 4)).astype(np.float32)
    labels = (features[:, 0] > 0).astype(np.int64) + (features[:, 1] > 0.8)
    return features, labels, np.zeros((rows, 3), dtype=np.float32)


@pytest.mark.parametrize(
    ("optimizer", "device"),
    [("cobyla", "default.qubit"), ("spsa", "default.qubit"), ("spsa", "qiskit.aer")],
)
def test_gradient_free_optimizers_lower_the_loss(optimizer: str, device: str) -> None:
    features, labels, teacher = _task()
    student = make_student(4, 3, n_qubits=4, n_layers=2, device=device, shots=512, seed=1)
    student.set_projection(np.eye(4, dtype=np.float32), np.zeros(4, dtype=np.float32))
    before, _ = evaluate_student(student, features, labels)
    projection = student.get_arrays()["projection.weight"]
    fit = train_student(
        student, features, labels, teacher, steps=40, lr=0.1, batch_size=48,
        temperature=1.0, alpha=0.0, seed=3, optimizer=optimizer,
    )  # fmt: skip
    after, _ = evaluate_student(student, features, labels)
    assert after < before - 0.02, (before, after)
    assert fit["steps"] == 40 and np.isfinite(fit["train_loss"])
    np.testing.assert_array_equal(student.get_arrays()["projection.weight"], projection)
    if device == "qiskit.aer":  # SPSA: one job per iteration, plus the two evaluations
        assert student.meter.jobs == 40 + 2
        assert student.meter.shots == student.meter.executions * 512


def test_aer_takes_a_fake_backends_noise_model() -> None:
    noisy = make_qiskit_backend(parse_device("qiskit.aer", noise_model="FakeManilaV2"), 4)
    clean = make_qiskit_backend(parse_device("qiskit.aer"), 4)
    assert not noisy.options.noise_model.is_ideal() and clean.options.noise_model is None


def test_a_backend_too_small_for_the_circuit_is_refused() -> None:
    with pytest.raises(ConfigError, match="has 5 qubits, the circuit needs 8; lower n-qubits"):
        make_qiskit_backend(parse_device("fake:FakeManilaV2"), 8)


def test_cobyla_refuses_a_budget_below_its_floor_and_runs_any_other_exactly() -> None:
    from quantum.optimizers import check_cobyla_budget, cobyla, cobyla_floor

    features, labels, teacher = _task()
    student = make_student(4, 3, n_qubits=4, n_layers=3, seed=1)  # 36 weights + 3 + 3 = 42
    tuned = 36 + 2 * 3
    assert cobyla_floor(tuned) == 44
    with pytest.raises(ConfigError) as err:
        train_student(
            student, features, labels, teacher, steps=5, lr=0.1, batch_size=48,
            temperature=1.0, alpha=0.0, seed=3, optimizer="cobyla",
        )  # fmt: skip
    assert "local-steps=5: COBYLA needs at least 44 evaluations" in str(err.value)
    assert "\n" not in str(err.value)
    check_cobyla_budget(0, tuned)  # 0 steps: nothing to run, nothing to refuse
    calls = []
    _, values = cobyla(lambda theta: calls.append(1) or float(np.sum(theta**2)), np.ones(4), 9)
    assert len(values) == len(calls) == 9  # SciPy's floor for 4 unknowns is 6: 9 is honoured
    fit = train_student(
        student, features, labels, teacher, steps=50, lr=0.1, batch_size=48,
        temperature=1.0, alpha=0.0, seed=3, optimizer="cobyla",
    )  # fmt: skip
    assert fit["steps"] == fit["evaluations"] == 50
    # Each evaluation scores all 48 train rows (a fixed objective): 50 x 48 executions.
    assert student.meter.executions == 50 * 48


def test_preflight_refuses_a_cobyla_budget_below_the_floor() -> None:
    from config import RunConfig
    from server_app.preflight import preflight

    # The default task (genomic) has 2 classes: 36 circuit weights + 2 scales + 2 biases.
    with pytest.raises(ConfigError, match="local-steps=20: COBYLA needs at least 42"):
        preflight(RunConfig.from_flat({"optimizer": "cobyla"}))
    # A strategy that may plan fewer steps than local-steps is held to min-steps too.
    for planner in ({"steps-policy": "adaptive"}, {"deadline": "median"}):
        with pytest.raises(ConfigError, match="min-steps=5: COBYLA needs at least 42"):
            preflight(RunConfig.from_flat({"optimizer": "cobyla", "local-steps": 50, **planner}))
    # The default llm-guided (fixed budgets, no cap) and FedAvg send local-steps.
    preflight(RunConfig.from_flat({"optimizer": "cobyla", "local-steps": 42}))
    preflight(RunConfig.from_flat({"optimizer": "cobyla", "strategy": "fedavg", "local-steps": 42}))


@pytest.mark.parametrize("device", ["qiskit.aer", "fake:FakeManilaV2"])
def test_every_job_has_its_own_reproducible_seed(device: str) -> None:
    """Identical parameters give other counts in another round, the same counts on a rerun."""
    spec = CircuitSpec(4, 1, 3, "probs")
    executor = devices.make_executor(parse_device(device, shots=200), spec, seed=7)
    angles, weights = np.full((3, 4), 0.7), np.linspace(0, 1, spec.n_weights)
    sampled = {}
    for server_round in (1, 2, 1):
        executor.reseed(server_round, 0)
        first = executor.probabilities(angles, weights)
        second = executor.probabilities(angles, weights)  # the next job of the same round
        sampled.setdefault(server_round, []).append((first, second))
    (one_a, one_b), (one_again, _) = sampled[1]
    ((two, _),) = sampled[2]
    assert not np.array_equal(one_a, two)  # another round: other shot noise
    assert not np.array_equal(one_a, one_b)  # another job: other shot noise
    np.testing.assert_array_equal(one_a, one_again)  # same (seed, round, partition, job)


def test_a_job_aer_rejects_once_is_resubmitted_with_its_seed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Aer's intermittent ``invalid probability vector`` costs one resubmission, not the job.

    Aer itself rejects the noise model here: the dictionary it loads has one error's
    probabilities 1e-6 away from a total of 1, for the first ``rejected`` loads.
    """
    spec = CircuitSpec(4, 1, 3, "probs")
    device = parse_device("qiskit.aer", shots=100, noise_model="FakeManilaV2")
    executor = devices.make_executor(device, spec, seed=3)
    angles, weights = np.full((2, 4), 0.4), np.linspace(0, 1, spec.n_weights)
    executor.reseed(1, 0)
    expected = executor.probabilities(angles, weights)
    noise = executor.backend.options.noise_model
    to_dict, loads = noise.to_dict, []

    def rejected_first(rejected: int) -> Callable[..., dict]:
        def load(serializable: bool = False) -> dict:
            loads.append(serializable)
            found = to_dict(serializable)
            if len(loads) <= rejected:
                qerror = next(e for e in found["errors"] if e["type"] == "qerror")
                qerror["probabilities"][0] += 1e-6
            return found

        return load

    monkeypatch.setattr(noise, "to_dict", rejected_first(1))
    executor.reseed(1, 0)
    sampler_logger = logging.getLogger("quantum.sampler")
    sampler_logger.addHandler(caplog.handler)  # seen even where a run's logging set-up
    try:  # stopped propagation
        again = executor.probabilities(angles, weights)
    finally:
        sampler_logger.removeHandler(caplog.handler)
    assert len(loads) == 2 and "resubmitting a simulator job once" in caplog.text
    np.testing.assert_array_equal(again, expected)  # the same seed: the same shots

    loads.clear()
    monkeypatch.setattr(noise, "to_dict", rejected_first(2))
    with pytest.raises(ValueError, match="invalid probability vector"):
        executor.probabilities(angles, weights)  # rejected again: the caller's error
    assert len(loads) == 2
