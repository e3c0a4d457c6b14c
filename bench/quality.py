"""Student quality on both shared datasets, with the baselines beside it.

For each dataset, one federation (in process, 4 clients, IID) per student
variant, all on the same partitions, teachers and embeddings (the nodes and
their caches are reused between variants):

- majority: the server split's majority-class rate;
- teacher: mean accuracy of the clients' LoRA teachers on their validation rows;
- student: the global quantum student on the server split, with the default
  projection=linear (trainable, starts at the federated PCA);
- student_ce: the same student trained with cross-entropy only (alpha = 0);
- student_pca: the student with projection=pca (fixed);
- logreg: logistic regression, trained on all clients' train rows, on exactly
  the features the final student's circuit reads (its projection's output);
- logreg_pca: the same on the federated-PCA features.

    python bench/quality.py            # both datasets
    python bench/quality.py --rows 1000 --rounds 3   # quicker
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from client_app.node import ClientNode
from config.run_config import RunConfig
from harness.inprocess import InProcessGrid, run_in_process
from server_app.results import read_rounds
from server_app.setup import ServerSplit, load_server_split

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
DATASETS = {"tweeteval": "tweeteval_sentiment", "genomic": "genomic_nontata_promoters"}


def _run(
    config: dict[str, Any], clients: int, grid: InProcessGrid | None, results: Path
) -> tuple[InProcessGrid, Path]:
    before = set(results.iterdir())
    grid = run_in_process(config, clients, grid=grid)
    (run_dir,) = set(results.iterdir()) - before
    return grid, run_dir


def _final_accuracy(run_dir: Path) -> float:
    return float(json.loads((run_dir / "summary.json").read_text())["final-global"]["accuracy"])


def evaluate_dataset(task: str, args: argparse.Namespace) -> dict[str, float]:
    results = Path(tempfile.mkdtemp(prefix=f"quality-{task}-"))
    base = {
        "task": task,
        "data-dir": str((SHARED / DATASETS[task]).resolve()),
        "results-dir": str(results),
        "num-server-rounds": args.rounds,
        "min-nodes": args.clients,
        "max-train-rows": args.rows,
        "server-eval-rows": args.server_rows,
        "local-steps": args.steps,
        "teacher-epochs": args.teacher_epochs,
        "max-length": 128 if task == "genomic" else 64,
        "seed": args.seed,
    }
    grid, linear_dir = _run({**base, "projection": "linear"}, args.clients, None, results)
    _, ce_dir = _run({**base, "projection": "linear", "alpha": 0.0}, args.clients, grid, results)
    _, pca_dir = _run({**base, "projection": "pca"}, args.clients, grid, results)

    summary = json.loads((linear_dir / "summary.json").read_text())
    first_round = read_rounds(linear_dir / "rounds.jsonl")[1]["clients"]
    teacher = float(np.mean([c["teacher-val-accuracy"] for c in first_round]))

    config = RunConfig.from_flat(base)
    train_x = np.concatenate(
        [c.state.array_records["features"]["train"].numpy() for c in grid.contexts.values()]
    )
    train_y = np.concatenate(
        [ClientNode(c, config).splits[0].labels for c in grid.contexts.values()]
    )
    split = load_server_split(config)
    return {
        "majority": float(summary["server-majority-rate"]),
        "teacher": teacher,
        "student": _final_accuracy(linear_dir),
        "student_ce": _final_accuracy(ce_dir),
        "student_pca": _final_accuracy(pca_dir),
        "logreg": _logreg_on_projection(linear_dir, train_x, train_y, split),
        "logreg_pca": _logreg_on_projection(pca_dir, train_x, train_y, split),
    }


def _logreg_on_projection(
    run_dir: Path, train_x: np.ndarray, train_y: np.ndarray, split: ServerSplit
) -> float:
    """Logistic regression on ``W x + b``, the final student's projected features."""
    student = np.load(run_dir / "student.npz")
    weight, bias = student["projection.weight"], student["projection.bias"]
    logreg = LogisticRegression(max_iter=2000).fit(train_x @ weight.T + bias, train_y)
    return float(logreg.score(split.features @ weight.T + bias, split.labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=2500)
    parser.add_argument("--server-rows", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--teacher-epochs", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    table = {task: evaluate_dataset(task, args) for task in args.datasets}
    columns = [
        "majority",
        "teacher",
        "student",
        "student_ce",
        "student_pca",
        "logreg",
        "logreg_pca",
    ]
    print(f"{'dataset':<10} " + " ".join(f"{c:>14}" for c in columns))
    for task, row in table.items():
        print(f"{task:<10} " + " ".join(f"{row[c]:>14.3f}" for c in columns))
    for task, row in table.items():
        print(f"RESULT dataset={task} " + " ".join(f"{c}={row[c]:.3f}" for c in columns))


if __name__ == "__main__":
    main()
