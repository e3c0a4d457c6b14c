"""The quantum student: shared projection -> angles -> VQC -> class logits."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from quantum.circuits import build_vqc

if TYPE_CHECKING:
    from config.run_config import RunConfig

_EPS = 1e-9


class QuantumStudent(nn.Module):
    """A VQC classifier reading an embedding through a projection shared by all clients.

    ``features`` (batch, in_features) -> ``z = projection(features)`` (batch,
    n_qubits) -> angles ``pi/2 + arctan(z)`` in (0, pi) -> circuit -> readout.
    The angle map is monotonic and centred where ``cos`` (what an RY
    embedding shows to a Z measurement) is steepest; ``pi * tanh(z)`` wraps
    round and measured 3-5 points worse. Readouts:

    - ``expval``: logits ``scale * <Z_c> + bias`` (trainable ``scale`` and
      ``bias`` per class);
    - ``probs``: logits ``log p_c`` of the renormalised first ``classes``
      basis-state probabilities.

    ``softmax(logits)`` is the student's distribution over the classes.

    Parameters
    ----------
    in_features : int
        Embedding size (384 for MiniLM).
    n_classes : int
        Classes of the task.
    n_qubits, n_layers : int
        Circuit width and entangling depth.
    readout : {"expval", "probs"}
    device_name : {"default.qubit", "lightning.qubit"}
    trainable_projection : bool
        False for ``projection = pca`` (fixed), True for ``linear``.
    seed : int
        Seeds the initial parameters.
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
    ) -> None:
        super().__init__()
        self.circuit, shapes = build_vqc(n_qubits, n_layers, n_classes, readout, device_name)
        self.n_classes = n_classes
        self.readout = readout
        generator = torch.Generator().manual_seed(seed)
        self.projection = nn.Linear(in_features, n_qubits)
        with torch.no_grad():
            bound = 1.0 / math.sqrt(in_features)
            self.projection.weight.uniform_(-bound, bound, generator=generator)
            self.projection.bias.zero_()
        self.projection.requires_grad_(trainable_projection)
        # Small angles: the circuit starts near the embedding's own readout.
        self.weights = nn.Parameter(
            torch.randn(shapes["weights"], generator=generator, dtype=torch.float64) * 0.1
        )
        if readout == "expval":
            self.scale = nn.Parameter(torch.full((n_classes,), 4.0, dtype=torch.float64))
            self.bias = nn.Parameter(torch.zeros(n_classes, dtype=torch.float64))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits, float32 of shape (batch, n_classes), for float32 features (batch, in)."""
        angles = math.pi / 2 + torch.atan(self.projection(features))
        out = self.circuit(angles.to(torch.float64), self.weights)
        if self.readout == "expval":
            expvals = torch.stack(list(out), dim=-1)
            logits = self.scale * expvals + self.bias
        else:
            probs = out[..., : self.n_classes]
            logits = torch.log(probs / probs.sum(dim=-1, keepdim=True) + _EPS)
        return logits.to(torch.float32)

    def set_projection(self, weight: np.ndarray, bias: np.ndarray) -> None:
        """Set the projection: ``weight`` (n_qubits, in_features), ``bias`` (n_qubits,)."""
        self.set_arrays({**self.get_arrays(), "projection.weight": weight, "projection.bias": bias})

    def get_arrays(self) -> dict[str, np.ndarray]:
        """Every parameter (projection included), as numpy copies in a stable order."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self.state_dict().items()}

    def set_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Inverse of :meth:`get_arrays`; a missing key or wrong shape raises ValueError."""
        state = self.state_dict()
        if set(arrays) != set(state):
            raise ValueError(f"student arrays {sorted(arrays)} do not match {sorted(state)}")
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
        """Number of trainable scalars."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def build_student(config: RunConfig, in_features: int, n_classes: int) -> QuantumStudent:
    """The student the run configuration describes (same initial weights everywhere)."""
    student = config.student
    return QuantumStudent(
        in_features,
        n_classes,
        n_qubits=student.n_qubits,
        n_layers=student.n_layers,
        readout=student.readout,
        device_name=student.device,
        trainable_projection=student.projection == "linear",
        seed=config.federation.seed,
    )
