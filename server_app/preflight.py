"""Start-up checks that need the libraries' own lists, run before anything slow.

:class:`config.RunConfig` checks each section by itself. What only the package
that implements a choice can judge is checked here, once, by the ServerApp,
before it writes a file, loads a model or asks a node anything: the task and
its data files, the partitioner, the teacher model's name, the device and the
circuit, the optimizer on that device, the strategy and its policies, and the
checkpoint to resume from. Each failure is one line naming the key and the fix.
"""

from __future__ import annotations

from config.run_config import RunConfig, check_choice
from llm.presets import check_model
from quantum.optimizers import resolve_optimizer
from quantum.student import circuit_spec, device_spec
from server_app.checkpoint import check_resume
from strategies.registry import check_strategy
from tasks.datasets import NUM_CLASSES, TASKS, validate_data_dir
from tasks.partition import SCHEMES


def preflight(config: RunConfig) -> None:
    """Raise :class:`config.ConfigError` (one line) on the first setting that cannot work.

    Reads the data directory's files (fast; no model is loaded, no node is asked).
    """
    fed, data, teacher, student = config.federation, config.data, config.teacher, config.student
    if fed.resume_from:
        check_resume(fed.resume_from, fed.num_rounds, config.to_flat())
    check_choice("task", data.task, TASKS)
    check_choice("partitioner", data.partitioner, SCHEMES)
    if data.data_dir:
        validate_data_dir(data.task, data.data_dir)
    check_model(teacher.model)
    device = device_spec(student)
    circuit_spec(student, NUM_CLASSES[data.task])
    resolve_optimizer(student.optimizer, device)
    check_strategy(config)
