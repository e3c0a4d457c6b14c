"""Student circuit throughput on each simulator, against a plain torch statevector floor.

For 4 and 8 qubits, a batch of 256 inputs through the default student circuit
(angle embedding, 3 strongly entangling layers, ``<Z>`` on 3 class wires):

- ``default.qubit`` (backprop) and ``lightning.qubit`` (adjoint): forward and
  backward (gradients of all weights), as in training;
- ``qiskit.aer`` and ``fake:FakeManilaV2`` (4 qubits; it has 5): forward
  only, 1,024 shots per input, one batched job: these devices train with
  gradient-free optimizers, so a forward pass is their training step's unit;
- ``floor``: the same circuit written here as a plain batched torch
  statevector simulation (a (batch, 2, ..., 2) complex tensor, one tensordot
  per rotation, index flips for CNOTs), forward and backward. It is checked
  against ``default.qubit`` to 1e-10 before it is timed.

Prints samples per second and ends with
``RESULT floor_ratio=<default.qubit seconds / floor seconds, 4 qubits>``.

Run: ``python bench/quantum_throughput.py [--repeats 10]``
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quantum.circuits import CircuitSpec  # noqa: E402
from quantum.student import QuantumStudent, make_student  # noqa: E402

BATCH, LAYERS, CLASSES, SHOTS = 256, 3, 3, 1024


def _rot(phi: torch.Tensor, theta: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """RZ(omega) RY(theta) RZ(phi) as a 2x2 complex matrix."""
    c, s = torch.cos(theta / 2), torch.sin(theta / 2)
    plus, minus = torch.exp(-0.5j * (phi + omega)), torch.exp(0.5j * (phi - omega))
    return torch.stack(
        [torch.stack([plus * c, -minus * s]), torch.stack([minus.conj() * s, plus.conj() * c])]
    )


def floor_circuit(angles: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """<Z> on the class wires of the default circuit, as a plain torch statevector.

    ``angles`` (batch, n) float64, ``weights`` (layers, n, 3); returns (batch, 3).
    """
    batch, n = angles.shape
    amplitudes = torch.stack([torch.cos(angles / 2), torch.sin(angles / 2)], dim=-1)
    state = amplitudes[:, 0].to(torch.complex128)
    for q in range(1, n):  # the RY embedding of |0...0> is a product state
        state = (state[..., None] * amplitudes[:, q].reshape((batch,) + (1,) * q + (2,))).to(
            torch.complex128
        )
    for layer in range(weights.shape[0]):
        for q in range(n):
            matrix = _rot(*weights[layer, q])
            state = torch.movedim(torch.tensordot(state, matrix, dims=([q + 1], [1])), -1, q + 1)
        r = layer % (n - 1) + 1
        for control in range(n):
            target = (control + r) % n
            off, on = state.select(control + 1, 0), state.select(control + 1, 1)
            on = on.flip(target + 1 if target < control else target)  # axes after select
            state = torch.stack([off, on], dim=control + 1)
    probabilities = state.abs() ** 2
    out = []
    for wire in range(CLASSES):
        marginal = probabilities.sum(dim=[d for d in range(1, n + 1) if d != wire + 1])
        out.append(marginal[:, 0] - marginal[:, 1])
    return torch.stack(out, dim=-1)


def _seconds(step: Callable[[], None], repeats: int) -> float:
    step()  # warm-up (compilation, caches)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _student_step(student: QuantumStudent, angles: torch.Tensor, backward: bool) -> Callable[[]]:
    def step() -> None:
        weights = student.weights.detach().double().requires_grad_(backward)
        out = student.executor.run(angles, weights)
        if backward:
            out.sum().backward()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    ratio = {}
    for n in (4, 8):
        angles = torch.as_tensor(rng.uniform(0, math.pi, (BATCH, n)))
        spec = CircuitSpec(n, LAYERS, CLASSES)
        weights = torch.as_tensor(rng.normal(0, 0.5, spec.weight_shape), dtype=torch.float64)
        reference = make_student(n, CLASSES, n_qubits=n, n_layers=LAYERS)
        reference.weights.data = weights.float()
        expected = reference.executor.run(angles, weights)
        got = floor_circuit(angles, weights)
        assert torch.allclose(got, expected, atol=1e-10), "the floor is not the same circuit"
        devices = ["default.qubit", "lightning.qubit", "qiskit.aer"]
        devices += ["fake:FakeManilaV2"] if n <= 5 else []
        for device in devices:
            student = make_student(n, CLASSES, n_qubits=n, n_layers=LAYERS, device=device)
            backward = student.executor.differentiable
            repeats = args.repeats if device != "lightning.qubit" else max(2, args.repeats // 5)
            seconds = _seconds(_student_step(student, angles, backward), repeats)
            rows.append((n, device, "fwd+bwd" if backward else "fwd", seconds))
            if device == "default.qubit":
                ratio[n] = seconds

        def floor_step(angles: torch.Tensor = angles, weights: torch.Tensor = weights) -> None:
            w = weights.clone().requires_grad_(True)
            floor_circuit(angles, w).sum().backward()

        floor = _seconds(floor_step, args.repeats)
        rows.append((n, "floor (torch statevector)", "fwd+bwd", floor))
        ratio[n] = ratio[n] / floor
    print(
        f"batch {BATCH}, {LAYERS} layers, {CLASSES} class wires, {torch.get_num_threads()} threads"
    )
    print(f"{'qubits':>6}  {'device':<26} {'pass':<8} {'seconds':>9} {'samples/s':>10}")
    for n, device, kind, seconds in rows:
        print(f"{n:>6}  {device:<26} {kind:<8} {seconds:>9.4f} {BATCH / seconds:>10.0f}")
    print(f"RESULT floor_ratio={ratio[4]:.2f} floor_ratio_8q={ratio[8]:.2f}")


if __name__ == "__main__":
    main()
