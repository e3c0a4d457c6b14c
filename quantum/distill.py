"""Knowledge distillation of the teacher into the student."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

#: Losses of the last steps averaged into ``train_loss``.
LOSS_TAIL = 5
#: Rows per forward pass of :func:`evaluate_student` (one job each on a shot-based device).
EVAL_BATCH = 512


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Distillation loss ``alpha * T^2 * KL(p_T || q_T) + (1 - alpha) * CE(student, labels)``.

    ``p_T = softmax(teacher_logits / T)``, ``q_T = softmax(student_logits / T)``;
    the KL is summed over classes and averaged over the batch, in nats. The
    ``T^2`` factor keeps the gradient of the KL term on the same scale as the
    cross-entropy's when T changes (Hinton et al., 2015). The cross-entropy
    uses the unsoftened student logits.

    Parameters
    ----------
    student_logits, teacher_logits : torch.Tensor
        Shape (batch, n_classes).
    labels : torch.Tensor
        Shape (batch,), int64 class indices in [0, n_classes).
    temperature : float
        T > 0.
    alpha : float
        Weight of the KL term, in [0, 1].

    Returns
    -------
    torch.Tensor
        Scalar loss in nats, >= 0.
    """
    log_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")
    ce = F.cross_entropy(student_logits, labels)
    return alpha * temperature**2 * kl + (1.0 - alpha) * ce


def make_optimizer(
    student: nn.Module, lr: float, projection_lr: float | None = None
) -> torch.optim.Adam:
    """Adam over the trainable parameters; a trainable ``projection`` gets ``projection_lr``.

    Parameters
    ----------
    student : nn.Module
        The student; its optional ``projection`` submodule is grouped apart.
    lr : float
        Learning rate of the circuit and readout parameters.
    projection_lr : float, optional
        Learning rate of the projection; ``None`` means ``lr``.
    """
    projection = getattr(student, "projection", None)
    projection_params = (
        [p for p in projection.parameters() if p.requires_grad] if projection is not None else []
    )
    own = {id(p) for p in projection_params}
    groups: list[dict[str, Any]] = [
        {"params": [p for p in student.parameters() if p.requires_grad and id(p) not in own]}
    ]
    if projection_params:
        groups.append({"params": projection_params, "lr": projection_lr or lr})
    return torch.optim.Adam(groups, lr=lr)


def minibatches(rows: int, batch_size: int, seed: int | Sequence[int]) -> Iterator[np.ndarray]:
    """Endless seeded minibatch indices: each epoch is a fresh permutation of ``range(rows)``.

    Rows are drawn without replacement within an epoch; the last batch of an
    epoch holds the remainder (``rows % batch_size`` rows, if not 0).

    Yields
    ------
    np.ndarray
        int64 indices, shape (<= batch_size,).
    """
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(rows)
        for start in range(0, rows, batch_size):
            yield order[start : start + batch_size]


def _check_training_inputs(
    features: np.ndarray, labels: np.ndarray, teacher_logits: np.ndarray, steps: int, batch: int
) -> None:
    if steps < 0:
        raise ValueError(f"steps={steps} must be >= 0")
    if batch < 1:
        raise ValueError(f"batch_size={batch} must be >= 1")
    if not len(features) == len(labels) == len(teacher_logits):
        raise ValueError(
            f"features, labels and teacher_logits have {len(features)}, {len(labels)} and "
            f"{len(teacher_logits)} rows; they must match"
        )
    if steps > 0 and len(features) == 0:
        raise ValueError("cannot train the student on 0 rows")


def train_student(
    student: nn.Module,
    features: np.ndarray,
    labels: np.ndarray,
    teacher_logits: np.ndarray,
    *,
    steps: int,
    lr: float,
    projection_lr: float | None = None,
    batch_size: int,
    temperature: float,
    alpha: float,
    seed: int | Sequence[int],
    proximal_mu: float = 0.0,
    optimizer: str = "adam",
) -> dict[str, float]:
    """Run exactly ``steps`` optimizer steps of :func:`kd_loss` on seeded minibatches.

    Parameters
    ----------
    student : nn.Module
        Maps (batch, in_features) float32 to (batch, n_classes) logits; trained in place.
    features, labels, teacher_logits : np.ndarray
        Shapes (rows, in_features), (rows,) class indices, (rows, n_classes).
    steps, batch_size : int
        Optimizer steps, >= 0 (0 changes nothing); minibatch rows, >= 1 (:func:`minibatches`).
    lr, projection_lr : float
        Adam learning rates of the circuit and readout, and of a trainable
        ``projection`` (default ``lr``).
    temperature, alpha : float
        See :func:`kd_loss`; ``seed`` seeds the minibatch order.
    proximal_mu : float
        FedProx: adds ``mu/2 * ||w - w_start||^2``, ``w_start`` the global model.
    optimizer : {"adam", "cobyla", "spsa"}
        Resolved name (:func:`quantum.optimizers.resolve_optimizer`); for
        ``cobyla`` and ``spsa`` see :func:`_train_gradient_free`.

    Returns
    -------
    dict of str to float
        ``steps`` actually run (Adam steps, COBYLA evaluations, SPSA iterations),
        ``evaluations`` of the objective, ``train_loss`` (mean nats of the last
        ``min(steps, 5)`` steps, NaN for 0) and wall ``seconds``.
    """
    started = time.perf_counter()
    _check_training_inputs(features, labels, teacher_logits, steps, batch_size)
    data = _tensors(features, labels, teacher_logits)
    batches = minibatches(len(features), batch_size, seed)
    student.train()
    if optimizer == "adam":
        adam = make_optimizer(student, lr, projection_lr)
        losses = _train_adam(student, data, batches, adam, steps, temperature, alpha, proximal_mu)
    else:
        losses = _train_gradient_free(
            student, data, batches, optimizer, steps, lr, temperature, alpha, proximal_mu, seed
        )
    result = _fit_result(losses, 2 if optimizer == "spsa" else 1, started)
    logger.debug("student trained: %s", result)
    return result


def _tensors(
    features: np.ndarray, labels: np.ndarray, teacher_logits: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features and teacher logits as float32, labels as long."""
    return (
        torch.as_tensor(features, dtype=torch.float32),
        torch.as_tensor(labels, dtype=torch.long),
        torch.as_tensor(teacher_logits, dtype=torch.float32),
    )


def _fit_result(losses: list[float], evaluations_per_step: int, started: float) -> dict[str, float]:
    """What :func:`train_student` returns, from each step's loss."""
    tail = losses[-LOSS_TAIL:]
    return {
        "steps": float(len(losses)),
        "evaluations": float(evaluations_per_step * len(losses)),
        "train_loss": float(np.mean(tail)) if tail else float("nan"),
        "seconds": time.perf_counter() - started,
    }


def _train_adam(
    student: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    batches: Iterator[np.ndarray],
    adam: torch.optim.Optimizer,
    steps: int,
    temperature: float,
    alpha: float,
    proximal_mu: float,
) -> list[float]:
    """``steps`` Adam steps of :func:`kd_loss` (plus FedProx's term); returns each step's loss."""
    x, y, t = data
    params = [p for p in student.parameters() if p.requires_grad]
    anchor = [p.detach().clone() for p in params] if proximal_mu > 0 else []
    losses = []
    for _ in range(steps):
        rows = torch.as_tensor(next(batches))
        loss = kd_loss(student(x[rows]), t[rows], y[rows], temperature, alpha)
        if anchor:
            loss = loss + 0.5 * proximal_mu * sum(
                ((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True)
            )
        adam.zero_grad()
        loss.backward()
        adam.step()
        losses.append(float(loss.detach()))
    return losses


@torch.no_grad()
def _train_gradient_free(
    student: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    batches: Iterator[np.ndarray],
    optimizer: str,
    steps: int,
    lr: float,
    temperature: float,
    alpha: float,
    proximal_mu: float,
    seed: int | Sequence[int],
) -> list[float]:
    """COBYLA or SPSA over the circuit and readout parameters; returns each evaluation's loss.

    COBYLA makes exactly ``steps`` evaluations, each on all the client's train
    rows (a fixed, deterministic objective, as COBYLA's model of it assumes),
    and refuses a budget below its floor of parameters + 2; SPSA runs ``steps``
    iterations of two evaluations each, both on a fresh minibatch. Neither
    tunes a trainable projection.
    """
    from quantum.optimizers import cobyla, spsa

    if steps == 0:
        return []
    x, y, t = data
    projection = getattr(student, "projection", None)
    skip = {id(p) for p in projection.parameters()} if projection is not None else set()
    params = [p for p in student.parameters() if p.requires_grad and id(p) not in skip]
    start = nn.utils.parameters_to_vector(params).double().numpy()

    def loss_of(theta: np.ndarray, logits: torch.Tensor, rows: torch.Tensor) -> float:
        loss = kd_loss(logits, t[rows], y[rows], temperature, alpha)
        if proximal_mu > 0:
            loss = loss + 0.5 * proximal_mu * float(np.sum((theta - start) ** 2))
        return float(loss)

    def loss_at(theta: np.ndarray, rows: torch.Tensor) -> float:
        nn.utils.vector_to_parameters(torch.as_tensor(theta, dtype=torch.float32), params)
        return loss_of(theta, student(x[rows]), rows)

    if optimizer == "cobyla":
        every_row = torch.arange(len(x))
        best, losses = cobyla(lambda theta: loss_at(theta, every_row), start, steps)
    else:
        pair = _SpsaPair(student, params, x, batches, loss_of)
        best, losses = spsa(pair, start, steps, lr, [int(s) for s in np.atleast_1d(seed)])
    nn.utils.vector_to_parameters(torch.as_tensor(best, dtype=torch.float32), params)
    return losses


class _SpsaPair:
    """SPSA's two perturbations on one minibatch, in one executor call (one job).

    The student is a QuantumStudent, split apart: angles -> executor -> logits.
    Iteration ``k`` draws its minibatch once, for both evaluations.
    """

    def __init__(
        self,
        student: Any,
        params: list[nn.Parameter],
        x: torch.Tensor,
        batches: Iterator[np.ndarray],
        loss_of: Callable[[np.ndarray, torch.Tensor, torch.Tensor], float],
    ) -> None:
        self.student, self.params, self.x = student, params, x
        self.batches, self.loss_of = batches, loss_of
        self.fresh: dict[int, torch.Tensor] = {}

    def minibatch(self, k: int) -> torch.Tensor:
        if k not in self.fresh:
            self.fresh.clear()
            self.fresh[k] = torch.as_tensor(next(self.batches))
        return self.fresh[k]

    def set(self, theta: np.ndarray) -> None:
        nn.utils.vector_to_parameters(torch.as_tensor(theta, dtype=torch.float32), self.params)

    def __call__(self, plus: np.ndarray, minus: np.ndarray, k: int) -> tuple[float, float]:
        rows, circuit = self.minibatch(k), self.student
        angles = circuit.angles(self.x[rows])
        weights = []
        for theta in (plus, minus):
            self.set(theta)
            weights.append(circuit.weights.detach().to(torch.float64).clone())
        readouts = circuit.executor.run_many(angles, weights)
        found = []
        for theta, readout in zip((plus, minus), readouts, strict=True):
            self.set(theta)
            found.append(self.loss_of(theta, circuit.logits(readout), rows))
        return found[0], found[1]


@torch.no_grad()
def evaluate_student(
    student: nn.Module, features: np.ndarray, labels: np.ndarray, batch_size: int = EVAL_BATCH
) -> tuple[float, float]:
    """Cross-entropy and accuracy of the student, without gradients.

    Parameters
    ----------
    student : nn.Module
        Maps (batch, in_features) float32 to (batch, n_classes) logits.
    features : np.ndarray
        Shape (rows, in_features), rows >= 1.
    labels : np.ndarray
        Shape (rows,), class indices.
    batch_size : int
        Rows per forward pass (memory only; the result does not depend on it).

    Returns
    -------
    loss : float
        Mean cross-entropy in nats (computed in float64).
    accuracy : float
        Fraction of rows whose argmax logit is the label, in [0, 1].
    """
    if len(features) == 0 or len(features) != len(labels):
        raise ValueError(f"need >= 1 row and matching labels, got {len(features)}/{len(labels)}")
    student.eval()
    x = torch.as_tensor(features, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.long)
    logits = torch.cat([student(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    loss = F.cross_entropy(logits.double(), y).item()
    accuracy = (logits.argmax(dim=1) == y).double().mean().item()
    return float(loss), float(accuracy)
