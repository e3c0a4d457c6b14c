"""One hostile client of five: what it costs, in test accuracy after 5 rounds.

The federation: the embedded genomic task, 5 IID clients, 5 rounds of
``--local-steps`` steps, in process, on the same nodes throughout (local
teachers fine-tuned once, then read from the node's cache), each run scored
once on the same test rows. The hostile client is partition 4:

- ``update``: it trains honestly and then sends its student update scaled by
  ``--scale`` (100): a reply that passes every check (right keys, shapes and
  dtypes, finite values, honest counts), so only the aggregation can stop it.
  For each ``aggregation`` (fedavg, median, trimmed-mean, krum), one run with
  no hostile client and one with it.
- ``stats``: under the defaults, its ``query.stats`` moment sums are scaled
  by ``--scale``; against the defaults' run with no hostile client.
- ``teachers``: with ``teacher-federation=fedavg`` (otherwise the defaults),
  its teacher adapters are NaN in its odd train replies and scaled by
  ``--scale`` in its even ones; one run with no hostile client and one with it.

    python bench/robustness.py [--rounds 5 --scale 100 --parts update stats teachers]

Ends with ``RESULT fedavg_drop=<points> best_robust_drop=<points>
stats_poison_drop=<points> teacher_fed_drop=<points>``: the test-accuracy
drop (points) that the hostile client causes: its update under fedavg and
under the robust rule that loses least, its statistics, its teacher adapters.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from client_app.app import app as client_app  # noqa: E402
from config.messages import STATS_KEY, STUDENT_KEY, TEACHER_KEY  # noqa: E402
from harness.inprocess import InProcessGrid, run_in_process  # noqa: E402

AGGREGATIONS = ("fedavg", "median", "trimmed-mean", "krum")
PARTS = ("update", "stats", "teachers")
HOSTILE = 4


class Hostile:
    """The real ClientApp; partition 4 tampers with its replies as ``attack`` says
    (``update``, ``stats``, ``teachers``: see the module; ``""``: none)."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.attack = ""
        self.trained = 0

    def __call__(self, message: Message, context: Context) -> Message:
        reply = client_app(message, context)
        partition = int(context.node_config["partition-id"])
        if not self.attack or partition != HOSTILE or reply.has_error():
            return reply
        kind = message.metadata.message_type
        if self.attack == "stats" and kind == "query.stats":
            moments = reply.content.array_records[STATS_KEY]
            reply.content.array_records[STATS_KEY] = _scaled(moments, self.scale, skip="n")
        elif self.attack == "update" and kind == "train":
            sent = message.content.array_records[STUDENT_KEY]
            trained = reply.content.array_records[STUDENT_KEY]
            scaled = {}
            for key, array in trained.items():
                start = sent[key].numpy().astype(np.float64)
                update = array.numpy().astype(np.float64) - start
                scaled[key] = Array((start + self.scale * update).astype(array.numpy().dtype))
            reply.content.array_records[STUDENT_KEY] = ArrayRecord(scaled)
        elif self.attack == "teachers" and TEACHER_KEY in reply.content.array_records:
            self.trained += 1
            adapters = reply.content.array_records[TEACHER_KEY]
            scale = math.nan if self.trained % 2 else self.scale
            reply.content.array_records[TEACHER_KEY] = _scaled(adapters, scale)
        return reply


def _scaled(record: ArrayRecord, scale: float, skip: str = "") -> ArrayRecord:
    """``record`` with every array but ``skip`` multiplied by ``scale`` (dtypes kept)."""
    out = {}
    for key, array in record.items():
        values = array.numpy()
        out[key] = Array(values if key == skip else (values * scale).astype(values.dtype))
    return ArrayRecord(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-steps", type=int, default=20)
    parser.add_argument("--scale", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    out = Path(tempfile.mkdtemp(prefix="robustness-"))
    app = Hostile(args.scale)
    base: dict[str, Any] = {
        "strategy": "fedavg",  # the attacks' target; the robust rules replace its mean
        "num-server-rounds": args.rounds,
        "min-nodes": 5,
        "max-train-rows": 1500,
        "server-val-rows": 300,
        "test-rows": 1000,
        "local-steps": args.local_steps,
        "seed": args.seed,
    }
    grid: InProcessGrid | None = None

    def accuracy(name: str, attack: str, **keys: Any) -> float:
        nonlocal grid
        app.attack, app.trained = attack, 0
        results = out / f"{name}-{attack or 'clean'}"
        config = {**base, **keys, "results-dir": str(results)}
        grid = run_in_process(config, 5, client_app=app, grid=grid)  # type: ignore[arg-type]
        (run_dir,) = results.iterdir()
        summary = json.loads((run_dir / "summary.json").read_text())
        found = float(summary["final-test"]["accuracy"])
        majority = summary["test-majority-rate"]
        print(f"{name:14s} {attack or 'no attack':9s}: test accuracy {found:.3f} "
              f"(majority {majority:.3f})", flush=True)  # fmt: skip
        return found

    results: dict[str, str] = {}
    clean = accuracy("fedavg", "")
    if "update" in args.parts:
        drops = {"fedavg": 100.0 * (clean - accuracy("fedavg", "update"))}
        for aggregation in AGGREGATIONS[1:]:
            no_attack = accuracy(aggregation, "", aggregation=aggregation)
            drops[aggregation] = 100.0 * (
                no_attack - accuracy(aggregation, "update", aggregation=aggregation)
            )
        print("\n| aggregation | drop (points) with one hostile update of 5 |\n|---|---|")
        for aggregation, drop in drops.items():
            print(f"| {aggregation} | {drop:.1f} |")
        results["fedavg_drop"] = f"{drops['fedavg']:.1f}"
        results["best_robust_drop"] = f"{min(d for a, d in drops.items() if a != 'fedavg'):.1f}"
    if "stats" in args.parts:
        results["stats_poison_drop"] = f"{100.0 * (clean - accuracy('defaults', 'stats')):.1f}"
    if "teachers" in args.parts:
        federated = {"teacher-federation": "fedavg"}
        no_attack = accuracy("teacher-fedavg", "", **federated)
        attacked = accuracy("teacher-fedavg", "teachers", **federated)
        results["teacher_fed_drop"] = f"{100.0 * (no_attack - attacked):.1f}"
    print("RESULT " + " ".join(f"{k}={v}" for k, v in results.items()))


if __name__ == "__main__":
    main()
