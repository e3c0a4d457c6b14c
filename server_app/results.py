"""The one results writer: ``rounds.jsonl``, ``summary.json`` and the plots.

A run writes to ``<results-dir>/<run-name>/``:

- ``config.json``: the run's full, validated configuration;
- ``rounds.jsonl``: one JSON object per line, one line per round, appended and
  flushed as each round ends (round 0 is the initial global evaluation);
- ``summary.json``: written at the end;
- ``student.npz``: the final global student's arrays;
- ``strategy.json``: the strategy's learned state at the end (``state()``);
- ``accuracy.png`` and ``loss.png``: the global student per round on the
  server's validation split (and on the test rows, when ``test-every-round``
  scored them, labelled as such), with the mean client student and teacher
  local-validation figures beside it;
- ``budgets.png``: each client's step budget per round (a heatmap; blank
  where the client was not selected), and ``participation.png``: which
  clients trained in which round, and which failed;
- ``tensorboard/``: with ``metrics-logger = "tensorboard"``, each round's
  scalars as a TensorBoard event file (``server_app/metrics_log.py``).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from config.messages import TRAIN_KEYS
from server_app.metrics_log import TensorBoardLog

logger = logging.getLogger(__name__)


class ResultsWriter:
    """Writes one run's results directory.

    Parameters
    ----------
    root : str or Path
        The ``results-dir`` setting; created if missing.
    run_name : str
        The run's sub-directory; must not exist yet (nothing is overwritten).
    metrics_logger : str
        ``"tensorboard"`` also writes each round's scalars to ``tensorboard/``.
    """

    def __init__(
        self, root: str | os.PathLike[str], run_name: str, metrics_logger: str = "none"
    ) -> None:
        self.path = Path(root).expanduser().resolve() / run_name
        self.path.mkdir(parents=True, exist_ok=False)
        self.rounds: list[dict[str, Any]] = []
        self.scalars = (
            TensorBoardLog(self.path / "tensorboard") if metrics_logger == "tensorboard" else None
        )

    def write_config(self, flat_config: Mapping[str, Any]) -> None:
        """Save the run configuration as ``config.json``."""
        _write_json(self.path / "config.json", dict(flat_config))

    def write_round(self, record: Mapping[str, Any]) -> None:
        """Append one round's record to ``rounds.jsonl`` and flush it to disk."""
        self.rounds.append(dict(record))
        with open(self.path / "rounds.jsonl", "a", encoding="utf-8") as out:
            out.write(json.dumps(record, sort_keys=True) + "\n")
            out.flush()
            os.fsync(out.fileno())
        if self.scalars is not None:
            self.scalars.write_round(record)

    def save_arrays(self, name: str, arrays: Mapping[str, Any]) -> None:
        """Save named numpy arrays (e.g. the final global student) as ``.npz``."""
        np.savez(self.path / name, **arrays)

    def write_json(self, name: str, data: Mapping[str, Any]) -> None:
        """Write ``data`` as the JSON file ``name`` (atomically)."""
        _write_json(self.path / name, dict(data))

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Write ``summary.json`` and the plots."""
        _write_json(self.path / "summary.json", dict(summary))
        plot_rounds(self.rounds, self.path)
        if self.scalars is not None:
            self.scalars.close()


def read_rounds(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a ``rounds.jsonl`` file, in order."""
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def _client_mean(record: Mapping[str, Any], key: str) -> float:
    values = [c[key] for c in record.get("clients", []) if key in c]
    return sum(values) / len(values) if values else math.nan


def plot_rounds(rounds: list[dict[str, Any]], out_dir: Path) -> None:
    """Draw ``accuracy.png`` and ``loss.png`` (global and mean client figures per round)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["round"] for r in rounds]
    for name, metric in (("accuracy", "accuracy"), ("loss", "loss")):
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(
            x,
            [r["val"][metric] for r in rounds],
            marker="o",
            label="global student (server validation split)",
        )
        if all("test" in r for r in rounds):
            ax.plot(
                x,
                [r["test"][metric] for r in rounds],
                marker="x",
                label="global student (test rows; read by no decision)",
            )
        for who in ("student", "teacher"):
            key = TRAIN_KEYS[f"{who}_val_{metric}"]
            ax.plot(
                x,
                [_client_mean(r, key) for r in rounds],
                marker=".",
                linestyle="--",
                label=f"mean client {who} (local validation)",
            )
        ax.set_xlabel("round")
        ax.set_ylabel("accuracy" if metric == "accuracy" else "cross-entropy (nats)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / f"{name}.png", dpi=100)
        plt.close(fig)
    plot_budgets(rounds, out_dir)


def budget_matrix(rounds: list[dict[str, Any]]) -> tuple[list[int], list[int], Any, Any]:
    """``(rounds, partitions, budgets, participation)`` of the trained rounds.

    ``budgets[i, j]`` is partition ``j``'s step budget in round ``i`` (NaN if
    not selected); ``participation[i, j]`` is 1 if it trained, -1 if it was
    selected and failed, 0 if not selected.
    """
    trained = [r for r in rounds if r["round"] >= 1]
    partitions = sorted(
        {int(p) for r in trained for p in r.get("budgets", {})}
        | {int(p) for r in rounds for p in r.get("participants", [])}
    )
    column = {p: j for j, p in enumerate(partitions)}
    budgets = np.full((len(trained), len(partitions)), np.nan)
    participation = np.zeros((len(trained), len(partitions)), dtype=int)
    for i, record in enumerate(trained):
        for part, steps in record.get("budgets", {}).items():
            budgets[i, column[int(part)]] = steps
            participation[i, column[int(part)]] = -1
        for client in record.get("clients", []):
            if int(client.get("partition-id", -1)) in column:
                participation[i, column[int(client["partition-id"])]] = 1
    return [r["round"] for r in trained], partitions, budgets, participation


def plot_budgets(rounds: list[dict[str, Any]], out_dir: Path) -> None:
    """Draw ``budgets.png`` (steps per client per round) and ``participation.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    x, partitions, budgets, participation = budget_matrix(rounds)
    if not x or not partitions:
        return
    size = (max(4.0, 0.5 * len(x) + 2), max(3.0, 0.35 * len(partitions) + 1.5))
    fig, ax = plt.subplots(figsize=size)
    image = ax.imshow(budgets.T, aspect="auto", cmap="viridis", origin="lower")
    fig.colorbar(image, ax=ax, label="local optimizer steps")
    for (i, j), steps in np.ndenumerate(budgets):
        if np.isfinite(steps):
            ax.text(i, j, f"{int(steps)}", ha="center", va="center", fontsize=7, color="w")
    _matrix_axes(ax, x, partitions, "step budget per client (blank: not selected)")
    fig.tight_layout()
    fig.savefig(out_dir / "budgets.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=size)
    colours = ListedColormap(["tab:red", "whitesmoke", "tab:green"])
    ax.imshow(participation.T, aspect="auto", cmap=colours, vmin=-1, vmax=1, origin="lower")
    _matrix_axes(ax, x, partitions, "participation (green: trained, red: failed)")
    fig.tight_layout()
    fig.savefig(out_dir / "participation.png", dpi=100)
    plt.close(fig)


def _matrix_axes(ax: Any, x: list[int], partitions: list[int], title: str) -> None:
    ax.set_xticks(range(len(x)), [str(r) for r in x])
    ax.set_yticks(range(len(partitions)), [str(p) for p in partitions])
    ax.set_xlabel("round")
    ax.set_ylabel("client (partition)")
    ax.set_title(title, fontsize=9)
