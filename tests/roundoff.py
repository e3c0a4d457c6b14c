"""Comparing figures that two computations of the same thing produced.

Float32 matrix products on the CPU (MKL, oneDNN) may add in a different order
from one call to the next: the order can depend on the buffers' memory alignment
and on how many threads the library takes under the machine's load. A figure
recomputed from identical inputs then agrees to round-off, not bit for bit, so a
test that compares two runs' figures compares them with :func:`approx_floats`.
Test modules import it as ``from roundoff import approx_floats``.
"""

from __future__ import annotations

from typing import Any

import pytest

ROUND_OFF = 1e-6
"""Absolute tolerance: far above float32 round-off of a loss in nats, far below any change
a decision could read."""


def approx_floats(value: Any, tolerance: float = ROUND_OFF) -> Any:
    """``value`` with every float wrapped in ``pytest.approx(abs=tolerance)``, nested."""
    if isinstance(value, dict):
        return {k: approx_floats(v, tolerance) for k, v in value.items()}
    if isinstance(value, list):
        return [approx_floats(v, tolerance) for v in value]
    if isinstance(value, float):
        return pytest.approx(value, abs=tolerance, nan_ok=True)
    return value
