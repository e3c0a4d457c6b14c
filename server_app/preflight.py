"""Start-up checks that need the libraries' own lists, run before anything slow.

:class:`config.RunConfig` checks each section by itself. What only the package
that implements a choice can judge is checked here, once, by the ServerApp,
before it writes a file, loads a model or asks a node anything: the task and
its data files, the partitioner, the teacher model's name, the device and the
circuit, the optimizer on that device, the strategy and its policies, and the
checkpoint to resume from. Each failure is one line naming the key and the fix.
"""

from __future__ import annotations

from config.fields import check_choice
from config.run_config import RunConfig
from llm.presets import check_model
from quantum.optimizers import check_cobyla_budget, resolve_optimizer
from quantum.student import circuit_spec, device_spec, gradient_free_parameters
from server_app.checkpoint import check_resume
from strategies.registry import check_strategy
from tasks.datasets import DataSource
from tasks.partition import SCHEMES


def preflight(config: RunConfig) -> None:
    """Raise :class:`config.ConfigError` (one line) on the first setting that cannot work.

    Reads the data's files and class count (fast; no model is loaded, no node is
    asked; a hub source is asked for its class count).
    """
    fed, data, teacher, student = config.federation, config.data, config.teacher, config.student
    if fed.resume_from:
        check_resume(fed.resume_from, fed.num_rounds, config.to_flat())
    source = DataSource.from_config(data)  # checks task and tweeteval-task
    check_choice("partitioner", data.partitioner, SCHEMES)
    if source.local:
        source.validate()
    check_model(teacher.model)
    device = device_spec(student)
    circuit = circuit_spec(student, source.num_classes)
    if resolve_optimizer(student.optimizer, device) == "cobyla":
        tuned = gradient_free_parameters(circuit)
        check_cobyla_budget(student.local_steps, tuned)
        if _may_plan_below_local_steps(config):
            check_cobyla_budget(config.policy.min_steps, tuned, key="min-steps")
    check_strategy(config)


def _may_plan_below_local_steps(config: RunConfig) -> bool:
    """Whether the strategy may send a budget below ``local-steps`` (down to ``min-steps``):
    the reference's ratio rules, or llm-guided with another steps policy or a cap."""
    policy, strategy = config.policy, config.federation.strategy
    if strategy == "llmqfl-reference":
        return True
    capped = policy.student_max_epochs > 0 or policy.deadline != "off"
    return strategy == "llm-guided" and (policy.steps_policy != "fixed" or capped)
