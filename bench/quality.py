"""Student quality on equal terms: every model scored on the same test rows, over seeds.

For each dataset and seed, one federation per student variant (in process,
``--clients`` clients, IID), all on the same partitions, teachers and
embeddings (the nodes and their caches are reused between variants). The
server steers and plots by its validation split; every figure below is
accuracy on the same test rows, read once per model:

- majority: the test rows' majority-class rate;
- teacher_test: each client's fine-tuned LoRA teacher on the test rows, mean over clients
  (with ``teacher-federation=fedavg`` every client distils from the one federated teacher,
  so this is that teacher);
- teacher_val: the same teachers on the server's validation rows (what levers are chosen by);
- probe: the teacher's ceiling without fine-tuning: logistic regression on the frozen
  encoder's whole mean-pooled, L2-normalised embedding of every client's train rows
  pooled, its regularisation chosen on the server's validation rows (each fit at its
  optimum: :func:`llm.probe.fit_logistic`);
- student: the global quantum student (projection=linear, trainable, from the federated PCA);
- student_ce: the same student trained with cross-entropy only (alpha = 0);
- student_pca: the student with projection=pca (fixed);
- classical: the same federation with device=classical: a classical network with exactly
  the circuit's trainable parameters in the circuit's place (same projection, features,
  readout, distillation and rounds);
- logreg: logistic regression, trained on all clients' train rows, on exactly the
  features the final student's circuit reads (its projection's output);
- logreg_pca: the same on the federated-PCA features.

    python bench/quality.py                          # both shared datasets, seeds 1 2 3
    python bench/quality.py --task tweeteval --data-dir DIR --seeds 1   # any folder
    python bench/quality.py --set teacher-head=cls                  # a lever switched
    python bench/quality.py --variants student student_ce          # fewer federations

Ends with one ``RESULT dataset=<name> <key>=<mean> <key>_sd=<sd> ...`` line per dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from client_app.node import ClientNode
from harness.inprocess import InProcessGrid, run_in_process
from llm.inference import predict_logits
from llm.probe import fit_logistic, logit_metrics, unit
from server_app.server_data import ServerSplit, embed_split
from tasks.datasets import DataSource
from tasks.splits import server_datasets

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
DATASETS = {
    "tweeteval": ("tweeteval", SHARED / "tweeteval_sentiment"),
    "genomic": ("genomic", SHARED / "genomic_nontata_promoters"),
}
COLUMNS = [
    "majority",
    "probe",
    "teacher_test",
    "teacher_val",
    "student",
    "student_ce",
    "student_pca",
    "classical",
    "logreg",
    "logreg_pca",
]
VARIANTS: dict[str, dict[str, Any]] = {
    "student": {"projection": "linear"},
    "student_ce": {"projection": "linear", "alpha": 0.0},
    "student_pca": {"projection": "pca"},
    "classical": {"projection": "linear", "device": "classical"},
}


def _run(config: dict[str, Any], clients: int, grid: InProcessGrid | None) -> tuple[Any, Path]:
    results = Path(config["results-dir"])
    before = set(results.iterdir()) if results.exists() else set()
    grid = run_in_process(config, clients, grid=grid)
    (run_dir,) = set(results.iterdir()) - before
    return grid, run_dir


def _summary(run_dir: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())
    return summary


def one_seed(task: str, data_dir: str, seed: int, args: argparse.Namespace) -> dict[str, float]:
    """Every column for one dataset and seed."""
    base = {
        "strategy": "fedavg",  # teacher-epochs as set (llm-guided trains teachers in chunks)
        "task": task,
        "data-dir": data_dir,
        "results-dir": tempfile.mkdtemp(prefix=f"quality-{task}-"),
        "num-server-rounds": args.rounds,
        "min-nodes": args.clients,
        "max-train-rows": args.rows,
        "server-val-rows": args.val_rows,
        "test-rows": args.test_rows,
        "local-steps": args.steps,
        **({"teacher-epochs": args.teacher_epochs} if args.teacher_epochs else {}),
        "max-length": 128 if task == "genomic" else 64,
        "seed": seed,
        **dict(_parse_setting(item) for item in args.set),
    }
    grid: InProcessGrid | None = None
    figures: dict[str, float] = {}
    runs = {}
    for name in args.variants:
        grid, runs[name] = _run({**base, **VARIANTS[name]}, args.clients, grid)
        figures[name] = float(_summary(runs[name])["final-test"]["accuracy"])
    assert grid is not None
    nodes = [ClientNode(context) for context in grid.contexts.values()]
    config = nodes[0].config
    val_rows, test_rows = server_datasets(DataSource.from_config(config.data), config.data, seed)
    test = embed_split(config, test_rows, "test")
    figures["majority"] = test.majority_rate
    teacher = _summary(runs[args.variants[0]]).get("teacher") or {}
    if teacher.get("test-accuracy") is not None:  # the federated teacher, scored by the server
        figures["teacher_test"] = float(teacher["test-accuracy"])
        figures["teacher_val"] = float(teacher["val-accuracy"])
    else:
        figures["teacher_test"] = float(np.mean([_teacher_accuracy(n, test_rows) for n in nodes]))
        figures["teacher_val"] = float(np.mean([_teacher_accuracy(n, val_rows) for n in nodes]))
    train_x = np.concatenate([n.features()[0] for n in nodes])
    train_y = np.concatenate([n.splits[0].labels for n in nodes])
    val = embed_split(config, val_rows, "validation")
    figures["probe"] = _probe(train_x, train_y, val, test)
    if "student" in runs:
        figures["logreg"] = _logreg_on_projection(runs["student"], train_x, train_y, test)
    if "student_pca" in runs:
        figures["logreg_pca"] = _logreg_on_projection(runs["student_pca"], train_x, train_y, test)
    shown = [c for c in COLUMNS if c in figures]
    print(f"{task} seed {seed}: " + " ".join(f"{c}={figures[c]:.3f}" for c in shown), flush=True)
    return figures


def _parse_setting(item: str) -> tuple[str, Any]:
    """``key=value`` from the command line, the value read as TOML reads it (else a string)."""
    import tomllib

    key, _, value = item.partition("=")
    try:
        return key, tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key, value


def _teacher_accuracy(node: ClientNode, rows: Any) -> float:
    """A client's teacher on the test rows (its adapters and head, as fine-tuned)."""
    model, tokenizer = node.teacher_model()
    cfg = node.config.teacher
    logits = predict_logits(model, tokenizer, rows.texts, cfg.max_length, cfg.embed_batch_size)
    return logit_metrics(logits, rows.labels)[1]


def _probe(train_x: np.ndarray, train_y: np.ndarray, val: ServerSplit, test: ServerSplit) -> float:
    """Logistic regression on the L2-normalised frozen embeddings; C picked on ``val``.

    Each fit is at its optimum (:func:`llm.probe.fit_logistic`); C is the one
    with the best validation accuracy.
    """
    train_u, val_u = unit(train_x), unit(val.features)
    fits = {c: fit_logistic(train_u, train_y, c) for c in (0.1, 1.0, 10.0, 100.0)}
    best = max(fits, key=lambda c: fits[c].score(val_u, val.labels))
    return float(fits[best].score(unit(test.features), test.labels))


def _logreg_on_projection(
    run_dir: Path, train_x: np.ndarray, train_y: np.ndarray, test: ServerSplit
) -> float:
    """Logistic regression on ``W x + b``, the final student's projected features."""
    student = np.load(run_dir / "student.npz")
    weight, bias = student["projection.weight"], student["projection.bias"]
    logreg = fit_logistic(train_x @ weight.T + bias, train_y, 1.0)
    return float(logreg.score(test.features @ weight.T + bias, test.labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["tweeteval", "genomic"], default=None)
    parser.add_argument(
        "--data-dir", default="", help="a folder in the task's layout (default: the shared one)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=2500)
    parser.add_argument("--val-rows", type=int, default=500)
    parser.add_argument("--test-rows", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument(
        "--teacher-epochs", type=float, default=None, help="default: the run config's"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=list(VARIANTS),
        help="student federations to run (the teacher and probe columns come with any)",
    )
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="more run-config settings"
    )
    args = parser.parse_args()
    os.environ.setdefault("LLMQFL_CACHE_DIR", tempfile.mkdtemp(prefix="quality-cache-"))
    if args.task:
        folder = Path(args.data_dir) if args.data_dir else DATASETS[args.task][1]
        datasets = {args.task: (args.task, folder)}
    else:
        datasets = dict(DATASETS)
    table = {}
    for name, (task, folder) in datasets.items():
        data_dir = str(Path(folder).resolve()) if folder else ""
        per_seed = [one_seed(task, data_dir, seed, args) for seed in args.seeds]
        table[name] = {
            c: (
                statistics.mean(f[c] for f in per_seed),
                statistics.stdev(f[c] for f in per_seed) if len(per_seed) > 1 else 0.0,
            )
            for c in COLUMNS
            if c in per_seed[0]
        }
    columns = list(next(iter(table.values())))
    print(f"\nmeans ± sd over seeds {args.seeds}, accuracy on the same test rows")
    print("| dataset | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in table.items():
        cells = " | ".join(f"{m:.3f} ± {sd:.3f}" for m, sd in row.values())
        print(f"| {name} | {cells} |")
    for name, row in table.items():
        pairs = " ".join(f"{c}={m:.3f} {c}_sd={sd:.3f}" for c, (m, sd) in row.items())
        print(f"RESULT dataset={name} seeds={len(args.seeds)} {pairs}")


if __name__ == "__main__":
    main()
