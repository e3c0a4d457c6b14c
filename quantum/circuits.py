"""Variational quantum circuits for the student, and the one device factory.

The VQC: ``AngleEmbedding`` (RY rotations, one input angle per qubit, in
radians) followed by ``StronglyEntanglingLayers``. Its readout is either

- ``expval``: ``<Z_c>`` on wire ``c`` for each class ``c`` (a distinct wire per
  class, values in [-1, 1]; the student turns them into logits with a
  trainable scale and bias), or
- ``probs``: the computational-basis distribution of the first
  ``ceil(log2(n_classes))`` wires (the student keeps the first ``n_classes``
  entries and renormalises).

Whatever the dtype of the inputs, PennyLane's statevector simulators evolve a
complex128 state, so the readouts come back as float64.

Example
-------
>>> qnode, shapes = build_vqc(n_qubits=4, n_layers=3, n_classes=3)
>>> shapes
{'weights': (3, 4, 3)}
"""

from __future__ import annotations

import logging
import math
from typing import Any

import pennylane as qml

from config.errors import ConfigError

logger = logging.getLogger(__name__)

READOUTS = ("expval", "probs")
#: Supported devices and the differentiation method each one uses.
DEVICES = {"default.qubit": "backprop", "lightning.qubit": "adjoint"}
MAX_QUBITS = 16


def make_device(name: str, wires: int) -> Any:
    """Create a quantum device; the one place where devices are made.

    New backends (hardware, shot-based simulators) are added here and in
    :data:`DEVICES`.

    Parameters
    ----------
    name : str
        Run-config ``device``: one of the keys of :data:`DEVICES`.
    wires : int
        Number of qubits, >= 1.

    Returns
    -------
    pennylane.devices.Device
        An analytic (shot-free) device with wires ``0 .. wires-1``.

    Raises
    ------
    ConfigError
        If ``name`` is not a supported device.
    """
    if name not in DEVICES:
        raise ConfigError(f"device={name!r}: must be one of {', '.join(DEVICES)}")
    return qml.device(name, wires=wires)


def readout_wires(n_classes: int, readout: str) -> int:
    """Number of qubits the readout measures.

    Parameters
    ----------
    n_classes : int
        Classes of the task, >= 2.
    readout : {"expval", "probs"}
        ``expval`` needs one wire per class; ``probs`` needs
        ``ceil(log2(n_classes))`` wires (2**wires basis states >= classes).

    Returns
    -------
    int
        Wires measured, >= 1.
    """
    if readout == "expval":
        return n_classes
    return max(1, math.ceil(math.log2(n_classes)))


def check_circuit(n_qubits: int, n_layers: int, n_classes: int, readout: str, device: str) -> None:
    """Check that the circuit can be built, before anything is loaded or trained.

    Parameters
    ----------
    n_qubits : int
        Run-config ``n-qubits``, must be in [1, 16].
    n_layers : int
        Run-config ``n-layers``, must be >= 1.
    n_classes : int
        Classes of the run-config ``task``, must be >= 2.
    readout : str
        Run-config ``readout``, one of :data:`READOUTS`.
    device : str
        Run-config ``device``, one of the keys of :data:`DEVICES`.

    Raises
    ------
    ConfigError
        One line naming the offending run-config key and the fix.
    """
    if not 1 <= n_qubits <= MAX_QUBITS:
        raise ConfigError(f"n-qubits={n_qubits}: must be in [1, {MAX_QUBITS}]")
    if n_layers < 1:
        raise ConfigError(f"n-layers={n_layers}: must be >= 1")
    if n_classes < 2:
        raise ConfigError(
            f"task: has {n_classes} class(es); the student needs >= 2, pick a task with more labels"
        )
    if readout not in READOUTS:
        raise ConfigError(f"readout={readout!r}: must be one of {', '.join(READOUTS)}")
    if device not in DEVICES:
        raise ConfigError(f"device={device!r}: must be one of {', '.join(DEVICES)}")
    needed = readout_wires(n_classes, readout)
    if needed > n_qubits:
        raise ConfigError(
            f"n-qubits={n_qubits}: readout={readout!r} needs {needed} qubits for "
            f"{n_classes} classes; raise n-qubits to >= {needed}"
        )
    if readout == "probs" and DEVICES[device] == "adjoint":
        raise ConfigError(
            f"readout='probs': {device} differentiates with the adjoint method, which "
            "supports only expectation values; use readout='expval' or device='default.qubit'"
        )


def build_vqc(
    n_qubits: int,
    n_layers: int,
    n_classes: int,
    readout: str = "expval",
    device_name: str = "default.qubit",
) -> tuple[qml.QNode, dict[str, tuple[int, ...]]]:
    """Build the student circuit (settings are checked first, see :func:`check_circuit`).

    Parameters
    ----------
    n_qubits : int
        Qubits, in [1, 16]; also the number of input angles.
    n_layers : int
        Strongly entangling layers, >= 1.
    n_classes : int
        Classes of the task, >= 2.
    readout : {"expval", "probs"}
        See the module docstring.
    device_name : {"default.qubit", "lightning.qubit"}
        ``default.qubit`` differentiates by backpropagation (fastest for
        batches on CPU), ``lightning.qubit`` by the adjoint method
        (``expval`` only).

    Returns
    -------
    qnode : qml.QNode
        ``qnode(inputs, weights)`` with the torch interface: ``inputs`` has
        shape (batch, n_qubits) (broadcast) or (n_qubits,), angles in radians;
        ``weights`` has shape (n_layers, n_qubits, 3), radians. It returns a
        sequence of ``n_classes`` float64 tensors of shape (batch,) with values
        in [-1, 1] for ``expval``, or a float64 tensor (batch, 2**wires) of
        probabilities for ``probs``.
    weight_shapes : dict
        ``{"weights": (n_layers, n_qubits, 3)}``: 3 * n_layers * n_qubits angles.

    Raises
    ------
    ConfigError
        If the settings cannot make a circuit.
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

    logger.debug(
        "built VQC: %d qubits, %d layers, %s readout on wires %s, %s (%s)",
        n_qubits,
        n_layers,
        readout,
        out_wires,
        device_name,
        DEVICES[device_name],
    )
    return circuit, {"weights": (n_layers, n_qubits, 3)}
