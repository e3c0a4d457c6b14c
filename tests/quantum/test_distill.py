"""Distillation loss and training loop, checked with numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from quantum.distill import evaluate_student, kd_loss, minibatches, train_student
from quantum.student import make_student

LABELS = torch.tensor([0])
UNIFORM = torch.tensor([[0.0, 0.0]])
STUDENT = torch.tensor([[math.log(3.0), 0.0]])  # softmax -> (0.75, 0.25)


def test_zero_when_student_equals_teacher() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3]])
    loss = kd_loss(logits, logits, torch.tensor([0, 2]), temperature=3.0, alpha=1.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)


def test_kl_at_temperature_one_by_hand() -> None:
    # KL((.5,.5) || (.75,.25)) = .5 ln(.5/.75) + .5 ln(.5/.25) = .5 ln(4/3)
    loss = kd_loss(STUDENT, UNIFORM, LABELS, temperature=1.0, alpha=1.0)
    assert loss.item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-6)  # 0.143841


def test_t_squared_scaling_by_hand() -> None:
    # At T=2 the student's softened distribution is (sqrt3, 1) / (1 + sqrt3).
    p = math.sqrt(3) / (1 + math.sqrt(3))
    kl = 0.5 * math.log(0.5 / p) + 0.5 * math.log(0.5 / (1 - p))  # 0.037253
    loss = kd_loss(STUDENT, UNIFORM, LABELS, temperature=2.0, alpha=1.0)
    assert loss.item() == pytest.approx(4 * kl, rel=1e-6)  # T^2 = 4 -> 0.149012


def test_alpha_zero_is_cross_entropy_and_mixes_linearly() -> None:
    ce = -math.log(0.75)  # label 0 under (0.75, 0.25)
    assert kd_loss(STUDENT, UNIFORM, LABELS, 2.0, 0.0).item() == pytest.approx(ce, rel=1e-6)
    half = kd_loss(STUDENT, UNIFORM, LABELS, 1.0, 0.5).item()
    assert half == pytest.approx(0.5 * 0.5 * math.log(4 / 3) + 0.5 * ce, rel=1e-6)


def _numpy_kd(s: np.ndarray, t: np.ndarray, y: np.ndarray, temp: float, alpha: float) -> float:
    """The loss written out in plain numpy: softmax, KL summed over classes, batch means."""

    def log_softmax(z: np.ndarray) -> np.ndarray:
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    log_q, log_p = log_softmax(s / temp), log_softmax(t / temp)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=1).mean()
    ce = -log_softmax(s)[np.arange(len(y)), y].mean()
    return float(alpha * temp**2 * kl + (1 - alpha) * ce)


def test_matches_plain_numpy_on_a_batch() -> None:
    rng = np.random.default_rng(7)
    s, t = rng.normal(size=(6, 3)) * 2, rng.normal(size=(6, 3)) * 2
    y = rng.integers(0, 3, size=6)
    for temp, alpha in [(1.0, 1.0), (2.5, 0.3), (4.0, 0.0)]:
        got = kd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), temp, alpha).item()
        assert got == pytest.approx(_numpy_kd(s, t, y, temp, alpha), rel=1e-12)


def test_doubling_temperature_scales_the_kl_term_by_four() -> None:
    # softmax(2s / 2T) = softmax(s / T): with logits doubled along with T, the softened
    # distributions, hence the KL, are unchanged, so the loss grows by exactly (2T)^2 / T^2 = 4.
    s = torch.tensor([[1.0, -0.5, 0.2], [0.3, 0.9, -1.2]])
    t = torch.tensor([[0.4, 0.1, -0.7], [-0.2, 1.5, 0.0]])
    y = torch.tensor([0, 1])
    at_t = kd_loss(s, t, y, temperature=1.5, alpha=1.0).item()
    at_2t = kd_loss(2 * s, 2 * t, y, temperature=3.0, alpha=1.0).item()
    assert at_t > 0
    assert at_2t == pytest.approx(4 * at_t, rel=1e-6)


def test_minibatches_cover_each_epoch_once_then_reshuffle() -> None:
    batches = minibatches(10, 4, seed=3)
    first = [next(batches) for _ in range(3)]
    second = [next(batches) for _ in range(3)]
    assert [len(b) for b in first] == [4, 4, 2]
    assert sorted(np.concatenate(first)) == list(range(10))
    assert sorted(np.concatenate(second)) == list(range(10))
    assert not np.array_equal(np.concatenate(first), np.concatenate(second))
    again = minibatches(10, 4, seed=3)
    assert all(np.array_equal(next(again), b) for b in first)


def _blobs(rows: int = 200, dims: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=rows)
    features = rng.normal(size=(rows, dims)).astype(np.float32) + labels[:, None] * 1.5
    return features, labels


def test_trains_exactly_the_given_steps_and_learns() -> None:
    features, labels = _blobs()
    student = make_student(8, 2, n_qubits=2, n_layers=2, trainable_projection=True, seed=1)
    calls = []
    student.register_forward_hook(lambda *_: calls.append(1))
    loss_before, _ = evaluate_student(student, features, labels)
    calls.clear()
    out = train_student(
        student,
        features,
        labels,
        np.zeros((len(labels), 2), np.float32),
        steps=30,
        lr=0.1,
        batch_size=32,
        temperature=1.0,
        alpha=0.0,
        seed=0,
    )
    assert len(calls) == 30 and out["steps"] == 30
    loss_after, accuracy = evaluate_student(student, features, labels)
    assert loss_after < loss_before
    assert accuracy > 0.8


def test_counts_optimizer_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    optimizers: list[torch.optim.Adam] = []

    class RecordingAdam(torch.optim.Adam):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            optimizers.append(self)

    monkeypatch.setattr(torch.optim, "Adam", RecordingAdam)
    features, labels = _blobs(50)
    student = make_student(8, 2, n_qubits=2, n_layers=1, seed=0)
    out = train_student(
        student,
        features,
        labels,
        np.zeros((50, 2), np.float32),
        steps=7,  # 50 rows / batch 16 = 4 batches per epoch: crosses an epoch boundary
        lr=0.05,
        batch_size=16,
        temperature=2.0,
        alpha=0.5,
        seed=0,
    )
    (optimizer,) = optimizers
    assert out["steps"] == 7 and np.isfinite(out["train_loss"]) and out["seconds"] > 0
    states = [optimizer.state[p] for p in student.parameters() if p.requires_grad]
    assert len(states) == 3 and all(int(state["step"]) == 7 for state in states)


def test_mismatched_rows_are_rejected() -> None:
    features, labels = _blobs(20)
    student = make_student(8, 2, n_qubits=2, n_layers=1, seed=3)
    with pytest.raises(ValueError, match="20, 19 and 20 rows"):
        train_student(
            student,
            features,
            labels[:19],
            np.zeros((20, 2), np.float32),
            steps=1,
            lr=0.1,
            batch_size=8,
            temperature=1.0,
            alpha=0.5,
            seed=0,
        )


def test_zero_steps_changes_nothing() -> None:
    features, labels = _blobs(20)
    student = make_student(8, 2, n_qubits=2, n_layers=1, seed=3)
    before = student.get_arrays()
    train_student(
        student,
        features,
        labels,
        np.zeros((20, 2), np.float32),
        steps=0,
        lr=0.1,
        batch_size=8,
        temperature=1.0,
        alpha=0.5,
        seed=0,
    )
    after = student.get_arrays()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_projection_learns_at_its_own_rate() -> None:
    features, labels = _blobs(64)
    student = make_student(8, 2, n_qubits=2, n_layers=1, trainable_projection=True, seed=3)
    projection_before = student.projection.weight.detach().clone()
    weights_before = student.weights.detach().clone()
    train_student(
        student,
        features,
        labels,
        np.zeros((64, 2), np.float32),
        steps=1,
        lr=0.1,
        projection_lr=0.001,
        batch_size=64,
        temperature=1.0,
        alpha=0.0,
        seed=0,
    )
    # Adam's first step moves every parameter by about its learning rate.
    projection_step = (student.projection.weight - projection_before).abs().max().item()
    weights_step = (student.weights - weights_before).abs().max().item()
    assert projection_step == pytest.approx(0.001, rel=0.01)
    assert weights_step == pytest.approx(0.1, rel=0.01)


def test_evaluate_reports_nats_and_accuracy() -> None:
    class Fixed(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.log(torch.tensor([[0.75, 0.25]])).repeat(len(x), 1)

    loss, accuracy = evaluate_student(Fixed(), np.zeros((4, 3)), np.array([0, 0, 0, 1]))
    assert loss == pytest.approx((3 * -math.log(0.75) - math.log(0.25)) / 4)
    assert accuracy == pytest.approx(0.75)


def test_proximal_term_keeps_the_student_near_where_it_started() -> None:
    features, labels = _blobs()

    def drift(mu: float) -> float:
        student = make_student(8, 2, n_qubits=2, n_layers=2, trainable_projection=True, seed=1)
        start = student.get_arrays()
        train_student(
            student,
            features,
            labels,
            np.zeros((len(labels), 2), np.float32),
            steps=25,
            lr=0.1,
            batch_size=32,
            temperature=1.0,
            alpha=0.0,
            seed=0,
            proximal_mu=mu,
        )
        end = student.get_arrays()
        return float(sum(np.sum((end[k] - start[k]) ** 2) for k in start))

    free, held = drift(0.0), drift(100.0)
    assert held < 0.2 * free
