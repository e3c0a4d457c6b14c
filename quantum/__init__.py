"""The quantum student: circuits, devices, federated PCA, distillation, cost metering."""

from quantum.circuits import READOUTS, CircuitSpec, build_qnode, qiskit_circuit
from quantum.devices import DeviceSpec, make_executor, parse_device
from quantum.distill import evaluate_student, kd_loss, train_student
from quantum.executor import Executor
from quantum.metering import CostMeter
from quantum.projection import MomentStats, pca_projection
from quantum.student import QuantumStudent, build_student, circuit_spec, device_spec

__all__ = [
    "READOUTS",
    "CircuitSpec",
    "CostMeter",
    "DeviceSpec",
    "Executor",
    "MomentStats",
    "QuantumStudent",
    "build_qnode",
    "build_student",
    "circuit_spec",
    "device_spec",
    "evaluate_student",
    "kd_loss",
    "make_executor",
    "parse_device",
    "pca_projection",
    "qiskit_circuit",
    "train_student",
]
