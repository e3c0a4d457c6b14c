"""Jobs and seconds per training step on an IBM replica: per-sample versus batched execution.

One training step on a shot-based device is one SPSA iteration: two
evaluations of the student on a minibatch (64 rows, the default
``student-batch-size``), 1,024 shots per row, on ``fake:FakeManilaV2``
(qiskit-ibm-runtime's local mode with the device's noise model). Three ways:

- ``batched``: our executor, one SamplerV2 job per evaluation carrying all 64
  parameter rows of one circuit transpiled once;
- ``per-sample``: the same executor sending one job per row;
- ``pennylane-qiskit``: the plugin's ``qiskit.remote`` device with a
  broadcast batch, which it expands into one circuit, and one job, per row
  (jobs counted with ``qml.Tracker``). Timed over one step: it is slow.

Prints jobs per step and seconds per step for each, and ends with
``RESULT jobs_per_sample=<jobs per step, per-sample> jobs_batched=<jobs per step, batched>``.

Run: ``python bench/batched_jobs.py [--steps 3] [--batch 64]``
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quantum.circuits import CircuitSpec, apply_gates  # noqa: E402
from quantum.distill import train_student  # noqa: E402
from quantum.student import make_student  # noqa: E402

DEVICE, SHOTS, QUBITS, CLASSES = "fake:FakeManilaV2", 1024, 4, 3


def _step_cost(batched: bool, steps: int, batch: int) -> tuple[float, float]:
    """(jobs per step, seconds per step) of SPSA steps through our executor."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(batch, QUBITS)).astype(np.float32)
    labels = rng.integers(0, CLASSES, size=batch)
    student = make_student(
        QUBITS, CLASSES, n_qubits=QUBITS, device=DEVICE, shots=SHOTS, batched=batched
    )
    started = time.perf_counter()
    train_student(
        student, features, labels, np.zeros((batch, CLASSES), dtype=np.float32),
        steps=steps, lr=0.05, batch_size=batch, temperature=1.0, alpha=0.0, seed=0,
        optimizer="spsa",
    )  # fmt: skip
    return student.meter.jobs / steps, (time.perf_counter() - started) / steps


def _plugin_step_cost(batch: int) -> tuple[float, float]:
    """(jobs, seconds) of the two evaluations of one step through pennylane-qiskit."""
    import pennylane as qml
    from qiskit_ibm_runtime.fake_provider import FakeManilaV2

    spec = CircuitSpec(QUBITS, 3, CLASSES)
    dev = qml.device("qiskit.remote", wires=QUBITS, backend=FakeManilaV2(), seed_transpiler=0)

    @qml.set_shots(SHOTS)
    @qml.qnode(dev)
    def circuit(inputs: torch.Tensor, weights: torch.Tensor) -> list:
        apply_gates(spec, inputs, weights)
        return [qml.expval(qml.PauliZ(w)) for w in spec.readout_wires]

    rng = np.random.default_rng(0)
    angles = rng.uniform(0, math.pi, (batch, QUBITS))
    weights = rng.normal(0, 0.1, spec.weight_shape)
    started = time.perf_counter()
    with qml.Tracker(dev) as tracker:
        for _ in range(2):  # SPSA's two evaluations
            circuit(angles, weights)
    return float(tracker.totals.get("executions", 0)), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--skip-plugin", action="store_true", help="leave out pennylane-qiskit")
    args = parser.parse_args()
    rows = [
        ("batched", *_step_cost(True, args.steps, args.batch)),
        ("per-sample", *_step_cost(False, args.steps, args.batch)),
    ]
    if not args.skip_plugin:
        rows.append(("pennylane-qiskit qiskit.remote", *_plugin_step_cost(args.batch)))
    print(f"{DEVICE}, SPSA step = 2 evaluations x {args.batch} rows x {SHOTS} shots")
    print(f"{'execution':<32} {'jobs/step':>9} {'s/step':>8}")
    for name, jobs, seconds in rows:
        print(f"{name:<32} {jobs:>9.0f} {seconds:>8.2f}")
    speedup = rows[1][2] / rows[0][2]
    print(
        f"RESULT jobs_per_sample={rows[1][1]:.0f} jobs_batched={rows[0][1]:.0f} "
        f"seconds_per_step_per_sample={rows[1][2]:.2f} seconds_per_step_batched={rows[0][2]:.2f} "
        f"step_speedup={speedup:.1f}"
    )


if __name__ == "__main__":
    main()
