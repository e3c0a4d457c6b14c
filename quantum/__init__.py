"""The quantum student: circuits, devices, federated PCA, distillation."""

from quantum.circuits import DEVICES, READOUTS, build_vqc, check_circuit, make_device
from quantum.distill import evaluate_student, kd_loss, train_student
from quantum.projection import MomentStats, pca_projection
from quantum.student import QuantumStudent, build_student

__all__ = [
    "DEVICES",
    "READOUTS",
    "MomentStats",
    "QuantumStudent",
    "build_student",
    "build_vqc",
    "check_circuit",
    "evaluate_student",
    "kd_loss",
    "make_device",
    "pca_projection",
    "train_student",
]
