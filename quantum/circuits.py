"""Student circuits: one gate list, run by PennyLane or built as a Qiskit circuit.

A :class:`CircuitSpec` names the circuit; its :attr:`CircuitSpec.gates` is the
single definition that both executors read, so the PennyLane QNode used for
training and the Qiskit circuit sent to Aer, fake IBM backends or hardware
are the same circuit by construction (checked against each other in the tests).

Inputs are ``n_qubits`` angles in radians, in (0, pi) as the student maps them
(:func:`quantum.student.to_angles`). Parts:

- embedding ``angle``: ``RY(x_i)`` on wire ``i``; ``iqp``: ``H``, ``RZ(2 x_i)``
  on every wire, then ``ZZ(2 (pi - x_i)(pi - x_{i+1}))`` on neighbouring wires
  (the ZZ feature map of Havlicek et al., one repetition).
- model ``vqc``: the embedding, then ``n_layers`` layers of the ansatz:
  ``strong`` (a general rotation on each wire, then a CNOT ring of range
  ``l mod (n-1) + 1``, exactly PennyLane's ``StronglyEntanglingLayers``;
  ``3 n L`` weights) or ``real-amplitudes`` (``RY`` on each wire and a linear
  CNOT chain per layer, then a final ``RY`` layer, as Qiskit's
  ``RealAmplitudes``; ``n (L + 1)`` weights).
- model ``qcnn``: the embedding, then levels of convolution and pooling (Cong,
  Choi and Lukin, 2019) without mid-circuit measurement. A convolution is
  ``n_layers`` two-qubit blocks ``RY RY CNOT RY RY CNOT`` on even then odd
  neighbouring pairs of the active wires, weights shared within a layer (4 per
  layer); pooling folds each odd active wire into its even neighbour with
  ``CRZ`` and ``CRX`` controlled by the discarded wire on both of its values
  (2 weights per level), halving the active wires. Levels repeat while the
  kept wires still cover the readout; ``4 L`` weights per level plus 2 per
  pooling.

Readouts, on ``readout_wires`` (the first wires of a VQC, the last active
wires of a QCNN):

- ``expval``: ``<Z>`` on one wire per class, values in [-1, 1]; the student
  turns them into logits with a trainable scale and bias, then softmax.
- ``probs``: the basis-state distribution of ``ceil(log2(n_classes))`` wires;
  the student keeps the first ``n_classes`` entries and renormalises.

Example
-------
>>> spec = CircuitSpec(n_qubits=4, n_layers=3, n_classes=3)
>>> spec.weight_shape, spec.readout_wires
((3, 4, 3), (0, 1, 2))
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pennylane as qml

from config.errors import ConfigError

logger = logging.getLogger(__name__)

MODELS = ("vqc", "qcnn")
EMBEDDINGS = ("angle", "iqp")
ANSATZES = ("strong", "real-amplitudes")
READOUTS = ("expval", "probs")
MAX_QUBITS = 16


@dataclass(frozen=True)
class Angle:
    """A gate angle: ``w[index]``, ``scale * x[index]`` or ``scale (pi - x[index])(pi - x[other])``.

    The same expression evaluates on torch columns (training) and on Qiskit
    ``ParameterVector`` elements (a parametrised circuit transpiled once).
    """

    source: str  # "w", "x" or "xx"
    index: int
    other: int = -1
    scale: float = 1.0

    def value(self, x: Sequence[Any], w: Sequence[Any]) -> Any:
        """The angle, from input columns ``x`` and flat weights ``w``."""
        if self.source == "w":
            return w[self.index]
        if self.source == "x":
            return self.scale * x[self.index]
        return self.scale * (math.pi - x[self.index]) * (math.pi - x[self.other])


@dataclass(frozen=True)
class Gate:
    """One gate: a name from :data:`GATES`, its wires (control first) and angles."""

    name: str
    wires: tuple[int, ...]
    angles: tuple[Angle, ...] = ()


#: Gate names and their PennyLane operations (ROT is RZ(a0), RY(a1), RZ(a2) in time order).
GATES: dict[str, Callable[..., Any]] = {
    "RX": qml.RX,
    "RY": qml.RY,
    "RZ": qml.RZ,
    "ROT": qml.Rot,
    "H": qml.Hadamard,
    "X": qml.PauliX,
    "CNOT": qml.CNOT,
    "CRX": qml.CRX,
    "CRZ": qml.CRZ,
    "ZZ": qml.IsingZZ,
}


class _Weights:
    """Hands out consecutive weight indices while the gate list is built."""

    def __init__(self) -> None:
        self.count = 0

    def take(self, n: int = 1) -> tuple[Angle, ...]:
        angles = tuple(Angle("w", self.count + i) for i in range(n))
        self.count += n
        return angles


def n_readout_wires(n_classes: int, readout: str) -> int:
    """Wires the readout measures: one per class (expval) or ceil(log2(classes)) (probs)."""
    if readout == "expval":
        return n_classes
    return max(1, math.ceil(math.log2(n_classes)))


@dataclass(frozen=True)
class CircuitSpec:
    """Which circuit the student runs (see the module docstring for each part).

    Parameters
    ----------
    n_qubits : int
        Width in [1, 16]; also the number of input angles.
    n_layers : int
        Ansatz layers (vqc) or convolution layers per level (qcnn), >= 1.
    n_classes : int
        Classes of the task, >= 2.
    readout, model, embedding, ansatz : str
        One of :data:`READOUTS`, :data:`MODELS`, :data:`EMBEDDINGS`, :data:`ANSATZES`.

    Raises
    ------
    ConfigError
        One line naming the run-config key and the fix, at construction.
    """

    n_qubits: int
    n_layers: int
    n_classes: int
    readout: str = "expval"
    model: str = "vqc"
    embedding: str = "angle"
    ansatz: str = "strong"

    def __post_init__(self) -> None:
        if not 1 <= self.n_qubits <= MAX_QUBITS:
            raise ConfigError(f"n-qubits={self.n_qubits}: must be in [1, {MAX_QUBITS}]")
        if self.n_layers < 1:
            raise ConfigError(f"n-layers={self.n_layers}: must be >= 1")
        if self.n_classes < 2:
            raise ConfigError(
                f"task: has {self.n_classes} class(es); the student needs >= 2, "
                "pick a task with more labels"
            )
        for key, value, choices in (
            ("readout", self.readout, READOUTS),
            ("circuit", self.model, MODELS),
            ("embedding", self.embedding, EMBEDDINGS),
            ("ansatz", self.ansatz, ANSATZES),
        ):
            if value not in choices:
                raise ConfigError(f"{key}={value!r}: must be one of {', '.join(choices)}")
        needed = n_readout_wires(self.n_classes, self.readout)
        if needed > self.n_qubits:
            raise ConfigError(
                f"n-qubits={self.n_qubits}: readout={self.readout!r} needs {needed} qubits for "
                f"{self.n_classes} classes; raise n-qubits to >= {needed}"
            )

    @functools.cached_property
    def _built(self) -> tuple[tuple[Gate, ...], tuple[int, ...], int]:
        weights = _Weights()
        gates = _embedding(self.embedding, self.n_qubits)
        if self.model == "vqc":
            gates += _vqc_layers(self.ansatz, self.n_qubits, self.n_layers, weights)
            out = tuple(range(n_readout_wires(self.n_classes, self.readout)))
        else:
            body, out = _qcnn(
                self.n_qubits, self.n_layers, n_readout_wires(self.n_classes, self.readout), weights
            )
            gates += body
        return tuple(gates), out, weights.count

    @property
    def gates(self) -> tuple[Gate, ...]:
        """The circuit, in time order."""
        return self._built[0]

    @property
    def readout_wires(self) -> tuple[int, ...]:
        """The wires the readout measures, in class (expval) or bit (probs) order."""
        return self._built[1]

    @property
    def n_weights(self) -> int:
        """Trainable circuit angles."""
        return self._built[2]

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """Shape of the student's ``weights`` array: (L, n, 3), (L + 1, n) or (n_weights,)."""
        if self.model == "vqc" and self.ansatz == "strong":
            return (self.n_layers, self.n_qubits, 3)
        if self.model == "vqc":
            return (self.n_layers + 1, self.n_qubits)
        return (self.n_weights,)


def _embedding(kind: str, n: int) -> list[Gate]:
    if kind == "angle":
        return [Gate("RY", (q,), (Angle("x", q),)) for q in range(n)]
    gates = [Gate("H", (q,)) for q in range(n)]
    gates += [Gate("RZ", (q,), (Angle("x", q, scale=2.0),)) for q in range(n)]
    gates += [Gate("ZZ", (q, q + 1), (Angle("xx", q, q + 1, 2.0),)) for q in range(n - 1)]
    return gates


def _vqc_layers(ansatz: str, n: int, layers: int, weights: _Weights) -> list[Gate]:
    gates: list[Gate] = []
    if ansatz == "strong":
        for layer in range(layers):
            gates += [Gate("ROT", (q,), weights.take(3)) for q in range(n)]
            if n > 1:
                r = layer % (n - 1) + 1
                gates += [Gate("CNOT", (q, (q + r) % n)) for q in range(n)]
        return gates
    for _ in range(layers):
        gates += [Gate("RY", (q,), weights.take()) for q in range(n)]
        gates += [Gate("CNOT", (q, q + 1)) for q in range(n - 1)]
    return gates + [Gate("RY", (q,), weights.take()) for q in range(n)]


def _qcnn(n: int, layers: int, keep: int, weights: _Weights) -> tuple[list[Gate], tuple[int, ...]]:
    gates: list[Gate] = []
    active = list(range(n))
    while len(active) > 1:
        for _ in range(layers):
            w = weights.take(4)
            pairs = list(zip(active[0::2], active[1::2], strict=False))
            pairs += list(zip(active[1::2], active[2::2], strict=False))
            for a, b in pairs:
                gates += [Gate("RY", (a,), (w[0],)), Gate("RY", (b,), (w[1],))]
                gates += [Gate("CNOT", (a, b))]
                gates += [Gate("RY", (a,), (w[2],)), Gate("RY", (b,), (w[3],))]
                gates += [Gate("CNOT", (b, a))]
        if (len(active) + 1) // 2 < keep:
            break
        z, x = weights.take(2)
        for sink, source in zip(active[0::2], active[1::2], strict=False):
            gates += [Gate("CRZ", (source, sink), (z,)), Gate("X", (source,))]
            gates += [Gate("CRX", (source, sink), (x,)), Gate("X", (source,))]
        active = active[0::2]
    return gates, tuple(active[:keep])


def apply_gates(spec: CircuitSpec, inputs: Any, weights: Any) -> None:
    """Queue the circuit's PennyLane operations (inside a QNode).

    Parameters
    ----------
    inputs : tensor
        Angles, shape (batch, n_qubits) (broadcast) or (n_qubits,), radians.
    weights : tensor
        Shape :attr:`CircuitSpec.weight_shape` (flattened here).
    """
    x = [inputs[..., q] for q in range(spec.n_qubits)]
    w = weights.reshape(-1)
    for gate in spec.gates:
        GATES[gate.name](*(a.value(x, w) for a in gate.angles), wires=gate.wires)


def build_qnode(spec: CircuitSpec, device: Any, diff_method: str) -> qml.QNode:
    """The circuit as a torch QNode ``qnode(inputs, weights)`` on a PennyLane device.

    Returns
    -------
    qml.QNode
        For ``expval`` a sequence of ``n_classes`` float64 tensors of shape
        (batch,) with values in [-1, 1]; for ``probs`` a float64 tensor
        (batch, 2**wires) summing to 1 over the last axis.
    """

    @qml.qnode(device, interface="torch", diff_method=diff_method)
    def circuit(inputs: Any, weights: Any) -> Any:
        apply_gates(spec, inputs, weights)
        if spec.readout == "expval":
            return [qml.expval(qml.PauliZ(w)) for w in spec.readout_wires]
        return qml.probs(wires=list(spec.readout_wires))

    return circuit


def qiskit_circuit(spec: CircuitSpec) -> tuple[Any, Any, Any]:
    """The same circuit as a parametrised Qiskit ``QuantumCircuit`` measuring every qubit.

    Returns
    -------
    circuit : qiskit.QuantumCircuit
        ``n_qubits`` qubits (qubit ``q`` is wire ``q``) and a ``meas`` register.
    x : qiskit.circuit.ParameterVector
        The ``n_qubits`` input angles.
    w : qiskit.circuit.ParameterVector
        The ``n_weights`` circuit weights, in the flattened order of ``weights``.
    """
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector

    x = ParameterVector("x", spec.n_qubits)
    w = ParameterVector("w", spec.n_weights)
    qc = QuantumCircuit(spec.n_qubits)
    single = {"RX": qc.rx, "RY": qc.ry, "RZ": qc.rz, "ZZ": qc.rzz, "CRX": qc.crx, "CRZ": qc.crz}
    for gate in spec.gates:
        angles = [a.value(x, w) for a in gate.angles]
        if gate.name == "ROT":
            (q,) = gate.wires
            qc.rz(angles[0], q)
            qc.ry(angles[1], q)
            qc.rz(angles[2], q)
        elif gate.name == "H":
            qc.h(*gate.wires)
        elif gate.name == "X":
            qc.x(*gate.wires)
        elif gate.name == "CNOT":
            qc.cx(*gate.wires)
        else:
            single[gate.name](*angles, *gate.wires)
    qc.measure_all()
    return qc, x, w


def readout_from_probabilities(spec: CircuitSpec, probabilities: np.ndarray) -> np.ndarray:
    """The readout from full basis-state probabilities (the shot-based path).

    Parameters
    ----------
    probabilities : np.ndarray
        Shape (batch, 2**n_qubits), PennyLane's order: wire 0 is the most
        significant bit of the basis index.

    Returns
    -------
    np.ndarray
        float64 (batch, n_classes) of ``<Z>`` for ``expval``, or (batch,
        2**wires) marginal probabilities for ``probs``: what the QNode returns.
    """
    batch = probabilities.shape[0]
    cube = probabilities.reshape((batch,) + (2,) * spec.n_qubits)
    if spec.readout == "expval":
        out = []
        for wire in spec.readout_wires:
            axes = tuple(1 + q for q in range(spec.n_qubits) if q != wire)
            marginal = cube.sum(axis=axes)
            out.append(marginal[:, 0] - marginal[:, 1])
        return np.stack(out, axis=-1)
    kept = spec.readout_wires
    axes = tuple(1 + q for q in range(spec.n_qubits) if q not in kept)
    marginal = cube.sum(axis=axes)  # remaining axes in increasing wire order
    order = np.argsort(np.argsort(kept))  # position of each kept wire among sorted wires
    marginal = np.moveaxis(marginal, list(1 + order), list(range(1, 1 + len(kept))))
    return marginal.reshape(batch, -1)
