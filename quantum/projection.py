"""Federated PCA: exact PCA of the pooled data from per-client moment sums."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MomentStats:
    """First and second moment sums of a client's features.

    Attributes
    ----------
    n : int
        Rows.
    total : np.ndarray
        ``sum_i x_i``, shape (d,), float64.
    outer : np.ndarray
        ``sum_i x_i x_i^T``, shape (d, d), float64.
    """

    n: int
    total: np.ndarray
    outer: np.ndarray

    @classmethod
    def from_features(cls, x: np.ndarray) -> MomentStats:
        """Moments of ``x`` (rows, d)."""
        x = np.asarray(x, dtype=np.float64)
        return cls(n=len(x), total=x.sum(axis=0), outer=x.T @ x)

    def __add__(self, other: MomentStats) -> MomentStats:
        return MomentStats(self.n + other.n, self.total + other.total, self.outer + other.outer)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """For the wire: ``{"n", "total", "outer"}``."""
        return {"n": np.array([self.n], dtype=np.int64), "total": self.total, "outer": self.outer}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> MomentStats:
        """Inverse of :meth:`to_arrays`."""
        return cls(int(arrays["n"][0]), np.asarray(arrays["total"]), np.asarray(arrays["outer"]))


def pca_projection(stats: MomentStats, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """Whitening PCA projection of the pooled data.

    With ``mean = total / n`` and ``cov = outer / n - mean mean^T``, take the
    top ``n_components`` eigenvectors ``v_k`` (eigenvalues ``l_k``), each with
    its largest-magnitude entry made positive. Returns ``weight`` (k, d) with
    rows ``v_k / sqrt(l_k)`` and ``bias = -weight @ mean``, so that
    ``weight @ x + bias`` has zero mean and unit variance per component over
    the pooled rows: the same result as PCA on all clients' data in one place.
    """
    if not 1 <= n_components <= len(stats.total):
        raise ValueError(f"n_components={n_components} must be in [1, {len(stats.total)}]")
    mean = stats.total / stats.n
    cov = stats.outer / stats.n - np.outer(mean, mean)
    eigenvalues, eigenvectors = np.linalg.eigh((cov + cov.T) / 2)
    order = np.argsort(eigenvalues)[::-1][:n_components]
    components = eigenvectors[:, order].T
    signs = np.sign(components[np.arange(n_components), np.abs(components).argmax(axis=1)])
    components *= signs[:, None]
    weight = components / np.sqrt(np.clip(eigenvalues[order], 0.0, None) + 1e-12)[:, None]
    return weight, -weight @ mean
