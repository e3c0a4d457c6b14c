"""Seconds per round on Flower's deployment engine: a SuperLink and 3 SuperNodes on this machine.

Starts the same deployment as ``tests/deploy`` (``harness.deployment.Cluster``:
``flower-superlink``, three ``flower-supernode`` processes with process
isolation and a ``flower-superexec`` beside each, in network namespaces when
run as root), submits a small run (TweetEval, 150 rows, 5 student steps per
round) for ``--rounds`` rounds and reads each round's wall seconds, as the
server measured them, from ``rounds.jsonl``. Rounds after the first train
only the student, so their seconds are the deployment engine's overhead per
round plus about a second of work. ClientApps are forked from a warm process
(``client_app.forkserver``) unless ``--cold``.

    python bench/deploy_rounds.py --rounds 5
    python bench/deploy_rounds.py --rounds 5 --cold

Ends with ``RESULT first_round_s=... seconds_per_round=<mean of rounds 2..N>
max_round_s=<slowest of rounds 2..N> overhead_per_round=<mean of rounds 2..N of the
round's seconds minus its slowest ClientApp's own handler seconds>``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.deployment import Cluster  # noqa: E402
from harness.launch import COMPLETED  # noqa: E402
from server_app.results import read_rounds  # noqa: E402

DATA = (REPO / ".." / "shared" / "data" / "tweeteval_sentiment").resolve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--cold",
        action="store_true",
        help="stock flower-superexec: a fresh ClientApp process per message, 1 s task polling",
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="deploy-rounds-"))
    cluster = Cluster(root / "cluster", warm=not args.cold)
    try:
        cluster.start()
        results = root / "results"
        outcome = cluster.run(
            {
                "strategy": "fedavg",
                "task": "tweeteval",
                "data-dir": str(DATA),
                "results-dir": str(results),
                "num-server-rounds": args.rounds,
                "min-nodes": 3,
                "max-train-rows": 150,
                "server-val-rows": 100,
                "test-rows": 100,
                "local-steps": 5,
                "teacher-epochs": 1.0,
                "node-wait-seconds": 120.0,
            }
        )
        if outcome.status != COMPLETED:
            sys.exit(f"run ended {outcome.status}:\n{cluster.logs()[-4000:]}")
    finally:
        cluster.stop()
    (run_dir,) = results.iterdir()
    rounds = [r for r in read_rounds(run_dir / "rounds.jsonl") if r["round"] >= 1]
    seconds = [r["seconds"] for r in rounds]
    # The slowest client's own handler time is the round's work; the rest is overhead.
    work = [max(c["compute-seconds"] for c in r["clients"]) for r in rounds]
    print(f"network: {cluster.network}; ClientApps {'cold' if args.cold else 'forked warm'}")
    for number, (total, busy) in enumerate(zip(seconds, work, strict=True), start=1):
        print(f"round {number}: {total:.1f} s, of which the slowest ClientApp's work {busy:.1f} s")
    later = seconds[1:]
    overhead = [total - busy for total, busy in zip(seconds[1:], work[1:], strict=True)]
    print(
        f"RESULT first_round_s={seconds[0]:.1f} "
        f"seconds_per_round={statistics.mean(later):.2f} max_round_s={max(later):.2f} "
        f"overhead_per_round={statistics.mean(overhead):.2f}"
    )


if __name__ == "__main__":
    main()
