"""Where a simulated run's time goes: per-phase seconds and the framework's share.

Runs the app with ``flwr run`` on Flower's simulation engine (one client at a
time, each with both cores), then splits the wall time from submission to
``finished:completed`` into the phases the apps measure themselves:

- teacher fine-tune (clients, first participation),
- embeddings (clients' frozen-base embeddings, the server split's),
- student training (clients),
- other client compute (data loading, local validation, serialisation of replies),
- aggregation and global evaluation (server),
- framework overhead: the rest (SuperLink, Ray start-up, scheduling, transport).

    python bench/round_breakdown.py --clients 3 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from harness.launch import flwr_run
from server_app.results import read_rounds

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(SHARED / "tweeteval_sentiment"))
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-train-rows", type=int, default=900)
    args = parser.parse_args()
    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    results = Path(tempfile.mkdtemp(prefix="breakdown-"))
    outcome = flwr_run(
        str(Path(__file__).resolve().parents[1]),
        run_config={
            "strategy": "fedavg",  # teacher-epochs in round 1, as the phases above say
            "task": "tweeteval",
            "data-dir": str(Path(args.data_dir).resolve()),
            "results-dir": str(results),
            "num-server-rounds": args.rounds,
            "min-nodes": args.clients,
            "max-train-rows": args.max_train_rows,
            "server-val-rows": 400,
            "test-rows": 400,
        },
        federation_config={"num-supernodes": args.clients, "client-resources-num-cpus": 2},
    )
    if not outcome.completed:
        raise SystemExit(f"run {outcome.run_id} ended {outcome.status}")
    (run_dir,) = results.iterdir()
    rounds = read_rounds(run_dir / "rounds.jsonl")
    summary = json.loads((run_dir / "summary.json").read_text())
    clients = [c for r in rounds for c in r["clients"]]

    def total(key: str) -> float:
        return sum(float(c.get(key, 0.0)) for c in clients)

    phases = {
        "teacher_finetune": total("teacher-seconds"),
        "embeddings": total("embed-seconds") + summary["server-embed-seconds"],
        "student_training": total("student-seconds"),
        "client_other": total("compute-seconds")
        - total("teacher-seconds")
        - total("embed-seconds")
        - total("student-seconds"),
        "aggregation_evaluation": sum(
            r.get("aggregate-seconds", 0.0) + r.get("evaluate-seconds", 0.0) for r in rounds
        ),
    }
    wall = outcome.seconds
    phases["framework_overhead"] = wall - sum(phases.values())
    print(f"run {outcome.run_id}: {args.clients} clients, {args.rounds} rounds, {wall:.1f} s wall")
    for name, seconds in phases.items():
        print(f"  {name:<24} {seconds:8.2f} s  {seconds / wall:6.1%}")
    share = phases["framework_overhead"] / wall
    print(
        f"RESULT overhead_share={share:.3f} wall_s={wall:.1f} "
        + " ".join(f"{k}_s={v:.2f}" for k, v in phases.items())
    )


if __name__ == "__main__":
    main()
