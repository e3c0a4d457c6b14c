"""The quantum student: shared projection -> angles -> VQC -> class logits."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from config.errors import ConfigError
from quantum.circuits import CircuitSpec, build_qnode
from quantum.devices import make_pennylane_device, make_qiskit_backend, parse_device
from quantum.metering import CostMeter
from quantum.sampler import SamplerExecutor

if TYPE_CHECKING:
    from config.run_config import RunConfig

logger = logging.getLogger(__name__)

_EPS = 1e-9
#: Initial ``scale`` of the expval readout: logits in [-4, 4], so softmax is not flat.
INITIAL_SCALE = 4.0
#: Standard deviation (radians) of the initial circuit weights.
INITIAL_WEIGHT_STD = 0.1


def to_angles(z: torch.Tensor) -> torch.Tensor:
    """Map projected features to embedding angles: ``pi/2 + arctan(z)``.

    Parameters
    ----------
    z : torch.Tensor
        Projected features, shape (batch, n_qubits), any real values
        (about zero mean, unit variance after the whitened PCA).

    Returns
    -------
    torch.Tensor
        Angles in radians, same shape and dtype, in the open interval (0, pi).
        Monotonic in ``z`` and centred at ``pi/2``, where ``cos`` (what a Z
        measurement sees of an RY rotation) is steepest.
    """
    return math.pi / 2 + torch.atan(z)


class QuantumStudent(nn.Module):
    """A VQC classifier reading an embedding through a projection shared by all clients.

    ``features`` (batch, in_features) -> ``z = projection(features)`` (batch,
    n_qubits) -> angles :func:`to_angles` in (0, pi) -> circuit -> readout.
    The angle map is monotonic and centred where ``cos`` is steepest;
    ``pi * tanh(z)`` folds ``z`` and ``-z`` onto the same ``<Z>`` and measured
    3-5 accuracy points worse. Readouts:

    - ``expval``: logits ``scale * <Z_c> + bias`` (trainable ``scale`` and
      ``bias`` per class);
    - ``probs``: logits ``log(p_c / sum_k p_k + 1e-9)`` of the first
      ``n_classes`` basis-state probabilities.

    ``softmax(logits)`` is the student's distribution over the classes. All
    parameters are float32; the circuit itself runs in float64/complex128.

    Parameters
    ----------
    in_features : int
        Embedding size (384 for MiniLM).
    n_classes : int
        Classes of the task, >= 2.
    n_qubits : int
        Circuit width in [1, 16]; also the projection's output size.
    n_layers : int
        Entangling layers, >= 1.
    readout : {"expval", "probs"}
    device_name : str
        A name :func:`quantum.devices.parse_device` accepts. PennyLane devices
        give gradients (backprop or adjoint); Qiskit ones (``qiskit.aer``,
        ``fake:...``, ``ibm:...``) run batched shot-based jobs without
        gradients, for the gradient-free optimizers.
    trainable_projection : bool
        False for ``projection = pca`` (fixed), True for ``linear``.
    seed : int
        Seeds every initial parameter (same seed -> same student everywhere),
        the transpiler and Aer's sampling.
    model, embedding, ansatz : str
        See :class:`quantum.circuits.CircuitSpec`.
    shots : int
        Shots per circuit execution on Qiskit devices.
    noise_model : str
        ``qiskit.aer`` only: a fake backend whose noise model to apply.
    batched : bool
        Qiskit devices: one job per batch (True) or one job per row (False).

    Attributes
    ----------
    meter : CostMeter
        Executions, jobs, shots, QPU and queue seconds of every forward pass.

    Raises
    ------
    ConfigError
        If the circuit or device settings are invalid (one line).
    """

    def __init__(
        self,
        in_features: int,
        n_classes: int,
        *,
        n_qubits: int = 4,
        n_layers: int = 3,
        readout: str = "expval",
        device_name: str = "default.qubit",
        trainable_projection: bool = False,
        seed: int = 0,
        model: str = "vqc",
        embedding: str = "angle",
        ansatz: str = "strong",
        shots: int = 1024,
        noise_model: str = "",
        batched: bool = True,
    ) -> None:
        super().__init__()
        self.spec = CircuitSpec(n_qubits, n_layers, n_classes, readout, model, embedding, ansatz)
        self.device = parse_device(device_name)
        self.meter = CostMeter()
        self.circuit: Any
        if self.device.family == "pennylane":
            if readout == "probs" and self.device.diff_method == "adjoint":
                raise ConfigError(
                    f"readout='probs': {device_name} differentiates with the adjoint method, "
                    "which supports only expectation values; use readout='expval' or "
                    "device='default.qubit'"
                )
            device = make_pennylane_device(self.device, n_qubits)
            self.circuit = build_qnode(self.spec, device, str(self.device.diff_method))
        else:
            backend = make_qiskit_backend(self.device, n_qubits, noise_model=noise_model, seed=seed)
            self.circuit = SamplerExecutor(
                self.spec, backend, shots=shots, batched=batched, seed=seed, meter=self.meter
            )
        self.n_classes = n_classes
        self.readout = readout
        generator = torch.Generator().manual_seed(seed)
        self.projection = nn.Linear(in_features, n_qubits)
        _init_projection(self.projection, generator)
        self.projection.requires_grad_(trainable_projection)
        # Small angles: the circuit starts near the embedding's own readout.
        noise = torch.randn(self.spec.weight_shape, generator=generator, dtype=torch.float64)
        self.weights = nn.Parameter((noise * INITIAL_WEIGHT_STD).to(torch.float32))
        if readout == "expval":
            self.scale = nn.Parameter(torch.full((n_classes,), INITIAL_SCALE))
            self.bias = nn.Parameter(torch.zeros(n_classes))
        logger.debug(
            "student: %d -> %d qubits, %d trainable parameters",
            in_features,
            n_qubits,
            self.num_trainable(),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits.

        Parameters
        ----------
        features : torch.Tensor
            Embeddings, shape (batch, in_features); cast to float32.

        Returns
        -------
        torch.Tensor
            Logits, float32 of shape (batch, n_classes); ``softmax`` over the
            last axis is the student's class distribution.
        """
        z = self.projection(features.to(self.projection.weight.dtype))
        angles = to_angles(z).to(torch.float64)
        out = self.run_circuit(angles, self.weights.to(torch.float64))
        if self.readout == "expval":
            return self._expval_logits(out)
        return self._probs_logits(out)

    def run_circuit(self, angles: torch.Tensor, weights: torch.Tensor) -> Any:
        """The circuit's readout for a batch of angles, metered in :attr:`meter`.

        PennyLane devices return what the QNode returns (differentiable); Qiskit
        devices a float64 tensor without gradient: (batch, n_classes) of
        ``<Z>`` for ``expval``, (batch, 2**wires) probabilities for ``probs``.
        """
        if isinstance(self.circuit, SamplerExecutor):
            values = self.circuit(angles.detach().numpy(), weights.detach().numpy())
            return torch.from_numpy(values)
        started = time.perf_counter()
        out = self.circuit(angles, weights)
        self.meter.executions += int(angles.shape[0]) if angles.dim() > 1 else 1
        self.meter.wall_seconds += time.perf_counter() - started
        return out

    def _expval_logits(self, out: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """``scale * <Z_c> + bias``: (batch, n_classes) float32 from the expval readout."""
        stacked = out if isinstance(out, torch.Tensor) else torch.stack(list(out), dim=-1)
        expvals = stacked.to(torch.float32)
        return self.scale * expvals + self.bias

    def _probs_logits(self, probs: torch.Tensor) -> torch.Tensor:
        """Log of the renormalised first n_classes probabilities of (batch, 2**wires)."""
        kept = probs[..., : self.n_classes]
        return torch.log(kept / kept.sum(dim=-1, keepdim=True) + _EPS).to(torch.float32)

    def set_projection(self, weight: np.ndarray, bias: np.ndarray) -> None:
        """Set the projection (stored as float32).

        Parameters
        ----------
        weight : np.ndarray
            Shape (n_qubits, in_features), e.g. the whitened PCA components.
        bias : np.ndarray
            Shape (n_qubits,).

        Raises
        ------
        ValueError
            If a shape is wrong (the message names ``projection.weight`` or
            ``projection.bias``).
        """
        self.set_arrays({**self.get_arrays(), "projection.weight": weight, "projection.bias": bias})

    def get_arrays(self) -> dict[str, np.ndarray]:
        """Every parameter, projection included, as float32 numpy copies.

        Returns
        -------
        dict of str to np.ndarray
            In this order: ``weights`` (shape ``spec.weight_shape``) radians, then for
            ``expval`` ``scale`` (n_classes,) and ``bias`` (n_classes,), then
            ``projection.weight`` (n_qubits, in_features) and
            ``projection.bias`` (n_qubits,).
        """
        return {
            key: value.detach().cpu().numpy().astype(np.float32, copy=True)
            for key, value in self.state_dict().items()
        }

    def set_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Load parameters: the exact inverse of :meth:`get_arrays`.

        Parameters
        ----------
        arrays : Mapping of str to np.ndarray
            The keys and shapes :meth:`get_arrays` returns (any order); values
            are cast to float32.

        Raises
        ------
        ValueError
            Naming the first missing, unexpected or wrongly shaped key.
        """
        state = self.state_dict()
        _check_keys(arrays, state)
        for key, value in arrays.items():
            if tuple(np.shape(value)) != tuple(state[key].shape):
                raise ValueError(
                    f"student array {key!r} has shape {np.shape(value)}, "
                    f"expected {tuple(state[key].shape)}"
                )
        self.load_state_dict(
            {k: torch.as_tensor(np.asarray(v), dtype=state[k].dtype) for k, v in arrays.items()}
        )

    def num_trainable(self) -> int:
        """Number of trainable scalars (the projection counts only when trainable)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def _init_projection(projection: nn.Linear, generator: torch.Generator) -> None:
    """Seeded init: weight ~ U(-1/sqrt(in), 1/sqrt(in)), bias 0 (PCA usually replaces it)."""
    bound = 1.0 / math.sqrt(projection.in_features)
    with torch.no_grad():
        projection.weight.uniform_(-bound, bound, generator=generator)
        projection.bias.zero_()


def _check_keys(arrays: Mapping[str, np.ndarray], state: Mapping[str, torch.Tensor]) -> None:
    """Raise ValueError naming the first missing or unexpected student array."""
    missing = [key for key in state if key not in arrays]
    if missing:
        raise ValueError(f"student array {missing[0]!r} is missing; expected keys {list(state)}")
    unexpected = [key for key in arrays if key not in state]
    if unexpected:
        raise ValueError(
            f"student array {unexpected[0]!r} is unexpected; expected keys {list(state)}"
        )


def build_student(
    config: RunConfig, in_features: int, n_classes: int, *, device: str | None = None
) -> QuantumStudent:
    """The student the run configuration describes (same initial weights everywhere).

    Parameters
    ----------
    config : RunConfig
        Reads the circuit keys (``n-qubits``, ``n-layers``, ``readout``,
        ``circuit``, ``embedding``, ``ansatz``), ``device``, ``shots``,
        ``noise-model``, ``qiskit-execution``, ``projection`` (``linear`` ->
        trainable) and ``seed``.
    in_features : int
        Embedding size.
    n_classes : int
        Classes of the task.
    device : str, optional
        Overrides ``device`` (a node's own device from its node config).
    """
    student = config.student
    return QuantumStudent(
        in_features,
        n_classes,
        n_qubits=student.n_qubits,
        n_layers=student.n_layers,
        readout=student.readout,
        device_name=device or student.device,
        trainable_projection=student.projection == "linear",
        seed=config.federation.seed,
        model=student.circuit,
        embedding=student.embedding,
        ansatz=student.ansatz,
        shots=student.shots,
        noise_model=student.noise_model,
        batched=student.qiskit_execution == "batched",
    )
