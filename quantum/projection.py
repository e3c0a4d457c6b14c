"""Federated PCA: the exact PCA of the pooled data from per-client moment sums.

Each client sends ``n``, ``sum x`` and ``sum x x^T`` of its features (never
the rows); the server adds them up and takes the eigen-decomposition of the
pooled covariance, which is the same as PCA on all the rows in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

#: Added to each eigenvalue before whitening, so a zero-variance direction stays finite.
WHITEN_EPS = 1e-12


@dataclass(frozen=True)
class MomentStats:
    """First and second moment sums of a client's features.

    Attributes
    ----------
    n : int
        Rows, >= 0.
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
        """Moments of a feature matrix.

        Parameters
        ----------
        x : np.ndarray
            Shape (rows, d); accumulated in float64.

        Raises
        ------
        ValueError
            If ``x`` is not two-dimensional.
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must have shape (rows, d), got {x.shape}")
        return cls(n=len(x), total=x.sum(axis=0), outer=x.T @ x)

    def __add__(self, other: MomentStats) -> MomentStats:
        """Pool two clients' moments (same feature size ``d``)."""
        if self.total.shape != other.total.shape:
            raise ValueError(
                f"cannot pool moments of {self.total.shape[0]} and {other.total.shape[0]} features"
            )
        return MomentStats(self.n + other.n, self.total + other.total, self.outer + other.outer)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """For the wire: ``n`` (1,) int64, ``total`` (d,) and ``outer`` (d, d) float64."""
        return {
            "n": np.array([self.n], dtype=np.int64),
            "total": np.asarray(self.total, dtype=np.float64),
            "outer": np.asarray(self.outer, dtype=np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> MomentStats:
        """Inverse of :meth:`to_arrays`.

        Raises
        ------
        ValueError
            If a key is missing or ``outer`` is not (d, d) for ``total`` (d,).
        """
        for key in ("n", "total", "outer"):
            if key not in arrays:
                raise ValueError(f"moment array {key!r} is missing")
        total = np.asarray(arrays["total"], dtype=np.float64)
        outer = np.asarray(arrays["outer"], dtype=np.float64)
        if total.ndim != 1 or outer.shape != (total.size, total.size):
            raise ValueError(
                f"moment array 'outer' has shape {outer.shape}, expected {(total.size,) * 2}"
            )
        return cls(int(np.asarray(arrays["n"]).reshape(-1)[0]), total, outer)


def pooled_mean_cov(stats: MomentStats) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and population covariance (d, d) of the pooled rows, float64.

    ``cov = outer / n - mean mean^T``, symmetrised against rounding.
    """
    if stats.n < 1:
        raise ValueError("cannot fit PCA on 0 rows")
    mean = stats.total / stats.n
    cov = stats.outer / stats.n - np.outer(mean, mean)
    return mean, (cov + cov.T) / 2


def _fix_signs(components: np.ndarray) -> np.ndarray:
    """Flip each row (k, d) so that its largest-magnitude entry is positive."""
    rows = np.arange(len(components))
    signs = np.sign(components[rows, np.abs(components).argmax(axis=1)])
    return components * signs[:, None]


def pca_projection(stats: MomentStats, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """Whitening PCA projection of the pooled data.

    Takes the top ``n_components`` eigenvectors ``v_k`` of the pooled
    covariance (eigenvalues ``l_k``, descending), each with its
    largest-magnitude entry made positive.

    Parameters
    ----------
    stats : MomentStats
        Pooled moments of all clients, ``n >= 1``.
    n_components : int
        Components k, in [1, d] (the student's ``n-qubits``).

    Returns
    -------
    weight : np.ndarray
        Shape (k, d), float64, rows ``v_k / sqrt(l_k + 1e-12)``.
    bias : np.ndarray
        Shape (k,), float64, ``-weight @ mean``.
        ``weight @ x + bias`` has zero mean and unit (population) variance per
        component over the pooled rows, and uncorrelated components.

    Raises
    ------
    ValueError
        If ``n_components`` is out of range or there are no rows.
    """
    d = len(stats.total)
    if not 1 <= n_components <= d:
        raise ValueError(f"n_components={n_components} must be in [1, {d}]")
    mean, cov = pooled_mean_cov(stats)
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    order = np.argsort(eigenvalues)[::-1][:n_components]
    components = _fix_signs(eigenvectors[:, order].T)
    variances = np.clip(eigenvalues[order], 0.0, None)
    weight = components / np.sqrt(variances + WHITEN_EPS)[:, None]
    logger.debug(
        "PCA on %d rows: top-%d variances %s of total %.4g",
        stats.n,
        n_components,
        np.array2string(variances, precision=4),
        float(np.trace(cov)),
    )
    return weight, -weight @ mean
