"""Comparing figures that two computations of the same thing produced.

Float32 matrix products on the CPU (MKL, oneDNN) may add in a different order
from one call to the next: the order can depend on the buffers' memory alignment
and on how many threads the library takes under the machine's load. A figure
recomputed from identical inputs then agrees to round-off, not bit for bit, so a
test that compares two runs' figures compares them with :func:`approx_floats`.
Test modules import it as ``from roundoff import approx_floats``.

Round-off grows when it feeds further training: two runs that differ by it in round 1
(a resume against an uninterrupted run, say) end rounds later apart by far more. Those
are compared with :data:`TRAINED` (relative) and :func:`assert_within_motion`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

ROUND_OFF = 1e-6
"""Absolute tolerance: far above float32 round-off of a loss in nats, far below any change
a decision could read."""


TRAINED = 1e-3
"""Relative tolerance of figures after rounds of training on round-off that differed: a
clean clone on another CPU saw a resumed run's student 1.3e-4 from the uninterrupted
one's (identical on the machine that wrote these tests), while a lost or wrong resume
moves figures by whole percent."""


def approx_floats(value: Any, tolerance: float = ROUND_OFF, rel: float = 0.0) -> Any:
    """``value`` with every float wrapped in ``pytest.approx(abs=tolerance, rel=rel)``."""
    if isinstance(value, dict):
        return {k: approx_floats(v, tolerance, rel) for k, v in value.items()}
    if isinstance(value, list):
        return [approx_floats(v, tolerance, rel) for v in value]
    if isinstance(value, float):
        return pytest.approx(value, abs=tolerance, rel=rel, nan_ok=True)
    return value


def assert_within_motion(got: Any, want: Any, start: Any, share: float = 0.01) -> None:
    """Each array of ``got`` within ``share`` of how far ``want``'s moved from ``start``'s.

    The three are mappings of arrays (``np.load`` of a student); ``start`` is a checkpoint
    the training went on from, so the bound scales with what the later rounds did.
    """
    assert list(got) == list(want)
    for key in want:
        moved = float(np.abs(want[key] - start[key]).max())
        assert moved > 0, f"{key}: did not move after {start!r}"
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=share * moved, err_msg=key)
