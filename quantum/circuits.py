"""Variational quantum circuits for the student, and the one device factory.

The VQC: ``AngleEmbedding`` (RY rotations, one feature per qubit, angles in
radians) followed by ``StronglyEntanglingLayers``. Its readout is either

- ``expval``: ``<Z_c>`` on wire ``c`` for each class ``c`` (distinct
  observables per class, values in [-1, 1]; the student turns them into
  logits with a trainable scale and bias), or
- ``probs``: the computational-basis distribution of the first
  ``ceil(log2(classes))`` wires (the student keeps the first ``classes``
  entries and renormalises).

Example
-------
>>> qnode, shapes = build_vqc(n_qubits=4, n_layers=3, n_classes=3)
>>> shapes
{'weights': (3, 4, 3)}
"""

from __future__ import annotations

import math
from typing import Any

import pennylane as qml

from config.errors import ConfigError

READOUTS = ("expval", "probs")
DEVICES = {"default.qubit": "backprop", "lightning.qubit": "adjoint"}
MAX_QUBITS = 16


def make_device(name: str, wires: int) -> Any:
    """The PennyLane device called ``name`` with ``wires`` qubits (analytic)."""
    if name not in DEVICES:
        raise ConfigError(f"device={name!r}: must be one of {', '.join(DEVICES)}")
    return qml.device(name, wires=wires)


def readout_wires(n_classes: int, readout: str) -> int:
    """Qubits the readout needs for ``n_classes`` classes."""
    return n_classes if readout == "expval" else max(1, math.ceil(math.log2(n_classes)))


def check_circuit(n_qubits: int, n_layers: int, n_classes: int, readout: str, device: str) -> None:
    """Raise :class:`ConfigError` (one line, naming the key) if the circuit cannot be built."""
    if not 1 <= n_qubits <= MAX_QUBITS:
        raise ConfigError(f"n-qubits={n_qubits}: must be in [1, {MAX_QUBITS}]")
    if n_layers < 1:
        raise ConfigError(f"n-layers={n_layers}: must be >= 1")
    if n_classes < 2:
        raise ConfigError(f"the task has {n_classes} class(es); a classifier needs >= 2")
    if readout not in READOUTS:
        raise ConfigError(f"readout={readout!r}: must be one of {', '.join(READOUTS)}")
    if device not in DEVICES:
        raise ConfigError(f"device={device!r}: must be one of {', '.join(DEVICES)}")
    needed = readout_wires(n_classes, readout)
    if needed > n_qubits:
        raise ConfigError(
            f"n-qubits={n_qubits}: readout={readout!r} needs {needed} qubits for "
            f"{n_classes} classes; raise n-qubits"
        )
    if readout == "probs" and DEVICES[device] == "adjoint":
        raise ConfigError(
            f"readout='probs': {device} differentiates with the adjoint method, which "
            "supports only expectation values; use readout='expval'"
        )


def build_vqc(
    n_qubits: int,
    n_layers: int,
    n_classes: int,
    readout: str = "expval",
    device_name: str = "default.qubit",
) -> tuple[qml.QNode, dict[str, tuple[int, ...]]]:
    """Build the student circuit.

    Parameters
    ----------
    n_qubits : int
        Qubits; also the number of input angles.
    n_layers : int
        Strongly entangling layers.
    n_classes : int
        Classes of the task.
    readout : {"expval", "probs"}
        See the module docstring.
    device_name : {"default.qubit", "lightning.qubit"}
        ``default.qubit`` differentiates by backpropagation (fastest for
        batches on CPU), ``lightning.qubit`` by the adjoint method.

    Returns
    -------
    qnode : qml.QNode
        ``qnode(inputs, weights)``: ``inputs`` has shape (batch, n_qubits) or
        (n_qubits,), angles in radians; ``weights`` shape (n_layers, n_qubits, 3).
        Returns a list of n_classes tensors of shape (batch,) for ``expval``,
        or a tensor (batch, 2**wires) for ``probs``.
    weight_shapes : dict
        ``{"weights": (n_layers, n_qubits, 3)}``; that is 3 * n_layers * n_qubits parameters.
    """
    check_circuit(n_qubits, n_layers, n_classes, readout, device_name)
    device = make_device(device_name, n_qubits)
    wires = list(range(n_qubits))
    out_wires = list(range(readout_wires(n_classes, readout)))

    @qml.qnode(device, interface="torch", diff_method=DEVICES[device_name])
    def circuit(inputs: Any, weights: Any) -> Any:
        qml.AngleEmbedding(inputs, wires=wires, rotation="Y")
        qml.StronglyEntanglingLayers(weights, wires=wires)
        if readout == "expval":
            return [qml.expval(qml.PauliZ(w)) for w in out_wires]
        return qml.probs(wires=out_wires)

    return circuit, {"weights": (n_layers, n_qubits, 3)}
