"""The teacher probes: the logistic fit at its optimum; class moments, their checks, and the
pooled head the server fits."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from config.run_config import TeacherConfig
from llm.inference import pooled_embeddings
from llm.probe import (
    ABSENT_BIAS,
    ClassMoments,
    fit_logistic,
    head_arrays,
    is_head,
    pool_class_moments,
    pooled_probe_head,
    probe_accuracy,
    probe_head,
    unit,
)
from llm.teacher import finetune_teacher
from tasks.datasets import TextDataset


def _rows(seed: int, rows: int = 90, width: int = 12, classes: int = 3) -> tuple[Any, Any]:
    """Embedding-like rows: a shared offset (as sentence embeddings have) plus class means."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, rows)
    centers = np.random.default_rng(99).normal(size=(classes, width))
    x = 3.0 + centers[labels] + rng.normal(scale=1.5, size=(rows, width))
    return x, labels


def test_summed_moments_are_the_moments_of_the_pooled_rows_and_give_its_head() -> None:
    (xa, ya), (xb, yb) = _rows(1), _rows(2)
    val_x, val_y = _rows(3)
    whole = ClassMoments.from_rows(np.concatenate([xa, xb]), np.concatenate([ya, yb]), 3)
    summed = pool_class_moments(
        [ClassMoments.from_rows(xa, ya, 3), ClassMoments.from_rows(xb, yb, 3)], robust=False
    )
    for name, array in whole.to_arrays().items():
        np.testing.assert_allclose(summed.to_arrays()[name], array, atol=1e-9)
    weight, bias, shrinkage = pooled_probe_head(summed, val_x, val_y)
    again = pooled_probe_head(whole, val_x, val_y)
    np.testing.assert_allclose(weight, again[0], atol=1e-4)
    np.testing.assert_allclose(bias, again[1], atol=1e-4)
    assert shrinkage == again[2]
    accuracy = float(((unit(val_x) @ weight.T + bias).argmax(1) == val_y).mean())
    assert accuracy > 0.8  # well-separated classes


def test_a_class_no_client_has_is_never_predicted() -> None:
    x, labels = _rows(4)
    keep = labels != 2
    moments = ClassMoments.from_rows(x[keep], labels[keep], 3)
    weight, bias, _ = pooled_probe_head(moments, *_rows(5))
    assert bias[2] == ABSENT_BIAS and not weight[2].any()
    assert 2 not in (unit(_rows(5)[0]) @ weight.T + bias).argmax(1)


def test_honest_moments_pass_and_forged_ones_are_refused_with_their_reason() -> None:
    x, labels = _rows(6)
    honest = ClassMoments.from_rows(x, labels, 3)
    assert honest.problem(12, 3, 90) == ""
    arrays = honest.to_arrays()

    def forged(**changes: Any) -> ClassMoments:
        return ClassMoments.from_arrays({**arrays, **changes})

    cases = {
        "not the 90 unit rows": forged(outer=arrays["outer"] * 100, sums=arrays["sums"] * 10),
        "non-finite": forged(sums=np.where(arrays["sums"] > 0, np.nan, arrays["sums"])),
        "declared num-examples": forged(counts=arrays["counts"] + 1),
        "longer than its count": forged(sums=arrays["sums"] * 3),
        "within-class scatter": forged(outer=np.eye(12) * 90 / 12),
        "non-negative integers": forged(counts=arrays["counts"].astype(np.float64)),
    }
    for reason, moments in cases.items():
        assert reason in moments.problem(12, 3, 90), reason
    assert "shapes" in honest.problem(16, 3, 90)
    assert "shapes" in honest.problem(12, 4, 90)


def test_robust_pooling_bounds_a_node_that_lies_consistently() -> None:
    """A node whose invented rows all sit far away passes the checks (they are real unit
    rows); the robust pooling keeps the class means near the honest nodes' means."""
    honest = [ClassMoments.from_rows(*_rows(seed), 3) for seed in (7, 8, 9)]
    x, labels = _rows(10)
    liar = ClassMoments.from_rows(-x, labels, 3)  # every row flipped
    assert liar.problem(12, 3, 90) == ""
    means = np.stack([m.sums / m.counts[:, None] for m in honest])

    def pooled_means(robust: bool) -> np.ndarray:
        pooled = pool_class_moments([*honest, liar], robust)
        return pooled.sums / pooled.counts[:, None]

    honest_range = np.abs(means - means.mean(axis=0)).max()
    assert np.abs(pooled_means(True) - means.mean(axis=0)).max() <= 2 * honest_range
    assert np.abs(pooled_means(False) - means.mean(axis=0)).max() > 5 * honest_range


def test_a_teacher_started_from_the_pooled_head_starts_at_its_accuracy(shared_data: Any) -> None:
    """teacher-probe=pooled: before any step the teacher is the pooled probe, prediction for
    prediction (fresh adapters, the server's head)."""
    from config.run_config import DataConfig
    from tasks.datasets import DataSource

    source = DataSource.from_config(
        DataConfig(task="tweeteval", data_dir=str(shared_data / "tweeteval_sentiment"))
    )
    train: TextDataset = source.load("train").subset(np.arange(160))
    val: TextDataset = source.load("validation").subset(np.arange(80))
    features = [pooled_embeddings("minilm", d.texts, 32, 64) for d in (train, val)]
    halves = [
        ClassMoments.from_rows(features[0][part], train.labels[part], 3)
        for part in (slice(0, 80), slice(80, 160))
    ]
    weight, bias, _ = pooled_probe_head(pool_class_moments(halves, False), features[1], val.labels)
    head = head_arrays(weight, bias)
    assert is_head(head)
    config = TeacherConfig(head="probe", max_length=32)
    out = finetune_teacher(train, val, config, seed=0, steps=0, initial=head)
    assert np.allclose(out.val_logits, unit(features[1]) @ weight.T + bias, atol=1e-4)
    expected = float(((unit(features[1]) @ weight.T + bias).argmax(1) == val.labels).mean())
    assert out.val_accuracy == pytest.approx(expected)
    assert out.val_accuracy > max(np.bincount(val.labels)) / len(val)  # above the majority


def _objective_gradient(fit: Any, x: np.ndarray, y: np.ndarray, c: float) -> float:
    """Largest entry of the gradient of sklearn's multinomial objective at ``fit``:
    ``0.5 ||W||^2 + c * sum of cross-entropies``, the intercept unpenalised."""
    z = x @ fit.coef_.T + fit.intercept_
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    return float(np.abs(np.concatenate([(fit.coef_ + c * p.T @ x).ravel(), c * p.sum(0)])).max())


def test_the_logistic_probe_is_fitted_to_its_optimum() -> None:
    """Nearly separable unit rows at a large C: the gradient at the fit is zero to 1e-2, and
    the check catches sklearn's default L-BFGS, which stops by its tolerance far from there."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = unit(rng.normal(size=(300, 64)))
    y = (x @ rng.normal(size=(64, 3)) + 0.3 * rng.normal(size=(300, 3))).argmax(axis=1)
    assert _objective_gradient(fit_logistic(x, y, 100.0), x, y, 100.0) < 1e-2
    default = LogisticRegression(C=100.0, max_iter=3000).fit(x, y)
    assert _objective_gradient(default, x, y, 100.0) > 0.1
    # At the optimum the fit is a function of its inputs: round-off in them moves nothing.
    nudged = fit_logistic(x + 1e-7 * rng.normal(size=x.shape), y, 100.0)
    assert np.abs(nudged.coef_ - fit_logistic(x, y, 100.0).coef_).max() < 1e-3


def test_a_one_class_partition_gets_a_probe_that_predicts_its_class() -> None:
    """A skewed Dirichlet split can leave a client one class: logistic regression cannot
    be fitted on it, so the probe predicts that class, and the others never."""
    x, _ = _rows(4)
    labels = np.full(len(x), 2)
    weight, bias = probe_head(x, labels, x[:10], labels[:10], 3)
    assert not weight.any()
    assert bias[2] == 0.0 and bias[0] == bias[1] == ABSENT_BIAS
    assert probe_accuracy((x, labels), (x[:10], np.array([2] * 9 + [0])), 3) == 0.9
