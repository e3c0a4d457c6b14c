"""Student optimizers: Adam on gradients, COBYLA and SPSA without them.

Gradient-free optimizers are the choice for shot-based devices (Aer, fake IBM
backends, hardware), where our batched executor returns no gradients and
parameter-shift would cost two circuit batches per parameter per step. Their
budget is the client's step budget, as in the paper, and it holds exactly:

- COBYLA: a step is one objective evaluation. SciPy raises any evaluation
  budget below ``parameters + 2`` to that floor, so a smaller budget is
  refused (:func:`check_cobyla_budget`), and the trust region is allowed to
  shrink far enough that COBYLA does not stop before its budget.
- SPSA: a step is one iteration of two evaluations, sent together: one job
  per step on a batched Qiskit executor.

Both report the evaluations they ran. They tune the circuit weights and the
readout's scale and bias; a trainable projection (hundreds of inputs per
qubit) stays as received.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize

from config.errors import ConfigError
from quantum.devices import DeviceSpec

logger = logging.getLogger(__name__)

OPTIMIZERS = ("auto", "adam", "cobyla", "spsa")
#: Initial trust-region radius of COBYLA, radians.
COBYLA_RHOBEG = 0.3
#: Final trust-region radius: small enough that COBYLA spends its whole budget.
COBYLA_RHOEND = 1e-12
#: SPSA: perturbation size c and the classic gain exponents (Spall, 1998).
SPSA_C, SPSA_ALPHA, SPSA_GAMMA = 0.1, 0.602, 0.101


def resolve_optimizer(name: str, device: DeviceSpec) -> str:
    """The optimizer that runs: ``auto`` becomes adam (PennyLane) or spsa (Qiskit devices).

    Raises
    ------
    ConfigError
        Unknown name, or adam on a shot-based device (no gradients there).
    """
    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer={name!r}: must be one of {', '.join(OPTIMIZERS)}")
    if name == "auto":
        return "spsa" if device.shots_based else "adam"
    if name == "adam" and device.shots_based:
        raise ConfigError(
            f"optimizer='adam': device={device.name!r} samples with shots and gives no "
            "gradients; use optimizer=spsa, cobyla or auto"
        )
    return name


def cobyla_floor(parameters: int) -> int:
    """The fewest evaluations SciPy's COBYLA runs for ``parameters`` unknowns: n + 2."""
    return parameters + 2


def check_cobyla_budget(budget: int, parameters: int, key: str = "local-steps") -> None:
    """Refuse, in one line naming the floor, a COBYLA budget SciPy would silently raise.

    Raises
    ------
    ConfigError
        When ``0 < budget < parameters + 2``.
    """
    floor = cobyla_floor(parameters)
    if 0 < budget < floor:
        raise ConfigError(
            f"{key}={budget}: COBYLA needs at least {floor} evaluations (parameters + 2) for "
            f"the student's {parameters} tuned parameters, and SciPy would run {floor} anyway; "
            f"raise the budget to >= {floor} or use optimizer=spsa"
        )


def cobyla(
    objective: Callable[[np.ndarray], float], start: np.ndarray, maxiter: int
) -> tuple[np.ndarray, list[float]]:
    """Minimise with COBYLA for exactly ``maxiter`` objective evaluations.

    Returns the best point seen and the objective value of every evaluation
    (``maxiter`` of them, fewer only if the objective is flat to 1e-12).

    Raises
    ------
    ConfigError
        When ``maxiter`` is below :func:`cobyla_floor` (see :func:`check_cobyla_budget`).
    """
    check_cobyla_budget(maxiter, len(start))
    values: list[float] = []

    def recorded(theta: np.ndarray) -> float:
        value = float(objective(theta))
        values.append(value)
        return value

    result = minimize(
        recorded,
        start,
        method="COBYLA",
        tol=COBYLA_RHOEND,
        options={"maxiter": maxiter, "rhobeg": COBYLA_RHOBEG},
    )
    return np.asarray(result.x, dtype=np.float64), values


def spsa(
    objective_pair: Callable[[np.ndarray, np.ndarray, int], tuple[float, float]],
    start: np.ndarray,
    maxiter: int,
    lr: float,
    seed: int | list[int] | tuple[int, ...],
) -> tuple[np.ndarray, list[float]]:
    """Simultaneous-perturbation stochastic approximation, ``maxiter`` iterations.

    Each iteration evaluates ``objective_pair(theta + c_k delta, theta - c_k delta, k)``
    (both points at once, so a shot-based executor sends them as one job; ``k``
    lets the caller draw a fresh minibatch) and steps
    ``theta -= a_k (f+ - f-) / (2 c_k) delta`` with ``delta`` random signs,
    ``a_k = a / (k + 1 + A)^0.602``, ``c_k = c / (k + 1)^0.101``,
    ``A = maxiter / 10`` and ``a`` chosen so the first gain is ``lr``.

    Returns the final point and the mean of each iteration's two evaluations.
    """
    rng = np.random.default_rng(seed)
    theta = np.array(start, dtype=np.float64)
    stability = maxiter / 10
    a = lr * (1 + stability) ** SPSA_ALPHA
    values: list[float] = []
    for k in range(maxiter):
        gain = a / (k + 1 + stability) ** SPSA_ALPHA
        width = SPSA_C / (k + 1) ** SPSA_GAMMA
        delta = rng.choice([-1.0, 1.0], size=theta.shape)
        plus, minus = objective_pair(theta + width * delta, theta - width * delta, k)
        theta -= gain * (plus - minus) / (2 * width) * delta
        values.append(0.5 * (plus + minus))
    return theta, values
