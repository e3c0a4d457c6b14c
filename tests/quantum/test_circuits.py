"""Circuits: one gate list, the same circuit in PennyLane and Qiskit, on every offline device."""

from __future__ import annotations

import numpy as np
import pennylane as qml
import pytest
import torch
from qiskit.quantum_info import Statevector

from quantum.circuits import (
    CircuitSpec,
    apply_gates,
    build_qnode,
    qiskit_circuit,
    readout_from_probabilities,
)
from quantum.devices import make_qiskit_backend, parse_device
from quantum.sampler import SamplerExecutor
from quantum.student import make_student

#: Every circuit family: (model, embedding, ansatz).
CIRCUITS = [
    ("vqc", "angle", "strong"),
    ("vqc", "iqp", "strong"),
    ("vqc", "angle", "real-amplitudes"),
    ("qcnn", "angle", "strong"),
    ("qcnn", "iqp", "strong"),
]
SHOTS = 4000


def _inputs(spec: CircuitSpec, rows: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.05, np.pi - 0.05, (rows, spec.n_qubits)), rng.normal(
        0, 0.7, spec.weight_shape
    )


def _pennylane(
    spec: CircuitSpec, angles: np.ndarray, weights: np.ndarray, device: str
) -> np.ndarray:
    dev = qml.device(device, wires=spec.n_qubits)
    qnode = build_qnode(spec, dev, parse_device(device).diff_method or "best")
    out = qnode(torch.tensor(angles), torch.tensor(weights))
    if spec.readout == "expval":
        return torch.stack(list(out), dim=-1).numpy()
    return out.numpy()


def _exact_qiskit_probabilities(
    spec: CircuitSpec, angles: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Qiskit's own statevector of our Qiskit circuit, reordered to PennyLane's wire order."""
    circuit, x, w = qiskit_circuit(spec)
    circuit.remove_final_measurements()
    n = spec.n_qubits
    to_wire_order = [int(format(i, f"0{n}b")[::-1], 2) for i in range(2**n)]
    rows = []
    for row in angles:
        bound = circuit.assign_parameters(
            dict(zip([*x, *w], [*row, *weights.reshape(-1)], strict=True))
        )
        rows.append(Statevector(bound).probabilities()[to_wire_order])
    return np.array(rows)


@pytest.mark.parametrize(("model", "embedding", "ansatz"), CIRCUITS)
@pytest.mark.parametrize(("readout", "classes"), [("expval", 3), ("probs", 3), ("probs", 2)])
def test_qiskit_circuit_equals_the_pennylane_circuit(
    model: str, embedding: str, ansatz: str, readout: str, classes: int
) -> None:
    # Same gates, same conventions, same qubit order: Qiskit's statevector of the
    # circuit we send to backends gives PennyLane's readout to 1e-6.
    spec = CircuitSpec(4, 2, classes, readout, model, embedding, ansatz)
    angles, weights = _inputs(spec)
    expected = _pennylane(spec, angles, weights, "default.qubit")
    got = readout_from_probabilities(spec, _exact_qiskit_probabilities(spec, angles, weights))
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize(("model", "embedding", "ansatz"), CIRCUITS)
def test_lightning_adjoint_equals_default_qubit_backprop(
    model: str, embedding: str, ansatz: str
) -> None:
    spec = CircuitSpec(4, 2, 3, "expval", model, embedding, ansatz)
    angles, weights = _inputs(spec, seed=1)
    values, grads = [], []
    for device in ("default.qubit", "lightning.qubit"):
        dev = qml.device(device, wires=4)
        qnode = build_qnode(spec, dev, str(parse_device(device).diff_method))
        w = torch.tensor(weights, requires_grad=True)
        out = torch.stack(list(qnode(torch.tensor(angles), w)), dim=-1)
        (out * torch.arange(1.0, 4.0, dtype=torch.float64)).sum().backward()
        values.append(out.detach().numpy())
        grads.append(w.grad.numpy())
    np.testing.assert_allclose(values[1], values[0], atol=1e-6)
    np.testing.assert_allclose(grads[1], grads[0], atol=1e-6)
    assert np.abs(grads[0]).max() > 1e-3  # the gradient is not trivially zero


def test_strong_ansatz_is_pennylanes_strongly_entangling_layers() -> None:
    spec = CircuitSpec(5, 3, 3)
    angles, weights = _inputs(spec, seed=2)
    dev = qml.device("default.qubit", wires=5)

    @qml.qnode(dev)
    def reference(inputs: np.ndarray, w: np.ndarray) -> list:
        qml.AngleEmbedding(inputs, wires=range(5), rotation="Y")
        qml.StronglyEntanglingLayers(w, wires=range(5))
        return [qml.expval(qml.PauliZ(q)) for q in range(3)]

    @qml.qnode(dev)
    def ours(inputs: np.ndarray, w: np.ndarray) -> list:
        apply_gates(spec, inputs, w)
        return [qml.expval(qml.PauliZ(q)) for q in range(3)]

    np.testing.assert_allclose(
        np.array(ours(angles, weights)), np.array(reference(angles, weights)), atol=1e-10
    )


@pytest.mark.parametrize(
    ("spec", "weights", "readout_wires"),
    [
        (CircuitSpec(4, 3, 3), (3, 4, 3), (0, 1, 2)),
        (CircuitSpec(4, 3, 3, ansatz="real-amplitudes"), (4, 4), (0, 1, 2)),
        # 8 wires -> 4 (one pooling; 2 would not cover 3 classes): 2 conv levels x 2 layers x 4 + 2.
        (CircuitSpec(8, 2, 3, model="qcnn"), (18,), (0, 2, 4)),
        # 8 -> 4 -> 2 -> 1 for one probs wire: 3 conv levels x 1 layer x 4 + 3 poolings x 2.
        (CircuitSpec(8, 1, 2, "probs", model="qcnn"), (18,), (0,)),
    ],
)
def test_parameter_counts_and_readout_wires(
    spec: CircuitSpec, weights: tuple[int, ...], readout_wires: tuple[int, ...]
) -> None:
    assert spec.weight_shape == weights
    assert spec.readout_wires == readout_wires
    used = {a.index for g in spec.gates for a in g.angles if a.source == "w"}
    assert used == set(range(spec.n_weights))  # every weight is in the circuit


OFFLINE_DEVICES = ["default.qubit", "lightning.qubit", "qiskit.aer", "fake:FakeManilaV2"]
#: lightning.qubit's adjoint method rejects probs: a ConfigError, tested in test_student.
DEVICE_READOUTS = [
    (d, r)
    for d in OFFLINE_DEVICES
    for r in ("expval", "probs")
    if (d, r) != ("lightning.qubit", "probs")
]


@pytest.mark.parametrize(("device", "readout"), DEVICE_READOUTS)
@pytest.mark.parametrize(("model", "embedding", "ansatz"), CIRCUITS)
def test_every_circuit_gives_a_distribution_on_every_offline_device(
    device: str, model: str, embedding: str, ansatz: str, readout: str
) -> None:
    student = make_student(
        6, 3, n_qubits=4, n_layers=1, readout=readout, device=device, seed=3,
        model=model, embedding=embedding, ansatz=ansatz, shots=256,
    )  # fmt: skip
    features = torch.as_tensor(np.random.default_rng(4).normal(size=(5, 6)), dtype=torch.float32)
    z = student.projection(features)
    raw = student.executor.run(torch.pi / 2 + torch.atan(z).double(), student.weights.double())
    if readout == "probs":  # the circuit's own distribution over the readout wires' states
        assert raw.shape == (5, 4) and torch.all(raw >= 0)
        assert torch.allclose(raw.sum(dim=1), torch.ones(5, dtype=raw.dtype), atol=1e-9)
    else:
        assert raw.shape == (5, 3) and torch.all(raw.abs() <= 1 + 1e-9)
    probabilities = torch.softmax(student(features), dim=1)
    assert probabilities.shape == (5, 3) and torch.all(probabilities >= 0)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(5), atol=1e-6)


def _shot_bound(p: np.ndarray, shots: int) -> np.ndarray:
    """5 standard deviations of an estimated probability, plus one count of slack."""
    return 5 * np.sqrt(p * (1 - p) / shots) + 1 / shots


@pytest.mark.parametrize(
    "spec", [CircuitSpec(4, 2, 3, "probs"), CircuitSpec(4, 1, 2, "probs", "qcnn", "iqp")]
)
def test_aer_agrees_with_the_statevector_within_shot_noise(spec: CircuitSpec) -> None:
    angles, weights = _inputs(spec, seed=5)
    exact = _exact_qiskit_probabilities(spec, angles, weights)
    backend = make_qiskit_backend(parse_device("qiskit.aer"), 4, seed=11)
    estimated = SamplerExecutor(spec, backend, shots=SHOTS, seed=11).probabilities(angles, weights)
    assert np.all(np.abs(estimated - exact) <= _shot_bound(exact, SHOTS))


def test_fake_manila_agrees_with_the_statevector_within_its_noise() -> None:
    # FakeManilaV2 adds the snapshot's gate, readout and decoherence errors to
    # shot noise. Stated bound: total variation distance <= 0.25 per input on
    # these 4-qubit circuits (measured 0.09-0.17 at 4,000 shots), while a
    # wrong qubit order or gate convention moves it far past that.
    spec = CircuitSpec(4, 1, 3, "probs")
    angles, weights = _inputs(spec, seed=6)
    exact = _exact_qiskit_probabilities(spec, angles, weights)
    backend = make_qiskit_backend(parse_device("fake:FakeManilaV2"), 4, seed=12)
    estimated = SamplerExecutor(spec, backend, shots=SHOTS, seed=12).probabilities(angles, weights)
    distance = 0.5 * np.abs(estimated - exact).sum(axis=1)
    assert np.all(distance <= 0.25), distance
    reversed_order = exact.reshape(-1, 2, 2, 2, 2).transpose(0, 4, 3, 2, 1).reshape(-1, 16)
    wrong = 0.5 * np.abs(estimated - reversed_order).sum(axis=1)
    assert wrong.mean() > distance.mean() + 0.1  # the check can tell the qubit order apart


def test_batched_sampler_path_equals_the_per_sample_path() -> None:
    spec = CircuitSpec(4, 2, 3, "probs")
    angles, weights = _inputs(spec, rows=6, seed=7)
    backend = make_qiskit_backend(parse_device("qiskit.aer"), 4, seed=13)
    batched = SamplerExecutor(spec, backend, shots=SHOTS, seed=13, batched=True)
    per_sample = SamplerExecutor(spec, backend, shots=SHOTS, seed=13, batched=False)
    # The same transpiled circuit and the same parameter rows go out either way...
    np.testing.assert_array_equal(
        batched.parameter_values(angles, weights), per_sample.parameter_values(angles, weights)
    )
    a, b = batched.probabilities(angles, weights), per_sample.probabilities(angles, weights)
    # ...and the estimates agree within the shot noise of two independent samples.
    exact = _exact_qiskit_probabilities(spec, angles, weights)
    assert np.all(np.abs(a - b) <= np.sqrt(2) * _shot_bound(exact, SHOTS))
    assert (batched.meter.jobs, per_sample.meter.jobs) == (1, 6)
    assert batched.meter.shots == per_sample.meter.shots == 6 * SHOTS
    # Through the executor interface every row counts as one execution, whichever path.
    for executor in (batched, per_sample):
        executor.reset_meter()
        executor.run(torch.as_tensor(angles), torch.as_tensor(weights))
        assert executor.meter.executions == 6
