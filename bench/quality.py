"""Student quality on both shared datasets, with the baselines beside it.

For each dataset, one federation (in process, 4 clients, IID) per student
variant, all on the same partitions, teachers and embeddings (the nodes and
their caches are reused between variants):

- majority: the server split's majority-class rate;
- teacher: mean accuracy of the clients' LoRA teachers on their validation rows;
- student: the global quantum student on the server split, projection=pca;
- student_linear: the same with projection=linear (trainable, starts at the PCA);
- student_ce: projection=pca trained with cross-entropy only (alpha = 0);
- logreg: logistic regression on exactly the student's input features (the
  federated-PCA projection of the clients' train rows), on the server split.

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

from config.run_config import RunConfig
from server_app.federation import load_server_split
from server_app.inprocess import InProcessGrid, run_in_process
from server_app.results import read_rounds

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
    grid, pca_dir = _run(base, args.clients, None, results)
    _, linear_dir = _run({**base, "projection": "linear"}, args.clients, grid, results)
    _, ce_dir = _run({**base, "alpha": 0.0}, args.clients, grid, results)

    summary = json.loads((pca_dir / "summary.json").read_text())
    first_round = read_rounds(pca_dir / "rounds.jsonl")[1]["clients"]
    teacher = float(np.mean([c["teacher-val-accuracy"] for c in first_round]))

    # Logistic regression on exactly the student's input: the fitted projection.
    student = np.load(pca_dir / "student.npz")
    weight, bias = student["projection.weight"], student["projection.bias"]
    train_x, train_y = [], []
    for context in grid.contexts.values():
        features = context.state.array_records["features"]["train"].numpy()
        train_x.append(features @ weight.T + bias)
    config = RunConfig.from_flat(base)
    from client_app.node import ClientNode

    for context in grid.contexts.values():
        train_rows, _ = ClientNode(context, config).splits
        train_y.append(train_rows.labels)
    split = load_server_split(config)
    logreg = LogisticRegression(max_iter=2000).fit(np.concatenate(train_x), np.concatenate(train_y))
    logreg_acc = float(logreg.score(split.features @ weight.T + bias, split.labels))
    return {
        "majority": float(summary["server-majority-rate"]),
        "teacher": teacher,
        "student": _final_accuracy(pca_dir),
        "student_linear": _final_accuracy(linear_dir),
        "student_ce": _final_accuracy(ce_dir),
        "logreg": logreg_acc,
    }


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
    columns = ["majority", "teacher", "student", "student_linear", "student_ce", "logreg"]
    print(f"{'dataset':<10} " + " ".join(f"{c:>14}" for c in columns))
    for task, row in table.items():
        print(f"{task:<10} " + " ".join(f"{row[c]:>14.3f}" for c in columns))
    for task, row in table.items():
        print(f"RESULT dataset={task} " + " ".join(f"{c}={row[c]:.3f}" for c in columns))


if __name__ == "__main__":
    main()
