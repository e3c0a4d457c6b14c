"""The quantum student: shared projection -> angles -> VQC -> class logits."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from config.run_config import StudentConfig
from quantum.circuits import CircuitSpec
from quantum.devices import DeviceSpec, make_executor, parse_device
from quantum.executor import Executor
from quantum.metering import CostMeter

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
    executor : Executor
        Runs the circuit (``executor.circuit``: qubits, layers, classes,
        readout) on its device and meters the cost
        (:func:`quantum.devices.make_executor`). PennyLane devices give
        gradients (backprop or adjoint); Qiskit ones run batched shot-based
        jobs without gradients, for the gradient-free optimizers.
    trainable_projection : bool
        False for ``projection = pca`` (fixed), True for ``linear``.
    seed : int
        Seeds every initial parameter (same seed -> same student everywhere).

    Attributes
    ----------
    meter : CostMeter
        The executor's running totals: executions, jobs, shots, QPU and queue
        seconds of every forward pass.

    Example
    -------
    >>> from quantum.circuits import CircuitSpec
    >>> from quantum.devices import make_executor, parse_device
    >>> executor = make_executor(parse_device("default.qubit"), CircuitSpec(4, 1, 3))
    >>> student = QuantumStudent(6, executor, seed=0)
    >>> student(torch.zeros(2, 6)).shape
    torch.Size([2, 3])
    """

    def __init__(
        self,
        in_features: int,
        executor: Executor,
        *,
        trainable_projection: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.executor = executor
        self.spec = executor.circuit
        self.n_classes = self.spec.n_classes
        self.readout = self.spec.readout
        generator = torch.Generator().manual_seed(seed)
        self.projection = nn.Linear(in_features, self.spec.n_qubits)
        _init_projection(self.projection, generator)
        self.projection.requires_grad_(trainable_projection)
        # Small angles: the circuit starts near the embedding's own readout.
        noise = torch.randn(self.spec.weight_shape, generator=generator, dtype=torch.float64)
        self.weights = nn.Parameter((noise * INITIAL_WEIGHT_STD).to(torch.float32))
        if self.readout == "expval":
            self.scale = nn.Parameter(torch.full((self.n_classes,), INITIAL_SCALE))
            self.bias = nn.Parameter(torch.zeros(self.n_classes))
        logger.debug(
            "student: %d -> %d qubits, %d trainable parameters",
            in_features,
            self.spec.n_qubits,
            self.num_trainable(),
        )

    @property
    def meter(self) -> CostMeter:
        """What the executor has metered since its last reset."""
        return self.executor.meter

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
        return self.logits(self.executor.run(self.angles(features), self.weights.to(torch.float64)))

    def angles(self, features: torch.Tensor) -> torch.Tensor:
        """The circuit's input angles, float64 (batch, n_qubits), of embeddings (batch, in)."""
        z = self.projection(features.to(self.projection.weight.dtype))
        return to_angles(z).to(torch.float64)

    def logits(self, readout: torch.Tensor) -> torch.Tensor:
        """Class logits, float32 (batch, n_classes), of the circuit's readout (the executor's)."""
        if self.readout == "expval":
            return self.scale * readout.to(torch.float32) + self.bias
        return self._probs_logits(readout)

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


def circuit_spec(student: StudentConfig, n_classes: int) -> CircuitSpec:
    """The circuit the run configuration describes, for a task of ``n_classes`` classes."""
    return CircuitSpec(
        student.n_qubits,
        student.n_layers,
        n_classes,
        student.readout,
        student.circuit,
        student.embedding,
        student.ansatz,
    )


def gradient_free_parameters(circuit: CircuitSpec) -> int:
    """What COBYLA and SPSA tune: the circuit's weights and the expval readout's scale and bias."""
    return circuit.n_weights + (2 * circuit.n_classes if circuit.readout == "expval" else 0)


def device_spec(student: StudentConfig, name: str = "") -> DeviceSpec:
    """The run's device (or a node's own ``name``) with the run's shot and job settings."""
    return parse_device(
        name or student.device,
        shots=student.shots,
        noise_model=student.noise_model,
        batched=student.qiskit_execution == "batched",
        mode=student.qiskit_execution_mode,
    )


def build_student(
    student: StudentConfig, in_features: int, executor: Executor, seed: int
) -> QuantumStudent:
    """The student the run configuration describes (same initial weights everywhere).

    Parameters
    ----------
    student : StudentConfig
        Reads ``projection`` (``linear`` -> trainable).
    in_features : int
        Embedding size.
    executor : Executor
        Built once per node from :func:`circuit_spec` and :func:`device_spec`.
    seed : int
        The run's seed: every client starts from the same student.
    """
    return QuantumStudent(
        in_features,
        executor,
        trainable_projection=student.projection == "linear",
        seed=seed,
    )


def make_student(
    in_features: int,
    n_classes: int,
    *,
    device: str = "default.qubit",
    shots: int = 1024,
    noise_model: str = "",
    batched: bool = True,
    seed: int = 0,
    trainable_projection: bool = False,
    **circuit: Any,
) -> QuantumStudent:
    """A stand-alone student from keywords (benchmarks, notebooks, tests).

    ``circuit`` takes :class:`~quantum.circuits.CircuitSpec`'s keywords
    (``n_qubits=4``, ``n_layers=3``, ``readout``, ``model``, ``embedding``,
    ``ansatz``); ``device``, ``shots``, ``noise_model`` and ``batched`` go to
    :func:`~quantum.devices.parse_device`. The apps build theirs with
    :func:`build_student` from the run configuration instead.

    >>> make_student(6, 2, n_qubits=2, n_layers=1)(torch.zeros(1, 6)).shape
    torch.Size([1, 2])
    """
    spec = CircuitSpec(
        n_qubits=circuit.pop("n_qubits", 4),
        n_layers=circuit.pop("n_layers", 3),
        n_classes=n_classes,
        **circuit,
    )
    executor = make_executor(
        parse_device(device, shots=shots, noise_model=noise_model, batched=batched),
        spec,
        seed=seed,
    )
    return QuantumStudent(
        in_features, executor, trainable_projection=trainable_projection, seed=seed
    )
