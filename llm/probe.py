"""The teacher's linear probe: a head on the frozen encoder's mean-pooled, unit-length embeddings.

With ``teacher-head=probe`` a teacher's head starts as a linear probe of its
frozen encoder (linear probing, then fine-tuning), fitted one of two ways:

- :func:`probe_head`: multinomial logistic regression on one client's train
  rows, its ``C`` chosen on that client's validation rows (local teachers, or
  ``teacher-probe=local``).
- :func:`pooled_probe_head` (``teacher-federation=fedavg``, ``teacher-probe=pooled``):
  a linear discriminant fitted by the server from every client's
  :class:`ClassMoments` (label counts, per-class sums and the sum of outer
  products of its unit embeddings, sent with its ``query.stats`` reply), its
  shrinkage chosen on the server's validation rows. Summed moments give the
  same head as the rows pooled in one place, which no client's rows alone
  can give: on both shared tasks it is several points above the average of
  the clients' own probes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

#: Names of a probe head's arrays among a teacher's trainable arrays (a
#: ``PooledClassifier``'s linear layer): ``(K, d)`` weight and ``(K,)`` bias.
PROBE_HEAD = ("classifier.weight", "classifier.bias")
#: The bias of a class no row showed: never predicted.
ABSENT_BIAS = -30.0


def logit_metrics(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy in nats and accuracy of ``logits`` (rows, classes)."""
    logits_t = torch.as_tensor(logits, dtype=torch.float64)
    labels_t = torch.as_tensor(labels, dtype=torch.long)
    loss = F.cross_entropy(logits_t, labels_t).item()
    accuracy = (logits_t.argmax(dim=1) == labels_t).double().mean().item()
    return float(loss), float(accuracy)


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (what the probe and the probe head read)."""
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)


#: Inverse regularisation strengths tried for the probe, best on the validation rows kept.
PROBE_CS = (0.3, 1.0, 3.0, 10.0, 30.0)


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float) -> Any:
    """sklearn's multinomial logistic regression at inverse regularisation ``c``, at its optimum.

    Newton-CG to a gradient tolerance of 1e-6, in float64. The default L-BFGS
    stops by its tolerance far from the optimum when ``c`` is large and the
    rows are nearly separable (unit-length embeddings, ``c`` >= 30): there,
    inputs that differed by round-off (1e-6) gave coefficients 0.8 apart and
    test accuracies 2 points apart. At the optimum the fit is a function of
    its inputs. (Newton steps with the exact Hessian reach the same optimum,
    coefficients within 3e-4, at 20 times the cost for three classes; a
    tolerance of 1e-8 makes Newton-CG's line search fail near it.)
    """
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, solver="newton-cg", tol=1e-6, max_iter=1000).fit(
        np.asarray(x, dtype=np.float64), y
    )


def probe_head(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    num_classes: int,
) -> tuple[np.ndarray, np.ndarray]:
    """A linear probe on L2-normalised embeddings as ``(weight (K, d), bias (K,))``.

    Multinomial logistic regression, its ``C`` chosen from :data:`PROBE_CS` by
    the cross-entropy on ``val``. Classes absent from ``train_y`` get a weight
    of zero and a bias far below the others (never predicted). A partition
    with one class (a skewed non-IID split can give one) has nothing to
    separate: its probe predicts that class for every row.
    """
    weight = np.zeros((num_classes, train_x.shape[1]), dtype=np.float32)
    bias = np.full(num_classes, ABSENT_BIAS, dtype=np.float32)
    seen = np.unique(train_y)
    if len(seen) < 2:
        bias[seen] = 0.0
        return weight, bias
    fits = [fit_logistic(unit(train_x), train_y, c) for c in PROBE_CS]
    val_seen = np.isin(val_y, seen)

    def val_loss(fit: Any) -> float:
        if not val_seen.any():
            return 0.0
        proba = fit.predict_proba(unit(val_x[val_seen])).clip(min=1e-12)
        columns = np.searchsorted(seen, val_y[val_seen])
        return float(-np.log(proba[np.arange(len(columns)), columns]).mean())

    best = min(fits, key=val_loss)
    if len(seen) == 2:  # sklearn keeps one row for two classes: split it evenly
        weight[seen[0]], weight[seen[1]] = -best.coef_[0] / 2, best.coef_[0] / 2
        bias[seen[0]], bias[seen[1]] = -best.intercept_[0] / 2, best.intercept_[0] / 2
    else:
        weight[seen], bias[seen] = best.coef_, best.intercept_
    return weight, bias


def probe_accuracy(
    train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], num_classes: int
) -> float:
    """Validation accuracy of :func:`probe_head` fitted on ``train`` (features, labels):
    the yardstick a fine-tuned teacher should beat."""
    weight, bias = probe_head(train[0], train[1], val[0], val[1], num_classes)
    predicted = (unit(val[0]) @ weight.T + bias).argmax(axis=1)
    return float((predicted == val[1]).mean()) if len(val[1]) else math.nan


@dataclass(frozen=True)
class ClassMoments:
    """A client's class moments of its unit-length train embeddings ``u``.

    Attributes
    ----------
    counts : np.ndarray
        Rows of each class, shape (K,), int64.
    sums : np.ndarray
        ``sum u`` over each class's rows, shape (K, d), float64.
    outer : np.ndarray
        ``sum u u^T`` over all rows, shape (d, d), float64.
    """

    counts: np.ndarray
    sums: np.ndarray
    outer: np.ndarray

    @classmethod
    def from_rows(cls, x: np.ndarray, labels: np.ndarray, num_classes: int) -> ClassMoments:
        """The moments of ``x`` (rows, d), scaled to unit length, with integer ``labels``."""
        u = unit(np.asarray(x, dtype=np.float64))
        labels = np.asarray(labels, dtype=np.int64)
        sums = np.zeros((num_classes, u.shape[1]))
        np.add.at(sums, labels, u)
        return cls(np.bincount(labels, minlength=num_classes).astype(np.int64), sums, u.T @ u)

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def __add__(self, other: ClassMoments) -> ClassMoments:
        return ClassMoments(
            self.counts + other.counts, self.sums + other.sums, self.outer + other.outer
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts, "sums": self.sums, "outer": self.outer}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> ClassMoments:
        """Inverse of :meth:`to_arrays` (``KeyError`` for a missing array)."""
        return cls(
            np.asarray(arrays["counts"]),
            np.asarray(arrays["sums"], dtype=np.float64),
            np.asarray(arrays["outer"], dtype=np.float64),
        )

    def problem(self, width: int, num_classes: int, rows: int) -> str:
        """Why these cannot be the moments of ``rows`` real unit rows, or "".

        Unit rows leave fingerprints that scaled or invented sums lack: the
        trace of ``sum u u^T`` is exactly the row count, no class sum is longer
        than its count, and the within-class scatter is positive semidefinite.
        """
        k, d = num_classes, width
        shapes = (self.counts.shape, self.sums.shape, self.outer.shape)
        if shapes != ((k,), (k, d), (d, d)):
            return f"class moments of shapes {shapes}, expected {((k,), (k, d), (d, d))}"
        if self.counts.dtype.kind not in "iu" or (self.counts < 0).any():
            return "class counts are not non-negative integers"
        if self.n != rows:
            return f"class counts sum to {self.n}, the node declared num-examples {rows}"
        if not (np.isfinite(self.sums).all() and np.isfinite(self.outer).all()):
            return "class moments have non-finite values"
        if abs(float(np.trace(self.outer)) - rows) > 1e-3 * max(rows, 1):
            return f"trace of sum u u^T is {np.trace(self.outer):.6g}, not the {rows} unit rows"
        lengths = np.linalg.norm(self.sums, axis=1)
        if (lengths > self.counts * (1 + 1e-6) + 1e-9).any():
            return "a class sum is longer than its count of unit rows"
        scatter = self.outer - _between(self.counts, self.sums)
        lowest = float(np.linalg.eigvalsh((scatter + scatter.T) / 2)[0])
        if lowest < -1e-6 * max(rows, 1):
            return f"the within-class scatter has eigenvalue {lowest:.3g} < 0 (forged sums)"
        return ""


def _between(counts: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """``sum_k s_k s_k^T / n_k`` over the classes with rows."""
    present = counts > 0
    scaled = sums[present] / np.sqrt(counts[present])[:, None]
    return np.asarray(scaled.T @ scaled)


def pool_class_moments(moments: Sequence[ClassMoments], robust: bool) -> ClassMoments:
    """The clients' moments summed, or with ``robust`` rebuilt from medians: each class's
    mean is the median of the means of the clients that have it, and the second moment
    the median of the clients' ``outer / n``; counts are summed."""
    if not moments:
        raise ValueError("no class moments to pool")
    if not robust:
        return sum(moments[1:], moments[0])
    counts = np.sum([m.counts for m in moments], axis=0)
    sums = np.zeros_like(moments[0].sums)
    for k in np.flatnonzero(counts):
        means = [m.sums[k] / m.counts[k] for m in moments if m.counts[k] > 0]
        sums[k] = counts[k] * np.median(means, axis=0)
    n = int(counts.sum())
    second = np.median([m.outer / m.n for m in moments if m.n], axis=0)
    return ClassMoments(counts, sums, n * (second + second.T) / 2)


#: Shrinkages of the within-class covariance towards its mean eigenvalue, and
#: temperatures that divide the discriminant's logits; the pair with the lowest
#: cross-entropy on the server's validation rows is kept.
SHRINKAGES = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
TEMPERATURES = tuple(2 ** (k / 2) for k in range(9))  # 1 .. 16


def pooled_probe_head(
    moments: ClassMoments, val_x: np.ndarray, val_y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """A linear discriminant on unit embeddings as ``(weight (K, d), bias (K,),
    (shrinkage, temperature))``.

    Class means and the within-class covariance come from ``moments``; the
    covariance is shrunk towards a multiple of the identity by each of
    :data:`SHRINKAGES`, the logits divided by each of :data:`TEMPERATURES`
    (a discriminant in hundreds of dimensions is overconfident: on TweetEval
    its validation cross-entropy was above the uniform guess's at
    temperature 1), and the pair with the lowest cross-entropy on ``val``
    (the server's validation embeddings) is kept. Classes without rows get a
    weight of zero and a bias far below the others.
    """
    counts, n = moments.counts, moments.n
    present = counts > 0
    means = moments.sums[present] / counts[present][:, None]
    scatter = (moments.outer - _between(counts, moments.sums)) / n
    d = scatter.shape[0]
    fits = []
    for shrinkage in SHRINKAGES:
        cov = (1 - shrinkage) * scatter + shrinkage * np.trace(scatter) / d * np.eye(d)
        w = np.linalg.solve(cov, means.T).T
        weight = np.zeros((len(counts), d), dtype=np.float32)
        bias = np.full(len(counts), ABSENT_BIAS, dtype=np.float32)
        weight[present] = w
        bias[present] = -0.5 * np.einsum("kd,kd->k", w, means) + np.log(counts[present] / n)
        logits = unit(val_x) @ weight.T + bias
        for temperature in TEMPERATURES:
            loss = logit_metrics(logits / temperature, val_y)[0] if len(val_y) else 0.0
            fits.append((loss, (shrinkage, temperature), weight, bias))
    _, (shrinkage, temperature), weight, bias = min(fits, key=lambda fit: fit[0])
    bias = np.where(present, bias / temperature, ABSENT_BIAS).astype(np.float32)
    return weight / temperature, bias, (shrinkage, temperature)


def head_arrays(weight: np.ndarray, bias: np.ndarray) -> dict[str, np.ndarray]:
    """A probe head as a teacher's trainable arrays (:data:`PROBE_HEAD`), float32."""
    return dict(zip(PROBE_HEAD, (weight.astype(np.float32), bias.astype(np.float32)), strict=True))


def head_logits(features: np.ndarray, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """A probe head's logits (rows, classes) on the frozen base's pooled embeddings.

    A teacher that is a head alone on fresh adapters (LoRA's update starts at
    zero) gives these same logits, so a node or the server that holds the
    embeddings needs no pass of the LLM for them.
    """
    weight, bias = (np.asarray(arrays[name], dtype=np.float32) for name in PROBE_HEAD)
    return np.asarray(unit(np.asarray(features, dtype=np.float32)) @ weight.T + bias)


def is_head(arrays: Mapping[str, Any]) -> bool:
    """True when ``arrays`` are a probe head alone (a teacher's start, no adapters)."""
    return set(arrays) == set(PROBE_HEAD)
