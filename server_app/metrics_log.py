"""Per-round scalars for TensorBoard (``metrics-logger = "tensorboard"``).

Each round record that ``ResultsWriter`` writes to ``rounds.jsonl`` is also
written as scalars to ``<run>/tensorboard/``, with the round as the step,
through TensorBoard's own writer (``torch.utils.tensorboard``)::

    tensorboard --logdir results/

The scalars, by tag:

- ``val/accuracy``, ``val/loss``: the global student on the server's
  validation split (round 0 is the initial student); ``test/...`` only where
  ``test-every-round`` scored the test rows;
- ``budget/steps/client-<p>``, ``budget/teacher-epochs/client-<p>``,
  ``budget/shots/client-<p>``: what the strategy gave each selected client;
- ``client/compute-seconds/client-<p>``, ``client/student-val-loss/client-<p>``,
  ``client/teacher-val-loss/client-<p>``: what each client reported;
- ``quantum/<metric>``: the round's quantum cost summed over clients (jobs,
  shots, executions, QPU seconds billed and estimated, queue seconds);
- ``round/seconds``, ``round/participants``, ``round/failures``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

#: Client report keys written per client, under ``client/<key>/client-<p>``.
CLIENT_KEYS = ("compute-seconds", "student-val-loss", "teacher-val-loss", "steps")
#: Plan keys of a round record written per client, under ``budget/<name>/client-<p>``.
BUDGET_KEYS = {"budgets": "steps", "teacher-budgets": "teacher-epochs", "shot-budgets": "shots"}


def round_scalars(record: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    """``(tag, value)`` for every scalar of one ``rounds.jsonl`` record (finite numbers only)."""
    for split in ("val", "test"):
        for metric, value in (record.get(split) or {}).items():
            yield f"{split}/{metric}", value
    for key, name in BUDGET_KEYS.items():
        for partition, value in (record.get(key) or {}).items():
            yield f"budget/{name}/client-{partition}", value
    if record.get("round", 0) > 0:  # round 0's clients are statistics replies
        for client in record.get("clients", []):
            for key in CLIENT_KEYS:
                if key in client:
                    yield f"client/{key}/client-{client['partition-id']}", client[key]
    for metric, value in (record.get("quantum-cost") or {}).items():
        yield f"quantum/{metric}", value
    yield "round/seconds", record.get("seconds", 0.0)
    yield "round/participants", len(record.get("participants", []))
    yield "round/failures", len(record.get("failures", []))


class TensorBoardLog:
    """Writes each round's :func:`round_scalars` to an event file under ``folder``."""

    def __init__(self, folder: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = folder
        self._writer = SummaryWriter(log_dir=str(folder))

    def write_round(self, record: Mapping[str, Any]) -> None:
        step = int(record["round"])
        for tag, value in round_scalars(record):
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if value == value and abs(value) != float("inf"):  # NaN and inf are left out
                self._writer.add_scalar(tag, float(value), global_step=step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
