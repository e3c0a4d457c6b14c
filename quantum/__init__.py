"""The quantum student: circuits, devices, federated PCA, distillation, cost metering."""

from quantum.circuits import READOUTS, CircuitSpec, build_qnode, qiskit_circuit
from quantum.devices import DeviceSpec, parse_device
from quantum.distill import evaluate_student, kd_loss, train_student
from quantum.metering import CostMeter
from quantum.projection import MomentStats, pca_projection
from quantum.student import QuantumStudent, build_student

__all__ = [
    "READOUTS",
    "CircuitSpec",
    "CostMeter",
    "DeviceSpec",
    "MomentStats",
    "QuantumStudent",
    "build_qnode",
    "build_student",
    "evaluate_student",
    "kd_loss",
    "parse_device",
    "pca_projection",
    "qiskit_circuit",
    "train_student",
]
