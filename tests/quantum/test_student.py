"""The student circuit: distributions over classes, device agreement, gradients, arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from config.errors import ConfigError
from quantum.circuits import build_vqc
from quantum.student import QuantumStudent


def _features(rows: int = 5, dims: int = 6) -> torch.Tensor:
    return torch.as_tensor(np.random.default_rng(0).normal(size=(rows, dims)), dtype=torch.float32)


@pytest.mark.parametrize(
    ("readout", "device", "classes"),
    [
        ("expval", "default.qubit", 2),
        ("expval", "default.qubit", 3),
        ("probs", "default.qubit", 2),
        ("probs", "default.qubit", 3),
        ("expval", "lightning.qubit", 2),
        ("expval", "lightning.qubit", 3),
    ],
)
def test_output_is_a_distribution_over_the_classes(readout: str, device: str, classes: int) -> None:
    student = QuantumStudent(6, classes, n_qubits=4, readout=readout, device_name=device, seed=2)
    logits = student(_features())
    assert logits.shape == (5, classes) and logits.dtype == torch.float32
    probabilities = torch.softmax(logits, dim=1)
    assert torch.all(probabilities >= 0)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(5), atol=1e-6)


def test_probs_readout_is_the_renormalised_basis_distribution() -> None:
    student = QuantumStudent(6, 3, n_qubits=4, readout="probs", seed=2)
    x = _features()
    angles = torch.pi / 2 + torch.atan(student.projection(x))
    basis = student.circuit(angles.double(), student.weights)  # 4 outcomes of 2 wires
    expected = basis[:, :3] / basis[:, :3].sum(dim=1, keepdim=True)
    assert torch.allclose(torch.softmax(student(x), 1).double(), expected, atol=1e-6)


def test_expval_readouts_differ_per_class() -> None:
    student = QuantumStudent(6, 3, n_qubits=4, seed=5)
    logits = student(_features())
    assert not torch.allclose(logits[:, 0], logits[:, 1])
    assert not torch.allclose(logits[:, 1], logits[:, 2])


def test_statevector_devices_agree_and_gradients_match() -> None:
    backprop = QuantumStudent(6, 3, n_qubits=4, device_name="default.qubit", seed=4)
    adjoint = QuantumStudent(6, 3, n_qubits=4, device_name="lightning.qubit", seed=4)
    adjoint.set_arrays(backprop.get_arrays())
    x = _features(3)
    out_b, out_a = backprop(x), adjoint(x)
    assert torch.allclose(out_b, out_a, atol=1e-6)
    out_b.sum().backward()
    out_a.sum().backward()
    assert backprop.weights.grad is not None and adjoint.weights.grad is not None
    assert torch.allclose(backprop.weights.grad, adjoint.weights.grad, atol=1e-6)


def test_arrays_round_trip_exactly() -> None:
    source = QuantumStudent(6, 3, n_qubits=4, seed=1, trainable_projection=True)
    target = QuantumStudent(6, 3, n_qubits=4, seed=99, trainable_projection=True)
    target.set_arrays(source.get_arrays())
    for key, value in source.get_arrays().items():
        assert np.array_equal(value, target.get_arrays()[key]), key
    assert torch.equal(source(_features()), target(_features()))
    assert sorted(source.get_arrays()) == [
        "bias",
        "projection.bias",
        "projection.weight",
        "scale",
        "weights",
    ]


def test_bad_arrays_name_the_key() -> None:
    student = QuantumStudent(6, 2, n_qubits=2, seed=1)
    arrays = student.get_arrays()
    arrays["weights"] = np.zeros((1, 1, 3))
    with pytest.raises(ValueError, match="'weights' has shape"):
        student.set_arrays(arrays)


def test_parameter_count() -> None:
    # 3 layers x 4 qubits x 3 angles + scale and bias per class; the PCA projection is fixed.
    assert QuantumStudent(384, 3, n_qubits=4, n_layers=3).num_trainable() == 36 + 3 + 3
    assert QuantumStudent(384, 3, trainable_projection=True).num_trainable() == 42 + 384 * 4 + 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_qubits": 0}, "n-qubits=0: must be in [1, 16]"),
        ({"n_qubits": 2}, "n-qubits=2: readout='expval' needs 3 qubits"),
        ({"n_layers": 0}, "n-layers=0: must be >= 1"),
        ({"readout": "counts"}, "readout='counts': must be one of expval, probs"),
        ({"device_name": "ibm:foo"}, "device='ibm:foo': must be one of"),
        ({"readout": "probs", "device_name": "lightning.qubit"}, "readout='probs': lightning"),
    ],
)
def test_bad_circuit_settings(kwargs: dict, message: str) -> None:
    arguments = {"n_qubits": 4, "n_layers": 3, "n_classes": 3, **kwargs}
    with pytest.raises(ConfigError) as err:
        build_vqc(**arguments)
    assert message in str(err.value) and "\n" not in str(err.value)
