"""llm-guided against fixed-step FedAvg and the published rules: accuracy and client compute.

On TweetEval sentiment with ``--clients`` clients (Dirichlet non-IID labels),
each seed runs, in process and one client at a time:

1. ``fedavg``: every client trains ``--local-steps`` steps every round, for
   ``--rounds`` rounds (the fixed-step baseline);
2. ``llm-guided``: the settings in :data:`GUIDED` (selection, ratio-rule
   budgets, termination by the teacher yardstick);
3. ``llmqfl-reference``: the published code's rules (all clients, budgets
   that only rise, no early stop).

The three runs of a seed share the same nodes, so each client fine-tunes its
LoRA teacher and embeds its rows once per seed (in the fedavg run). Each run
is still charged that cost: a client's compute in a round is its measured
handler time, plus its teacher's measured fine-tuning time in the first round
it trains in that run, plus every client's measured embedding time (all runs
query all clients once for the federated PCA). Idle seconds are what a
parallel deployment would waste: per round, the slowest participant's
compute minus each participant's, summed.

    python bench/compare_strategies.py --seeds 1 2 3

Ends with ``RESULT compute_saving=<1 - guided / fedavg compute>
accuracy_gap=<guided - fedavg final accuracy, points>`` (means over seeds).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from harness.inprocess import InProcessGrid, run_in_process
from server_app.results import read_rounds

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

#: llm-guided at its default policies (every client, adaptive budgets, plateau stop) with
#: FedNova aggregation, which keeps unequal budgets unbiased; all else as in the fedavg run.
GUIDED: dict[str, Any] = {"strategy": "llm-guided", "aggregation": "fednova"}

STRATEGIES: dict[str, dict[str, Any]] = {
    "fedavg": {"strategy": "fedavg"},
    "llm-guided": GUIDED,
    "llmqfl-reference": {"strategy": "llmqfl-reference", "steps-policy": "adaptive"},
    # Variants of llm-guided, reported beside it (the RESULT line uses llm-guided).
    "guided-fedavg-agg": {**GUIDED, "aggregation": "fedavg"},
    "guided-bandit": {**GUIDED, "steps-policy": "bandit"},
    "guided-half-gap": {**GUIDED, "fraction-train": 0.5},
}


def account(
    rounds: list[dict[str, Any]], teacher: dict[int, float], embed: float
) -> dict[str, float]:
    """Compute, idle seconds, steps and bytes of one run (see the module docstring)."""
    seen: set[int] = set()
    compute = idle = student = 0.0
    for record in rounds[1:]:
        per_client = []
        for client in record["clients"]:
            part = int(client["partition-id"])
            seconds = float(client["compute-seconds"]) - float(client.get("teacher-seconds", 0.0))
            student += float(client["student-seconds"])
            if part not in seen:
                seconds += teacher[part]
                seen.add(part)
            per_client.append(seconds)
        if per_client:
            compute += sum(per_client)
            idle += sum(max(per_client) - s for s in per_client)
    return {
        "compute": compute + embed,
        "student": student,
        "idle": idle,
        "steps": float(sum(c["steps"] for r in rounds[1:] for c in r["clients"])),
        "bytes": float(sum(r["bytes-sent"] + r["bytes-received"] for r in rounds)),
    }


def run_seed(seed: int, args: argparse.Namespace, out: Path) -> dict[str, dict[str, float]]:
    """The three strategies on one seed's partitions; figures per strategy."""
    base = {
        "task": "tweeteval",
        "data-dir": str(Path(args.data_dir).resolve()),
        "num-server-rounds": args.rounds,
        "min-nodes": args.clients,
        "partitioner": "dirichlet",
        "dirichlet-alpha": args.dirichlet_alpha,
        "max-train-rows": args.max_train_rows,
        "server-val-rows": args.server_val_rows,
        "test-rows": args.test_rows,
        "teacher-epochs": args.teacher_epochs,
        "local-steps": args.local_steps,
        "seed": seed,
    }
    grid: InProcessGrid | None = None
    teacher: dict[int, float] = {}
    embed = 0.0
    figures = {}
    for name, overrides in STRATEGIES.items():
        results = out / f"seed{seed}-{name}"
        grid = run_in_process(
            {**base, **overrides, "results-dir": str(results)}, args.clients, grid=grid
        )
        (run_dir,) = results.iterdir()
        rounds = read_rounds(run_dir / "rounds.jsonl")
        summary = json.loads((run_dir / "summary.json").read_text())
        if not teacher:  # the first run fine-tuned every teacher and embedded every client
            teacher = {
                int(c["partition-id"]): float(c["teacher-seconds"]) for c in rounds[1]["clients"]
            }
            embed = sum(float(c.get("embed-seconds", 0.0)) for c in rounds[0]["clients"])
            missing = set(range(args.clients)) - set(teacher)
            if missing:
                raise SystemExit(f"fedavg round 1 lacks partitions {sorted(missing)}")
        figures[name] = {
            "accuracy": float(summary["final-global"]["accuracy"]),
            "rounds": float(summary["rounds"]),
            **account(rounds, teacher, embed),
        }
        print(
            f"seed {seed} {name:17s} acc {figures[name]['accuracy']:.3f} "
            f"rounds {summary['rounds']:2d} steps {figures[name]['steps']:6.0f} "
            f"compute {figures[name]['compute']:7.1f} s (student {figures[name]['student']:5.1f}) "
            f"idle {figures[name]['idle']:6.1f} s "
            f"bytes {figures[name]['bytes'] / 1e6:6.2f} MB  stop: {summary['stop-reason']}",
            flush=True,
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(SHARED / "tweeteval_sentiment"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--local-steps", type=int, default=40)
    parser.add_argument("--dirichlet-alpha", type=float, default=0.5)
    parser.add_argument("--max-train-rows", type=int, default=2400)
    parser.add_argument("--server-val-rows", type=int, default=500)
    parser.add_argument("--test-rows", type=int, default=0)
    parser.add_argument("--teacher-epochs", type=float, default=2.0)
    parser.add_argument("--out", default="", help="results directory (default: a temp dir)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="compare-"))
    per_seed = [run_seed(seed, args, out) for seed in args.seeds]

    print(
        f"\nmeans over seeds {args.seeds} ({args.clients} clients, Dirichlet "
        f"alpha={args.dirichlet_alpha}, up to {args.rounds} rounds); results in {out}"
    )
    print(
        "| strategy | final accuracy | rounds | client steps | client compute s "
        "| of which student training s | idle s | MB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    means: dict[str, dict[str, float]] = {}
    for name in STRATEGIES:
        rows = [s[name] for s in per_seed]
        means[name] = {k: statistics.mean(r[k] for r in rows) for k in rows[0]}
        m = means[name]
        spread = statistics.pstdev(r["accuracy"] for r in rows)
        print(
            f"| {name} | {m['accuracy']:.3f} ± {spread:.3f} | {m['rounds']:.1f} | "
            f"{m['steps']:.0f} | {m['compute']:.1f} | {m['student']:.1f} | {m['idle']:.1f} | "
            f"{m['bytes'] / 1e6:.2f} |"
        )
    guided, fedavg, ref = means["llm-guided"], means["fedavg"], means["llmqfl-reference"]
    saving = 1.0 - guided["compute"] / fedavg["compute"]
    gap = 100.0 * (guided["accuracy"] - fedavg["accuracy"])
    print(
        f"RESULT compute_saving={saving:.3f} accuracy_gap={gap:.2f} "
        f"student_compute_saving={1.0 - guided['student'] / fedavg['student']:.3f} "
        f"reference_compute_ratio={ref['compute'] / fedavg['compute']:.3f} "
        f"reference_accuracy_gap={100.0 * (ref['accuracy'] - fedavg['accuracy']):.2f}"
    )


if __name__ == "__main__":
    main()
