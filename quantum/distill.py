"""Knowledge distillation of the teacher into the student."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels)``.

    ``teacher_T = softmax(teacher_logits / T)`` and likewise for the student;
    KL is averaged over the batch, in nats. The ``T^2`` factor keeps the
    gradient of the KL term on the same scale as the cross-entropy's when T
    changes (Hinton et al., 2015).
    """
    log_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")
    ce = F.cross_entropy(student_logits, labels)
    return alpha * temperature**2 * kl + (1.0 - alpha) * ce


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
    seed: int,
) -> dict[str, float]:
    """Run exactly ``steps`` Adam steps of :func:`kd_loss` on seeded minibatches.

    Minibatches are drawn without replacement within an epoch; each epoch
    reshuffles. A trainable ``projection`` submodule learns at
    ``projection_lr`` (default ``lr``): its inputs are raw embeddings, and it
    measured best at a smaller rate than the circuit's. Returns ``steps``,
    ``train_loss`` (mean of the last ``min(steps, 5)`` losses; NaN when
    ``steps`` is 0) and wall ``seconds``.
    """
    started = time.perf_counter()
    x = torch.as_tensor(features, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.long)
    t = torch.as_tensor(teacher_logits, dtype=torch.float32)
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
    optimizer = torch.optim.Adam(groups, lr=lr)
    rng = np.random.default_rng(seed)
    order = np.empty(0, dtype=np.int64)
    losses: list[float] = []
    student.train()
    for _ in range(steps):
        if len(order) == 0:
            order = rng.permutation(len(x))
        rows = torch.as_tensor(order[:batch_size])
        order = order[batch_size:]
        loss = kd_loss(student(x[rows]), t[rows], y[rows], temperature, alpha)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    tail = losses[-5:]
    return {
        "steps": float(steps),
        "train_loss": float(np.mean(tail)) if tail else float("nan"),
        "seconds": time.perf_counter() - started,
    }


@torch.no_grad()
def evaluate_student(
    student: nn.Module, features: np.ndarray, labels: np.ndarray, batch_size: int = 512
) -> tuple[float, float]:
    """Mean cross-entropy (nats) and accuracy of the student on ``features``."""
    student.eval()
    x = torch.as_tensor(features, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.long)
    logits = torch.cat([student(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    loss = F.cross_entropy(logits.double(), y).item()
    accuracy = (logits.argmax(dim=1) == y).double().mean().item()
    return float(loss), float(accuracy)
