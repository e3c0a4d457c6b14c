"""Shot-based execution on Qiskit backends: one circuit transpiled once, one job per step.

pennylane-qiskit's ``qiskit.remote`` device expands a broadcast batch into one
circuit, and one job, per sample. :class:`SamplerExecutor` instead transpiles
the student's parametrised circuit once per backend and sends a whole batch as
one ``SamplerV2`` job with an array of parameter values (``batched=True``);
``batched=False`` reproduces the one-job-per-sample pattern for comparison.
Several weight sets on one batch (SPSA's two perturbations) go out as one job
too (:meth:`SamplerExecutor.probabilities_many`), unless ``stack=False``.

Jobs run in one of Qiskit Runtime's execution modes: ``job`` (each job queues
alone), ``batch`` (a message's jobs go into one Runtime ``Batch`` and queue
together) or ``session`` (a dedicated ``Session``; billed by wall time, and not
offered on every plan). The same code runs on Aer, on fake IBM backends
(qiskit-ibm-runtime's local testing mode, which accepts ``Batch`` and
``Session`` and runs their jobs locally) and on IBM hardware.

Every job is metered with its rows, shots and an estimate of its billed QPU
seconds (:func:`job_qpu_seconds`), so a run can be priced before it starts and
held to ``max-qpu-seconds`` where no bill is reported (local testing mode).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from quantum.circuits import CircuitSpec, qiskit_circuit, readout_from_probabilities
from quantum.executor import EXECUTION_MODES, Executor

logger = logging.getLogger(__name__)

#: Optimisation level of the one-off transpilation (layout, routing, basis gates).
OPTIMIZATION_LEVEL = 1
#: Assumed fixed QPU seconds of one job on IBM hardware (loading, set-up and read-out):
#: the order of IBM's own usage estimates for a one-circuit job. An assumption, not measured.
JOB_OVERHEAD_SECONDS = 3.0
#: QPU seconds a shot is priced at on a billed backend whose durations cannot be read:
#: several times a typical IBM shot (a few microseconds of gates plus the default
#: 250 microsecond repetition delay), so a cap errs on the side of stopping early.
FALLBACK_SHOT_SECONDS = 1e-3
#: What Aer's error says when it rejects a noise model's probabilities (see ``_outcomes_of``).
AER_FLAKE = "invalid probability vector"


def shot_seconds(transpiled: Any, backend: Any, billed: bool = False) -> float:
    """QPU seconds one shot of ``transpiled`` holds ``backend``: circuit duration + rep delay.

    The duration comes from the backend's gate and measurement durations
    (``QuantumCircuit.estimate_duration``). A simulator without durations
    gives 0; a ``billed`` backend (IBM hardware or its fake replica) whose
    durations cannot be read is priced at ``FALLBACK_SHOT_SECONDS`` with one
    warning line, never at 0.
    """
    target = getattr(backend, "target", None)
    try:
        duration = float(transpiled.estimate_duration(target, unit="s"))
    except Exception as err:  # Aer's target has no durations: nothing is billed there
        if not billed:
            logger.debug("no circuit duration on %s: %s", type(backend).__name__, err)
            return 0.0
        logger.warning(
            "no circuit duration on %s (%s): a shot is priced at %g s, conservatively",
            getattr(backend, "name", type(backend).__name__),
            str(err).splitlines()[0][:120] if str(err) else type(err).__name__,
            FALLBACK_SHOT_SECONDS,
        )
        return FALLBACK_SHOT_SECONDS
    seconds = duration + float(getattr(backend, "default_rep_delay", 0.0) or 0.0)
    return max(seconds, FALLBACK_SHOT_SECONDS) if billed and seconds <= 0 else seconds


def job_qpu_seconds(rows: int, shots: int, seconds_per_shot: float) -> float:
    """Estimated billed QPU seconds of one job of ``rows`` parameter sets x ``shots``.

    ``JOB_OVERHEAD_SECONDS`` per job plus every shot's circuit time; 0 where a
    shot costs nothing (simulators).
    """
    if seconds_per_shot <= 0:
        return 0.0
    return JOB_OVERHEAD_SECONDS + rows * shots * seconds_per_shot


class SamplerExecutor(Executor):
    """Evaluate a :class:`CircuitSpec` on a Qiskit backend with shots (no gradients).

    Parameters
    ----------
    spec : CircuitSpec
        The circuit; its gate list is built as a Qiskit circuit.
    backend : qiskit.providers.BackendV2
        ``AerSimulator``, a ``FakeBackendV2`` or an IBM backend.
    shots : int
        Shots per circuit execution (per input row); :meth:`set_shots` changes
        it per message.
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
    mode : {"job", "batch", "session"}
        Qiskit Runtime's execution mode inside :meth:`scope`.
    stack : bool
        Send several weight sets on one batch as one job (True) or one job each.
    sampler : optional
        A SamplerV2-compatible primitive to use instead of Runtime's
        ``SamplerV2`` on ``backend`` (e.g. Qiskit's reference
        ``StatevectorSampler`` with a shared generator, whose draws do not
        depend on how rows are split into jobs); ``mode`` then does not apply.
    billed : bool
        True for IBM devices and their fake replicas: a shot is then never
        priced at 0 (see :func:`shot_seconds`).
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
        mode: str = "job",
        stack: bool = True,
        sampler: Any = None,
        billed: bool = False,
    ) -> None:
        from qiskit.transpiler import generate_preset_pass_manager
        from qiskit_ibm_runtime import SamplerV2

        if mode not in EXECUTION_MODES:
            raise ValueError(f"mode={mode!r}: must be one of {', '.join(EXECUTION_MODES)}")
        super().__init__(spec)
        self.spec = spec
        self.backend = backend
        self.default_shots = self.shots = shots
        self.batched = batched
        self.simulator = simulator
        self.mode = mode
        self.stack = stack
        self._own_sampler = sampler is not None
        self._seed_parts: tuple[int, ...] = (seed,)
        self._jobs_submitted = 0
        #: What each job since :meth:`reset_meter` was submitted to: the backend (job mode),
        #: or the Runtime ``Batch`` or ``Session`` of its :meth:`scope`.
        self.job_modes: list[Any] = []
        circuit, x, w = qiskit_circuit(spec)
        started = time.perf_counter()
        manager = generate_preset_pass_manager(
            backend=backend, optimization_level=OPTIMIZATION_LEVEL, seed_transpiler=seed
        )
        self.transpiled = manager.run(circuit)
        self._seconds_per_shot = shot_seconds(self.transpiled, backend, billed)
        # Column of each transpiled-circuit parameter in [inputs | weights].
        where = {p: i for i, p in enumerate(x)} | {p: spec.n_qubits + i for i, p in enumerate(w)}
        self._columns = np.array([where[p] for p in self.transpiled.parameters], dtype=np.int64)
        self._sampler = sampler if sampler is not None else SamplerV2(mode=backend)
        n = spec.n_qubits
        # Qiskit's integer outcome has qubit q as bit q; PennyLane's wire 0 is the top bit.
        outcomes = np.arange(2**n)
        self._to_wire_order = np.zeros(2**n, dtype=np.int64)
        for q in range(n):
            self._to_wire_order |= ((outcomes >> q) & 1) << (n - 1 - q)
        logger.debug(
            "transpiled %d-qubit circuit for %s in %.2f s: depth %d, %d parameters, %.2e s/shot",
            n,
            getattr(backend, "name", type(backend).__name__),
            time.perf_counter() - started,
            self.transpiled.depth(),
            len(self._columns),
            self._seconds_per_shot,
        )

    @property
    def backend_name(self) -> str:
        """The backend's own name (the IBM device ``least-busy`` resolved to, say)."""
        return str(getattr(self.backend, "name", type(self.backend).__name__))

    @property
    def execution_mode(self) -> str:
        return self.mode

    @property
    def seconds_per_shot(self) -> float:
        """Estimated QPU seconds of one shot on this backend (0 on simulators without durations)."""
        return self._seconds_per_shot

    def set_shots(self, shots: int) -> None:
        """Shots per row of the coming jobs; 0 restores the device's ``shots``."""
        self.shots = int(shots) if shots > 0 else self.default_shots

    def reset_meter(self) -> Any:
        self.job_modes = []
        return super().reset_meter()

    @contextmanager
    def scope(self) -> Iterator[None]:
        """Run the enclosed jobs in one Runtime ``Batch`` or ``Session`` (``mode``), closed after.

        In ``job`` mode (or with an own ``sampler``) every job goes out on its own.
        """
        if self.mode == "job" or self._own_sampler:
            yield
            return
        from qiskit_ibm_runtime import Batch, SamplerV2, Session

        grouping = Batch if self.mode == "batch" else Session
        previous = self._sampler
        with grouping(backend=self.backend) as context:
            self._sampler = SamplerV2(mode=context)
            try:
                yield
            finally:
                self._sampler = previous

    def reseed(self, *parts: int) -> None:
        """Seed the coming jobs from ``(seed, *parts, job number)``, e.g. (round, partition)."""
        self._seed_parts = (self._seed_parts[0], *parts)
        self._jobs_submitted = 0

    def job_seed(self) -> int:
        """The simulator seed of the next job: in [1, 2**31), never 0 (local mode drops 0)."""
        sequence = np.random.SeedSequence([*self._seed_parts, self._jobs_submitted])
        return int(sequence.generate_state(1, dtype=np.uint32)[0] % (2**31 - 1)) + 1

    def _run(self, values: np.ndarray) -> tuple[Any, int]:
        """Submit one job: the circuit at ``values`` (rows x parameters), ``shots`` per row.

        Returns the job and its simulator seed (see :meth:`_outcomes_of`).
        """
        seed = self.job_seed()
        self._jobs_submitted += 1
        return self._submit(values, seed), seed

    def _submit(self, values: np.ndarray, seed: int) -> Any:
        if self.simulator and not self._own_sampler:
            self._sampler.options.simulator.seed_simulator = seed
        self.job_modes.append(getattr(self._sampler, "mode", None) or self.backend)
        return self._sampler.run([(self.transpiled, values, self.shots)])

    def _outcomes_of(self, job: Any, values: np.ndarray, seed: int) -> tuple[Any, np.ndarray]:
        """The job's outcomes; a local simulator's job is resubmitted once, same seed, on
        Aer's ``invalid probability vector`` error.

        Aer (0.17) intermittently rejects a noise model whose probabilities it accepted
        for the job before (seen on fake IBM backends, with the same Python noise model and
        circuit; not reproduced on demand). It checks them when it loads the model, before
        any shot, so the resubmitted job samples what the first would have.
        """
        try:
            return job, self._outcomes(job)
        except ValueError as err:
            if not (self.simulator and AER_FLAKE in str(err)):
                raise
            logger.warning("resubmitting a simulator job once, seed %d: %s", seed, err)
            job = self._submit(values, seed)
            return job, self._outcomes(job)

    def parameter_values(self, angles: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """(batch, parameters) values in the transpiled circuit's parameter order."""
        angles = np.atleast_2d(np.asarray(angles, dtype=np.float64))
        flat = np.asarray(weights, dtype=np.float64).reshape(-1)
        full = np.concatenate([angles, np.broadcast_to(flat, (len(angles), flat.size))], axis=1)
        return full[:, self._columns]

    def probabilities(self, angles: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Estimated basis-state probabilities, (batch, 2**n_qubits), PennyLane's wire order."""
        return self.probabilities_many(angles, [weights])[0]

    def probabilities_many(
        self, angles: np.ndarray, weights: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """:meth:`probabilities` under each weight set, all rows in one job (``batched``)."""
        started = time.perf_counter()
        values = np.concatenate([self.parameter_values(angles, w) for w in weights])
        groups = [values] if self.batched else [row[None, :] for row in values]
        submitted = [self._run(group) for group in groups]
        jobs, found = [], []
        for (job, seed), group in zip(submitted, groups, strict=True):
            job, outcomes = self._outcomes_of(job, group, seed)
            jobs.append(job)
            found.append(outcomes.reshape(-1, self.shots))
        outcomes = np.concatenate(found, axis=0)
        for job, group in zip(jobs, groups, strict=True):
            estimate = job_qpu_seconds(len(group), self.shots, self.seconds_per_shot)
            self.meter.add_job(_metrics(job), estimated_qpu_seconds=estimate)
        size = 2**self.spec.n_qubits
        rows = len(values)
        flat = (np.arange(rows)[:, None] * size + self._to_wire_order[outcomes]).reshape(-1)
        counts = np.bincount(flat, minlength=rows * size).reshape(rows, size)
        self.meter.shots += rows * self.shots
        logger.debug("%d job(s), %d rows in %.2f s", len(jobs), rows, time.perf_counter() - started)
        return list(np.split(counts / self.shots, len(weights)))

    def _execute(self, angles: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The readout (what the PennyLane QNode returns), float64 (batch, outputs)."""
        return self._execute_many(angles, [weights])[0]

    def _execute_many(
        self, angles: torch.Tensor, weights: Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        if not self.stack and len(weights) > 1:
            return [self._execute_many(angles, [w])[0] for w in weights]
        found = self.probabilities_many(
            angles.detach().numpy(), [w.detach().numpy() for w in weights]
        )
        return [torch.from_numpy(readout_from_probabilities(self.spec, p)) for p in found]

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
    if not hasattr(job, "metrics"):  # a plain Qiskit primitive's job keeps no metrics
        return None
    try:
        metrics = job.metrics()
    except Exception as err:  # metrics are best-effort: a failed lookup must not fail training
        logger.warning("could not read job metrics: %s", type(err).__name__)
        return None
    return metrics if isinstance(metrics, dict) else None
