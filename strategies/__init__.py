"""Server-side strategies: the FedAvg seam, the guided strategies, and the registry."""

from strategies.llm_guided import FedProx, LLMGuidedStrategy, LLMQFLReference
from strategies.registry import build_strategy, resolve_strategy
from strategies.student_fedavg import StudentFedAvg

__all__ = [
    "FedProx",
    "LLMGuidedStrategy",
    "LLMQFLReference",
    "StudentFedAvg",
    "build_strategy",
    "resolve_strategy",
]
