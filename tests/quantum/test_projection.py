"""Federated PCA equals PCA on the pooled data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA

from quantum.projection import MomentStats, pca_projection


def _data() -> np.ndarray:
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(10, 10))
    return rng.normal(size=(300, 10)) * np.linspace(3, 0.2, 10) @ mixing + 5.0


def test_pooled_moments_equal_moments_of_pooled_data() -> None:
    x = _data()
    chunks = [x[:50], x[50:180], x[180:]]
    pooled = sum(
        (MomentStats.from_features(c) for c in chunks[1:]), MomentStats.from_features(chunks[0])
    )
    whole = MomentStats.from_features(x)
    assert pooled.n == 300
    np.testing.assert_allclose(pooled.total, whole.total)
    np.testing.assert_allclose(pooled.outer, whole.outer)
    again = MomentStats.from_arrays(pooled.to_arrays())
    assert again.n == pooled.n and np.array_equal(again.outer, pooled.outer)


def test_federated_pca_matches_sklearn_on_pooled_data() -> None:
    x = _data()
    chunks = [x[:100], x[100:150], x[150:]]
    stats = MomentStats.from_features(chunks[0])
    for chunk in chunks[1:]:
        stats = stats + MomentStats.from_features(chunk)
    weight, bias = pca_projection(stats, 4)
    reference = PCA(n_components=4).fit(x)
    unit_rows = weight / np.linalg.norm(weight, axis=1, keepdims=True)
    # Same directions up to sign.
    np.testing.assert_allclose(np.abs(unit_rows @ reference.components_.T), np.eye(4), atol=1e-8)
    # Whitened: zero mean, unit variance (population) per component on the pooled data.
    z = x @ weight.T + bias
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-8)
    np.testing.assert_allclose(z.var(axis=0), 1.0, rtol=1e-8)
    # Variance order follows the eigenvalues.
    np.testing.assert_allclose(
        1.0 / np.linalg.norm(weight, axis=1) ** 2,
        reference.explained_variance_ * (len(x) - 1) / len(x),
        rtol=1e-8,
    )


def test_sign_convention_is_deterministic() -> None:
    weight, _ = pca_projection(MomentStats.from_features(_data()), 3)
    largest = weight[np.arange(3), np.abs(weight).argmax(axis=1)]
    assert np.all(largest > 0)


def test_too_many_components() -> None:
    with pytest.raises(ValueError, match="n_components=11"):
        pca_projection(MomentStats.from_features(_data()), 11)


def test_wire_format_is_checked() -> None:
    arrays = MomentStats.from_features(_data()).to_arrays()
    assert arrays["n"].dtype == np.int64 and arrays["outer"].shape == (10, 10)
    with pytest.raises(ValueError, match="'outer' has shape"):
        MomentStats.from_arrays({**arrays, "outer": np.zeros((9, 10))})
    with pytest.raises(ValueError, match="'total' is missing"):
        MomentStats.from_arrays({"n": arrays["n"], "outer": arrays["outer"]})


def test_pooling_different_feature_sizes_fails() -> None:
    with pytest.raises(ValueError, match="10 and 3 features"):
        _ = MomentStats.from_features(_data()) + MomentStats.from_features(np.ones((4, 3)))


def test_no_rows() -> None:
    with pytest.raises(ValueError, match="0 rows"):
        pca_projection(MomentStats.from_features(np.zeros((0, 10))), 2)
