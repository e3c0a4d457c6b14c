"""The student circuit: distributions over classes, device agreement, gradients, arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from config.errors import ConfigError
from quantum.student import make_student, to_angles


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
    student = make_student(6, classes, n_qubits=4, readout=readout, device=device, seed=2)
    logits = student(_features())
    assert logits.shape == (5, classes) and logits.dtype == torch.float32
    probabilities = torch.softmax(logits, dim=1)
    assert torch.all(probabilities >= 0)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(5), atol=1e-6)


def test_probs_readout_is_the_renormalised_basis_distribution() -> None:
    student = make_student(6, 3, n_qubits=4, readout="probs", seed=2)
    x = _features()
    angles = to_angles(student.projection(x))
    basis = student.executor.run(angles.double(), student.weights.double())  # 2 wires: 4 outcomes
    expected = basis[:, :3] / basis[:, :3].sum(dim=1, keepdim=True)
    assert torch.allclose(torch.softmax(student(x), 1).double(), expected, atol=1e-6)


def test_expval_readouts_differ_per_class() -> None:
    student = make_student(6, 3, n_qubits=4, seed=5)
    logits = student(_features())
    assert not torch.allclose(logits[:, 0], logits[:, 1])
    assert not torch.allclose(logits[:, 1], logits[:, 2])


def test_angles_are_monotonic_in_zero_to_pi() -> None:
    z = torch.linspace(-50.0, 50.0, 1001)
    angles = to_angles(z)
    assert torch.all(angles > 0) and torch.all(angles < torch.pi)
    assert torch.all(torch.diff(angles) > 0)
    assert to_angles(torch.zeros(1)).item() == pytest.approx(torch.pi / 2)


@pytest.mark.parametrize("classes", [2, 3])
def test_statevector_devices_agree_and_gradients_match(classes: int) -> None:
    kwargs = {"n_qubits": 4, "trainable_projection": True}
    backprop = make_student(6, classes, device="default.qubit", seed=4, **kwargs)
    adjoint = make_student(6, classes, device="lightning.qubit", seed=9, **kwargs)
    adjoint.set_arrays(backprop.get_arrays())
    x = _features(3)
    out_b, out_a = backprop(x), adjoint(x)
    assert torch.allclose(out_b, out_a, atol=1e-6)
    # A loss that weights every logit differently, so no gradient cancels by symmetry.
    mix = torch.linspace(0.5, 2.0, 3 * classes).reshape(3, classes)
    (out_b * mix).sum().backward()
    (out_a * mix).sum().backward()
    grads_b = dict(backprop.named_parameters())
    for name, param in adjoint.named_parameters():
        grad_b, grad_a = grads_b[name].grad, param.grad
        assert grad_b is not None and grad_a is not None, name
        assert grad_b.abs().max() > 0, name
        assert torch.allclose(grad_b, grad_a, atol=1e-6), name


def test_arrays_round_trip_exactly() -> None:
    source = make_student(6, 3, n_qubits=4, seed=1, trainable_projection=True)
    target = make_student(6, 3, n_qubits=4, seed=99, trainable_projection=True)
    target.set_arrays(source.get_arrays())
    for key, value in source.get_arrays().items():
        assert np.array_equal(value, target.get_arrays()[key]), key
    assert torch.equal(source(_features()), target(_features()))
    assert all(value.dtype == np.float32 for value in source.get_arrays().values())
    assert list(source.get_arrays()) == list(target.get_arrays())  # stable order
    assert sorted(source.get_arrays()) == [
        "bias",
        "projection.bias",
        "projection.weight",
        "scale",
        "weights",
    ]


def test_get_arrays_are_copies() -> None:
    student = make_student(6, 2, n_qubits=2, seed=1)
    arrays = student.get_arrays()
    arrays["weights"][...] = 7.0
    assert not np.any(student.get_arrays()["weights"] == 7.0)


def test_probs_student_has_no_readout_parameters() -> None:
    student = make_student(6, 3, n_qubits=4, n_layers=2, readout="probs")
    assert list(student.get_arrays()) == ["weights", "projection.weight", "projection.bias"]
    assert student.num_trainable() == 2 * 4 * 3


def test_bad_arrays_name_the_key() -> None:
    student = make_student(6, 2, n_qubits=2, seed=1)
    arrays = student.get_arrays()
    with pytest.raises(ValueError, match="'weights' has shape"):
        student.set_arrays({**arrays, "weights": np.zeros((1, 1, 3))})
    with pytest.raises(ValueError, match="'scale' is missing"):
        student.set_arrays({k: v for k, v in arrays.items() if k != "scale"})
    with pytest.raises(ValueError, match="'extra' is unexpected"):
        student.set_arrays({**arrays, "extra": np.zeros(1)})
    with pytest.raises(ValueError, match="'projection.weight' has shape"):
        student.set_projection(np.zeros((3, 6)), np.zeros(2))


def test_set_projection_is_used_by_forward() -> None:
    student = make_student(6, 2, n_qubits=2, seed=1)
    weight = np.arange(12, dtype=np.float64).reshape(2, 6) / 10
    student.set_projection(weight, np.array([0.5, -0.5]))
    x = _features()
    expected = x.double() @ torch.tensor(weight).T + torch.tensor([0.5, -0.5])
    assert torch.allclose(student.projection(x).double(), expected, atol=1e-5)


def test_parameter_count() -> None:
    # 3 layers x 4 qubits x 3 angles + scale and bias per class; the PCA projection is fixed.
    assert make_student(384, 3, n_qubits=4, n_layers=3).num_trainable() == 36 + 3 + 3
    assert make_student(384, 3, trainable_projection=True).num_trainable() == 42 + 384 * 4 + 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_qubits": 0}, "n-qubits=0: must be in [1, 16]"),
        ({"n_qubits": 2}, "n-qubits=2: readout='expval' needs 3 qubits"),
        ({"n_layers": 0}, "n-layers=0: must be >= 1"),
        ({"readout": "counts"}, "readout='counts': must be one of expval, probs"),
        ({"device": "cuda.qubit"}, "device='cuda.qubit': must be one of"),
        ({"device": "fake:FakeNowhere"}, "device='FakeNowhere': no such fake IBM backend"),
        ({"model": "tree"}, "circuit='tree': must be one of vqc, qcnn"),
        ({"embedding": "amplitude"}, "embedding='amplitude': must be one of angle, iqp"),
        ({"ansatz": "su4"}, "ansatz='su4': must be one of strong, real-amplitudes"),
        ({"readout": "probs", "device": "lightning.qubit"}, "readout='probs': lightning"),
        ({"n_qubits": 1, "readout": "probs"}, "n-qubits=1: readout='probs' needs 2 qubits"),
        ({"n_qubits": 17}, "n-qubits=17: must be in [1, 16]"),
        ({"n_classes": 1}, "task: has 1 class(es)"),
    ],
)
def test_bad_circuit_settings(kwargs: dict, message: str) -> None:
    arguments = {"n_qubits": 4, "n_layers": 3, "n_classes": 3, **kwargs}
    with pytest.raises(ConfigError) as err:
        make_student(6, **arguments)
    assert message in str(err.value) and "\n" not in str(err.value)
