"""One interface for every device: run a batch of the circuit, meter what it cost.

An :class:`Executor` is built once per node and run (see
:func:`quantum.devices.make_executor`) and used by every student that node
trains. :meth:`Executor.run` takes a batch of input angles and the circuit
weights and returns the circuit's readout as a float64 tensor of shape
(batch, outputs); it counts executions and wall time in :attr:`Executor.meter`.
Shot-based executors also count jobs, shots, QPU and queue seconds there.
Nothing outside this module and :mod:`quantum.sampler` knows which kind of
executor it holds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from quantum.circuits import CircuitSpec, build_qnode
from quantum.metering import CostMeter

#: Qiskit Runtime's ways of grouping a message's jobs (``qiskit-execution-mode``).
EXECUTION_MODES = ("job", "batch", "session")


class Executor:
    """Runs :attr:`circuit` on one device; subclasses implement :meth:`_execute`.

    Attributes
    ----------
    circuit : CircuitSpec
        The circuit it runs.
    differentiable : bool
        True when :meth:`run`'s output carries gradients (backprop or adjoint);
        False on shot-based devices, which train with gradient-free optimizers.
    meter : CostMeter
        Running totals since the last :meth:`reset_meter`.
    """

    differentiable = True

    def __init__(self, circuit: CircuitSpec) -> None:
        self.circuit = circuit
        self.meter = CostMeter()

    def run(self, angles: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The readout for a batch.

        Parameters
        ----------
        angles : torch.Tensor
            float64 (batch, n_qubits) input angles in radians.
        weights : torch.Tensor
            float64, the circuit's weights (shape ``circuit.weight_shape``).

        Returns
        -------
        torch.Tensor
            float64 (batch, n_classes) of ``<Z>`` per class for ``expval``, or
            (batch, 2**wires) basis-state probabilities for ``probs``.
        """
        started = time.perf_counter()
        out = self._execute(angles, weights)
        self.meter.executions += int(angles.shape[0])
        self.meter.wall_seconds += time.perf_counter() - started
        return out

    def run_many(self, angles: torch.Tensor, weights: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The readout of one batch under several weight sets (SPSA's two perturbations).

        Equal to ``[self.run(angles, w) for w in weights]``; a shot-based executor
        sends all of them in one job (:class:`quantum.sampler.SamplerExecutor`).
        """
        started = time.perf_counter()
        out = self._execute_many(angles, weights)
        self.meter.executions += int(angles.shape[0]) * len(weights)
        self.meter.wall_seconds += time.perf_counter() - started
        return out

    @property
    def backend_name(self) -> str:
        """What ran the circuits: the device, or the backend's own name."""
        return type(self).__name__

    @property
    def seconds_per_shot(self) -> float:
        """Estimated QPU seconds of one shot (0: no QPU, nothing billed)."""
        return 0.0

    @property
    def execution_mode(self) -> str:
        """How jobs are grouped (``job``, ``batch``, ``session``); ``local`` without jobs."""
        return "local"

    @contextmanager
    def scope(self) -> Iterator[None]:
        """One message's work: a Runtime Batch or Session on IBM backends, nothing here."""
        yield

    def set_shots(self, shots: int) -> None:  # noqa: B027 - only shot-based executors sample
        """Shots per row of the coming jobs (0: the device's own setting)."""

    def reseed(self, *parts: int) -> None:  # noqa: B027 - only shot-based executors sample
        """Derive the coming jobs' sampling seeds from ``parts`` (e.g. round, partition)."""

    def reset_meter(self) -> CostMeter:
        """Start a new meter (e.g. for one message's work) and return it."""
        self.meter = CostMeter()
        return self.meter

    def _execute(self, angles: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _execute_many(
        self, angles: torch.Tensor, weights: Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        return [self._execute(angles, w) for w in weights]


class PennyLaneExecutor(Executor):
    """An analytic PennyLane device (``default.qubit`` backprop, ``lightning.qubit`` adjoint)."""

    def __init__(self, circuit: CircuitSpec, device: Any, diff_method: str) -> None:
        super().__init__(circuit)
        self.device_name = str(device.name)
        self.qnode = build_qnode(circuit, device, diff_method)

    @property
    def backend_name(self) -> str:
        return self.device_name

    def _execute(self, angles: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out = self.qnode(angles, weights)
        stacked = out if isinstance(out, torch.Tensor) else torch.stack(list(out), dim=-1)
        return stacked.to(torch.float64)


class ClassicalExecutor(Executor):
    """A classical network in the circuit's place, with exactly its parameters (a baseline).

    For the default VQC (``strong`` layers, weights of shape ``(L, n, 3)``) it
    computes, from ``h = cos(angles)`` (what ``<Z>`` sees of an ``RY(angle)``
    embedding), ``L`` layers ``h_q <- tanh(a_q h_q + b_q h_(q-r) + c_q)`` with
    ``(a, b, c) = weights[l, q]`` and the CNOT ring's range ``r = l mod (n-1) + 1``,
    and reads ``h`` on the readout wires in place of ``<Z>`` (values in [-1, 1]).
    The student around it (projection, angle map, readout scale and bias,
    distillation, federation) is unchanged, so a run with ``device='classical'``
    compares the quantum circuit with a classical function of the same size on
    the same features.
    """

    def __init__(self, circuit: CircuitSpec) -> None:
        from config.errors import ConfigError

        if circuit.model != "vqc" or circuit.ansatz != "strong" or circuit.readout != "expval":
            raise ConfigError(
                "device='classical': the classical baseline mirrors circuit='vqc' "
                "ansatz='strong' readout='expval'; use those settings"
            )
        super().__init__(circuit)

    @property
    def backend_name(self) -> str:
        return "classical"

    def _execute(self, angles: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        h = torch.cos(angles)
        n = self.circuit.n_qubits
        for layer, w in enumerate(weights.reshape(self.circuit.weight_shape)):
            shift = layer % (n - 1) + 1 if n > 1 else 0
            h = torch.tanh(w[:, 0] * h + w[:, 1] * torch.roll(h, shift, dims=-1) + w[:, 2])
        return h[..., list(self.circuit.readout_wires)]
