"""One hostile client of five: what it costs each aggregation, in test accuracy after 5 rounds.

The federation: the embedded genomic task, 5 IID clients, 5 rounds of
``--local-steps`` steps, in process. The hostile client (partition 4) trains
honestly and then sends its update scaled by ``--scale`` (100): a reply that
passes every check (right keys, shapes and dtypes, finite values, honest
counts), so only the aggregation can stop it. For each ``aggregation``
(fedavg, median, trimmed-mean, krum) one run with no hostile client and one
with it, all on the same nodes (teachers fine-tuned once, then read from the
node's cache), each scored once on the same test rows.

    python bench/robustness.py [--rounds 5 --scale 100]

Ends with ``RESULT fedavg_drop=<points> best_robust_drop=<points>``: the
test-accuracy drop (points) that the hostile client causes under fedavg, and
under the robust rule that loses least.
"""

from __future__ import annotations

import argparse
import json
import logging
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
from config.messages import STUDENT_KEY  # noqa: E402
from harness.inprocess import InProcessGrid, run_in_process  # noqa: E402

AGGREGATIONS = ("fedavg", "median", "trimmed-mean", "krum")
HOSTILE = 4


class ScaledUpdates:
    """The real ClientApp; while ``on``, partition 4 scales its train update by ``scale``."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.on = False

    def __call__(self, message: Message, context: Context) -> Message:
        reply = client_app(message, context)
        partition = int(context.node_config["partition-id"])
        if not self.on or partition != HOSTILE or message.metadata.message_type != "train":
            return reply
        if reply.has_error():
            return reply
        sent = message.content.array_records[STUDENT_KEY]
        trained = reply.content.array_records[STUDENT_KEY]
        scaled = {}
        for key, array in trained.items():
            start = sent[key].numpy().astype(np.float64)
            update = array.numpy().astype(np.float64) - start
            scaled[key] = Array((start + self.scale * update).astype(array.numpy().dtype))
        reply.content.array_records[STUDENT_KEY] = ArrayRecord(scaled)
        return reply


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-steps", type=int, default=20)
    parser.add_argument("--scale", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    out = Path(tempfile.mkdtemp(prefix="robustness-"))
    app = ScaledUpdates(args.scale)
    base: dict[str, Any] = {
        "num-server-rounds": args.rounds,
        "min-nodes": 5,
        "max-train-rows": 1500,
        "server-val-rows": 300,
        "test-rows": 1000,
        "local-steps": args.local_steps,
        "seed": args.seed,
    }
    grid: InProcessGrid | None = None
    accuracy: dict[tuple[str, int], float] = {}
    for aggregation in AGGREGATIONS:
        for hostile in (0, 1):
            app.on = bool(hostile)
            results = out / f"{aggregation}-{hostile}"
            config = {**base, "aggregation": aggregation, "results-dir": str(results)}
            grid = run_in_process(config, 5, client_app=app, grid=grid)  # type: ignore[arg-type]
            (run_dir,) = results.iterdir()
            summary = json.loads((run_dir / "summary.json").read_text())
            accuracy[aggregation, hostile] = float(summary["final-test"]["accuracy"])
            majority = summary["test-majority-rate"]
            print(
                f"{aggregation:12s} hostile {hostile}: test accuracy "
                f"{accuracy[aggregation, hostile]:.3f} (majority {majority:.3f})",
                flush=True,
            )
    print("\n| aggregation | no hostile client | 1 hostile of 5 (update x"
          f"{args.scale:g}) | drop, points |")  # fmt: skip
    print("|---|---|---|---|")
    drops = {}
    for aggregation in AGGREGATIONS:
        clean, attacked = accuracy[aggregation, 0], accuracy[aggregation, 1]
        drops[aggregation] = 100.0 * (clean - attacked)
        print(f"| {aggregation} | {clean:.3f} | {attacked:.3f} | {drops[aggregation]:.1f} |")
    best = min(drops[a] for a in AGGREGATIONS if a != "fedavg")
    print(f"RESULT fedavg_drop={drops['fedavg']:.1f} best_robust_drop={best:.1f}")


if __name__ == "__main__":
    main()
