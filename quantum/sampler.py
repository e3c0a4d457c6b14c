"""Shot-based execution on Qiskit backends: one circuit transpiled once, one job per batch.

pennylane-qiskit's ``qiskit.remote`` device expands a broadcast batch into one
circuit, and one job, per sample. :class:`SamplerExecutor` instead transpiles
the student's parametrised circuit once per backend and sends a whole batch as
one ``SamplerV2`` job with an array of parameter values (``batched=True``);
``batched=False`` reproduces the one-job-per-sample pattern for comparison.
The same code runs on Aer, on fake IBM backends (qiskit-ibm-runtime's local
testing mode) and on IBM hardware.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from quantum.circuits import CircuitSpec, qiskit_circuit, readout_from_probabilities
from quantum.executor import Executor

logger = logging.getLogger(__name__)

#: Optimisation level of the one-off transpilation (layout, routing, basis gates).
OPTIMIZATION_LEVEL = 1


class SamplerExecutor(Executor):
    """Evaluate a :class:`CircuitSpec` on a Qiskit backend with shots (no gradients).

    Parameters
    ----------
    spec : CircuitSpec
        The circuit; its gate list is built as a Qiskit circuit.
    backend : qiskit.providers.BackendV2
        ``AerSimulator``, a ``FakeBackendV2`` or an IBM backend.
    shots : int
        Shots per circuit execution (per input row).
    batched : bool
        One job per call (True) or one job per row (False).
    seed : int
        Seeds the transpiler's layout and routing, and (with ``simulator``)
        the sampling: every job gets its own seed, derived from
        ``(seed, round, partition, job number)`` (see :meth:`reseed`), so shot
        noise varies from job to job and round to round, and a rerun repeats it.
    simulator : bool
        True for Aer and the fake IBM backends (seeded sampling); False on
        hardware, where no seed applies.
    """

    differentiable = False

    def __init__(
        self,
        spec: CircuitSpec,
        backend: Any,
        *,
        shots: int,
        batched: bool = True,
        seed: int = 0,
        simulator: bool = True,
    ) -> None:
        from qiskit.transpiler import generate_preset_pass_manager
        from qiskit_ibm_runtime import SamplerV2

        super().__init__(spec)
        self.spec = spec
        self.backend = backend
        self.shots = shots
        self.batched = batched
        self.simulator = simulator
        self._seed_parts: tuple[int, ...] = (seed,)
        self._jobs_submitted = 0
        circuit, x, w = qiskit_circuit(spec)
        started = time.perf_counter()
        manager = generate_preset_pass_manager(
            backend=backend, optimization_level=OPTIMIZATION_LEVEL, seed_transpiler=seed
        )
        self.transpiled = manager.run(circuit)
        # Column of each transpiled-circuit parameter in [inputs | weights].
        where = {p: i for i, p in enumerate(x)} | {p: spec.n_qubits + i for i, p in enumerate(w)}
        self._columns = np.array([where[p] for p in self.transpiled.parameters], dtype=np.int64)
        self._sampler = SamplerV2(mode=backend, options={"default_shots": shots})
        n = spec.n_qubits
        # Qiskit's integer outcome has qubit q as bit q; PennyLane's wire 0 is the top bit.
        outcomes = np.arange(2**n)
        self._to_wire_order = np.zeros(2**n, dtype=np.int64)
        for q in range(n):
            self._to_wire_order |= ((outcomes >> q) & 1) << (n - 1 - q)
        logger.debug(
            "transpiled %d-qubit circuit for %s in %.2f s: depth %d, %d parameters",
            n,
            getattr(backend, "name", type(backend).__name__),
            time.perf_counter() - started,
            self.transpiled.depth(),
            len(self._columns),
        )

    @property
    def backend_name(self) -> str:
        """The backend's own name (the IBM device ``least-busy`` resolved to, say)."""
        return str(getattr(self.backend, "name", type(self.backend).__name__))

    def reseed(self, *parts: int) -> None:
        """Seed the coming jobs from ``(seed, *parts, job number)``, e.g. (round, partition)."""
        self._seed_parts = (self._seed_parts[0], *parts)
        self._jobs_submitted = 0

    def job_seed(self) -> int:
        """The simulator seed of the next job: in [1, 2**31), never 0 (local mode drops 0)."""
        sequence = np.random.SeedSequence([*self._seed_parts, self._jobs_submitted])
        return int(sequence.generate_state(1, dtype=np.uint32)[0] % (2**31 - 1)) + 1

    def _run(self, pubs: list[Any]) -> Any:
        if self.simulator:
            self._sampler.options.simulator.seed_simulator = self.job_seed()
        self._jobs_submitted += 1
        return self._sampler.run(pubs)

    def parameter_values(self, angles: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """(batch, parameters) values in the transpiled circuit's parameter order."""
        angles = np.atleast_2d(np.asarray(angles, dtype=np.float64))
        flat = np.asarray(weights, dtype=np.float64).reshape(-1)
        full = np.concatenate([angles, np.broadcast_to(flat, (len(angles), flat.size))], axis=1)
        return full[:, self._columns]

    def probabilities(self, angles: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Estimated basis-state probabilities, (batch, 2**n_qubits), PennyLane's wire order."""
        started = time.perf_counter()
        values = self.parameter_values(angles, weights)
        if self.batched:
            jobs = [self._run([(self.transpiled, values)])]
        else:
            jobs = [self._run([(self.transpiled, row)]) for row in values]
        outcomes = np.concatenate(
            [self._outcomes(job).reshape(-1, self.shots) for job in jobs], axis=0
        )
        for job in jobs:
            self.meter.add_job(_metrics(job))
        size = 2**self.spec.n_qubits
        rows = len(values)
        flat = (np.arange(rows)[:, None] * size + self._to_wire_order[outcomes]).reshape(-1)
        counts = np.bincount(flat, minlength=rows * size).reshape(rows, size)
        self.meter.shots += rows * self.shots
        logger.debug("%d job(s), %d rows in %.2f s", len(jobs), rows, time.perf_counter() - started)
        return counts / self.shots

    def _execute(self, angles: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The readout (what the PennyLane QNode returns), float64 (batch, outputs)."""
        probabilities = self.probabilities(angles.detach().numpy(), weights.detach().numpy())
        return torch.from_numpy(readout_from_probabilities(self.spec, probabilities))

    @staticmethod
    def _outcomes(job: Any) -> np.ndarray:
        """Measured outcomes as Qiskit integers (qubit q = bit q), shape (..., shots)."""
        bits = job.result()[0].data.meas
        raw = bits.array.astype(np.int64)  # (..., shots, bytes), most significant byte first
        value = np.zeros(raw.shape[:-1], dtype=np.int64)
        for byte in range(raw.shape[-1]):
            value = (value << 8) | raw[..., byte]
        return value


def _metrics(job: Any) -> dict[str, Any] | None:
    """``job.metrics()``, or None when the backend cannot report them."""
    try:
        metrics = job.metrics()
    except Exception as err:  # metrics are best-effort: a failed lookup must not fail training
        logger.warning("could not read job metrics: %s", type(err).__name__)
        return None
    return metrics if isinstance(metrics, dict) else None
