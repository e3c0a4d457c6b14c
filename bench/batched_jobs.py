"""Jobs, seconds and priced QPU seconds per training step on an IBM replica.

One training step on a shot-based device is one SPSA iteration: two
evaluations of the student on a minibatch (64 rows, the default
``student-batch-size``), 1,024 shots per row, on ``fake:FakeManilaV2``
(qiskit-ibm-runtime's local mode with the device's noise model). Four ways:

- ``one job per step``: our executor, both perturbations' 2 x 64 parameter
  rows in one SamplerV2 job of one circuit transpiled once (the default);
- ``one job per evaluation``: the same, one job for each perturbation (what
  the executor did before);
- ``per-sample``: the same executor sending one job per row;
- ``pennylane-qiskit``: the plugin's ``qiskit.remote`` device with a
  broadcast batch, which it expands into one circuit, and one job, per row
  (jobs counted with ``qml.Tracker``). Timed over one step: it is slow.

For each it prints jobs and wall seconds per step, and the QPU seconds the
step would bill on the real device by the cost model
(``quantum.sampler.job_qpu_seconds``: an assumed 3 s per job plus each shot's
circuit duration and repetition delay). Local testing mode has no queue, so
the wall seconds leave out what fewer jobs save most on hardware: each job's
wait in the queue. Ends with ``RESULT jobs_per_sample=<n> jobs_batched=<n> ...``.

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


def _step_cost(way: str, steps: int, batch: int) -> tuple[float, float, float]:
    """(jobs, seconds, priced QPU seconds) per SPSA step through our executor."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(batch, QUBITS)).astype(np.float32)
    labels = rng.integers(0, CLASSES, size=batch)
    student = make_student(
        QUBITS, CLASSES, n_qubits=QUBITS, device=DEVICE, shots=SHOTS, batched=way != "per-sample"
    )
    student.executor.stack = way == "one job per step"  # type: ignore[attr-defined]
    started = time.perf_counter()
    train_student(
        student, features, labels, np.zeros((batch, CLASSES), dtype=np.float32),
        steps=steps, lr=0.05, batch_size=batch, temperature=1.0, alpha=0.0, seed=0,
        optimizer="spsa",
    )  # fmt: skip
    seconds = (time.perf_counter() - started) / steps
    meter = student.meter
    return meter.jobs / steps, seconds, meter.estimated_qpu_seconds / steps


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
    ways = ("one job per step", "one job per evaluation", "per-sample")
    rows = {way: _step_cost(way, args.steps, args.batch) for way in ways}
    if not args.skip_plugin:
        jobs, seconds = _plugin_step_cost(args.batch)
        rows["pennylane-qiskit qiskit.remote"] = (jobs, seconds, float("nan"))
    print(f"{DEVICE}, SPSA step = 2 evaluations x {args.batch} rows x {SHOTS} shots")
    print(f"{'execution':<32} {'jobs/step':>9} {'s/step':>8} {'priced QPU s/step':>18}")
    for name, (jobs, seconds, qpu) in rows.items():
        priced = "-" if qpu != qpu else f"{qpu:.1f}"  # NaN: the plugin's jobs are not metered
        print(f"{name:<32} {jobs:>9.0f} {seconds:>8.2f} {priced:>18}")
    one, two, per_sample = (rows[way] for way in ways)
    print(
        f"RESULT jobs_per_sample={per_sample[0]:.0f} jobs_batched={one[0]:.0f} "
        f"jobs_two_per_step={two[0]:.0f} seconds_per_step_before={two[1]:.2f} "
        f"seconds_per_step_after={one[1]:.2f} seconds_per_step_per_sample={per_sample[1]:.2f} "
        f"qpu_seconds_per_step_before={two[2]:.1f} qpu_seconds_per_step_after={one[2]:.1f} "
        f"qpu_seconds_per_step_per_sample={per_sample[2]:.1f}"
    )


if __name__ == "__main__":
    main()
