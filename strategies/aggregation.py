"""How the accepted students become the new global one: clipping, then one rule.

``fedavg`` is the example-weighted mean, ``fednova`` FedNova's step-normalised
mean (:func:`fednova`), and ``median``, ``trimmed-mean`` and ``krum`` the rules
robust to bad replies (:mod:`strategies.robust`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from strategies.robust import ROBUST, clip_update, robust_aggregate


def combine_arrays(
    rule: str,
    start: Mapping[str, np.ndarray],
    arrays: Sequence[Mapping[str, np.ndarray]],
    *,
    examples: Sequence[int],
    steps: Sequence[int],
    max_update_norm: float = 0.0,
    trim_fraction: float = 0.2,
    krum_byzantine: int = 1,
) -> dict[str, np.ndarray]:
    """The new global arrays from ``start`` (the arrays sent) and the replies' ``arrays``.

    Each update is clipped to ``max_update_norm`` when that is > 0, then
    combined by ``rule`` (``aggregation``); ``examples`` and ``steps`` (the
    steps planned) go with ``arrays``, one per reply.
    """
    if max_update_norm > 0:
        arrays = [clip_update(dict(start), dict(a), max_update_norm) for a in arrays]
    if rule == "fednova":
        return fednova(start, arrays, examples, steps)
    if rule in ROBUST:
        return robust_aggregate(rule, list(arrays), trim_fraction, krum_byzantine)
    weights = np.asarray(examples, dtype=np.float64) / float(sum(examples))
    return {k: sum(w * a[k] for w, a in zip(weights, arrays, strict=True)) for k in start}


def fednova(
    start: Mapping[str, np.ndarray],
    arrays: Sequence[Mapping[str, np.ndarray]],
    examples: Sequence[int],
    steps: Sequence[int],
) -> dict[str, np.ndarray]:
    """FedNova's normalised average (Wang et al., 2020) of the replies' arrays.

    With ``p_i = n_i / sum n`` (``num-examples``) and ``tau_i`` the steps the
    server planned for client ``i`` (``steps``, one per reply), the new model is
    ``w - tau_eff * sum_i p_i (w - w_i) / tau_i`` with ``tau_eff = sum_i p_i
    tau_i``. With equal steps this is FedAvg; with unequal steps a client that
    ran many steps no longer pulls the average further than its share. Replies
    planned for 0 steps changed nothing and are left out (all of them: ``start``).
    """
    used = [(a, n, tau) for a, n, tau in zip(arrays, examples, steps, strict=True) if tau > 0]
    if not used:
        return dict(start)
    weights = np.array([float(n) for _, n, _ in used])
    weights /= weights.sum()
    taus = np.array([float(tau) for _, _, tau in used])
    tau_eff = float(weights @ taus)
    return {
        key: w0
        - tau_eff
        * sum(
            p * (w0 - a[key]) / tau for p, tau, (a, _, _) in zip(weights, taus, used, strict=True)
        )
        for key, w0 in start.items()
    }
