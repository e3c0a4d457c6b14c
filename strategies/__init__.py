"""Server-side strategies: the FedAvg seam, and the registry users plug into."""

from strategies.registry import build_strategy, resolve_strategy
from strategies.student_fedavg import StudentFedAvg

__all__ = ["StudentFedAvg", "build_strategy", "resolve_strategy"]
