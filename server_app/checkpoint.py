"""Per-round checkpoints of the server, and resuming a run from one.

After every round the server writes ``<run dir>/checkpoint/``:

- ``student.npz``: the global student's arrays (circuit, readout, projection);
- ``state.json``: the round number, the strategy's and its policies' state
  (``strategy.state()``), the rounds written so far (so a resumed run's
  results are complete) and the state of NumPy's and torch's global random
  generators.

Each file is written to a temporary name and renamed, so a crash mid-write
leaves the previous round's checkpoint intact. ``resume-from`` names a run
directory (or its ``checkpoint`` folder); the resumed run continues at the
next round under a new run directory and carries the earlier rounds over.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from config.errors import ConfigError
from config.run_config import RunConfig
from quantum.student import QuantumStudent
from server_app.results import ResultsWriter
from server_app.teacher_federation import TeacherFederation
from strategies.student_fedavg import StudentFedAvg

logger = logging.getLogger(__name__)

FOLDER = "checkpoint"
STATE, ARRAYS = "state.json", "student.npz"
TEACHER_PREFIX = "teacher:"  # checkpoint arrays of the federated teacher adapters
BEST_PREFIX = "best:"  # checkpoint arrays of the best global student so far (final-model=best-val)
# "recent<i>:<name>": the last rounds' global students, oldest first (final-model=average)
RECENT_KEY = re.compile(r"^recent(\d+):(.+)$")


def recent_arrays(recent: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The checkpoint arrays of the last rounds' global students (see :data:`RECENT_KEY`)."""
    return {f"recent{i}:{k}": v for i, arrays in enumerate(recent) for k, v in arrays.items()}


@dataclass(frozen=True)
class Checkpoint:
    """What a resumed run needs."""

    round: int
    arrays: dict[str, np.ndarray]
    strategy_state: dict[str, Any]
    rounds: list[dict[str, Any]]
    rng: dict[str, Any]
    teacher_state: dict[str, Any] | None = None


def save_checkpoint(
    run_dir: str | os.PathLike[str],
    server_round: int,
    arrays: dict[str, Any],
    strategy_state: dict[str, Any],
    rounds: list[dict[str, Any]],
    teacher_state: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint of ``server_round`` atomically; return its folder."""
    folder = Path(run_dir) / FOLDER
    folder.mkdir(exist_ok=True)
    kind, keys, *position = tuple(np.random.get_state(legacy=True))
    state = {
        "round": server_round,
        "strategy": strategy_state,
        "rounds": rounds,
        "teacher-federation": teacher_state,
        "rng": {
            "numpy": [kind, np.asarray(keys).tolist(), *position],
            "torch": torch.get_rng_state().tolist(),
        },
    }
    tmp_arrays = folder / f".{ARRAYS}.tmp.npz"
    np.savez(tmp_arrays, **arrays)
    tmp_state = folder / f".{STATE}.tmp"
    tmp_state.write_text(json.dumps(state, default=_jsonable), encoding="utf-8")
    os.replace(tmp_arrays, folder / ARRAYS)
    os.replace(tmp_state, folder / STATE)  # the state last: it names a complete checkpoint
    return folder


def checkpoint_folder(path: str) -> Path:
    """The checkpoint folder ``resume-from`` points at (a run directory or the folder itself).

    Raises
    ------
    ConfigError
        One line naming ``resume-from`` when no checkpoint is there.
    """
    candidate = Path(path).expanduser()
    folder = candidate if (candidate / STATE).is_file() else candidate / FOLDER
    if not (folder / STATE).is_file() or not (folder / ARRAYS).is_file():
        raise ConfigError(
            f"resume-from={path!r}: no checkpoint there (expected {FOLDER}/{STATE} and "
            f"{FOLDER}/{ARRAYS}); point it at the results directory of an earlier run"
        )
    return folder


# Settings that decide the data and its roles, the partitions, the teachers, the
# student's shape, and what the strategy learned and how it reads it: a resumed
# run must keep them, or it would continue a different run on corrupted state.
SAME_ON_RESUME = (
    # data and partitions
    "task",
    "data-dir",
    "tweeteval-task",
    "partitioner",
    "dirichlet-alpha",
    "max-train-rows",
    "val-fraction",
    "server-val-rows",
    "kmer",
    "kmer-stride",
    # teachers (their adapters are federated state with teacher-federation=fedavg)
    "model",
    "max-length",
    "lora-r",
    "lora-alpha",
    "lora-target-modules",
    "peft-method",
    "teacher-federation",
    "teacher-fedavg-rounds",
    "teacher-head",
    "teacher-probe",
    "teacher-fedavg-early-end",
    # the student's arrays
    "n-qubits",
    "n-layers",
    "readout",
    "circuit",
    "embedding",
    "ansatz",
    "projection",
    # the strategy's learned state
    "strategy",
    "steps-policy",
    "bandit-arms",
    "selection",
    "termination",
    "seed",
)


def check_resume(path: str, num_rounds: int, run_config: Mapping[str, Any] | None = None) -> None:
    """Fail fast, in one line, unless ``path`` holds a checkpoint this run can continue.

    The checkpoint must be before ``num_rounds``, and when the checkpointed
    run's ``config.json`` is beside it, ``run_config`` must agree with it on
    every key of :data:`SAME_ON_RESUME`.
    """
    folder = checkpoint_folder(path)
    earlier_file = folder.parent / "config.json"
    if run_config is not None and earlier_file.is_file():
        earlier = json.loads(earlier_file.read_text(encoding="utf-8"))
        for key in SAME_ON_RESUME:
            if key in earlier and key in run_config and earlier[key] != run_config[key]:
                raise ConfigError(
                    f"{key}={run_config[key]!r}: the run in resume-from={path!r} used "
                    f"{earlier[key]!r}; resume with the settings of that run"
                )
    try:
        done = int(json.loads((folder / STATE).read_text(encoding="utf-8"))["round"])
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(f"resume-from={path!r}: unreadable checkpoint ({err})") from None
    if done >= num_rounds:
        raise ConfigError(
            f"num-server-rounds={num_rounds}: the checkpoint in {path!r} is at round {done} "
            "already; raise num-server-rounds to continue"
        )


def load_checkpoint(path: str) -> Checkpoint:
    """Read the checkpoint ``resume-from`` points at (see :func:`checkpoint_folder`)."""
    folder = checkpoint_folder(path)
    try:
        state = json.loads((folder / STATE).read_text(encoding="utf-8"))
        with np.load(folder / ARRAYS) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise ConfigError(f"resume-from={path!r}: unreadable checkpoint ({err})") from None
    return Checkpoint(
        round=int(state["round"]),
        arrays=arrays,
        strategy_state=state["strategy"],
        rounds=state["rounds"],
        rng=state["rng"],
        teacher_state=state.get("teacher-federation"),
    )


def resume(
    path: str,
    config: RunConfig,
    student: QuantumStudent,
    strategy: StudentFedAvg,
    writer: ResultsWriter,
    teachers: TeacherFederation | None,
) -> tuple[int, dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    """Load the checkpoint into the student, strategy, teachers and results.

    Returns the next round, the best global student's arrays so far (empty
    when the checkpoint has none) and the last rounds' global students kept for
    ``final-model=average`` (oldest first; empty when none). The earlier rounds
    are written again to this run's ``rounds.jsonl``, so its results are
    complete.
    """
    check_resume(path, config.federation.num_rounds)
    checkpoint = load_checkpoint(path)
    prefixes = (TEACHER_PREFIX, BEST_PREFIX)
    student_arrays = {
        k: v
        for k, v in checkpoint.arrays.items()
        if not k.startswith(prefixes) and not RECENT_KEY.match(k)
    }
    recent: dict[int, dict[str, np.ndarray]] = {}
    for key, value in checkpoint.arrays.items():
        if match := RECENT_KEY.match(key):
            recent.setdefault(int(match.group(1)), {})[match.group(2)] = value
    best = {
        k[len(BEST_PREFIX) :]: v for k, v in checkpoint.arrays.items() if k.startswith(BEST_PREFIX)
    }
    if teachers is not None and checkpoint.teacher_state is not None:
        teacher_arrays = {
            k[len(TEACHER_PREFIX) :]: v
            for k, v in checkpoint.arrays.items()
            if k.startswith(TEACHER_PREFIX)
        }
        teachers.load_state(checkpoint.teacher_state, teacher_arrays or None)
    try:
        student.set_arrays(student_arrays)
    except ValueError as err:
        raise ConfigError(
            f"resume-from={path!r}: {err}; use the circuit settings of the checkpointed run"
        ) from None
    try:
        strategy.load_state(checkpoint.strategy_state)
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(
            f"resume-from={path!r}: the checkpointed strategy state does not fit "
            f"{type(strategy).__name__} ({type(err).__name__}: {err}); resume with the "
            "strategy settings of that run"
        ) from None
    restore_rng(checkpoint.rng)
    for record in checkpoint.rounds:
        writer.write_round(record)
    logger.info("resumed from %s after round %d", path, checkpoint.round)
    return checkpoint.round + 1, best, [recent[i] for i in sorted(recent)]


def restore_rng(rng: dict[str, Any]) -> None:
    """Put NumPy's and torch's global generators back where the checkpoint left them."""
    kind, keys, *rest = rng["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(torch.tensor(rng["torch"], dtype=torch.uint8))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
