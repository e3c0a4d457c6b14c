"""Growth with the number of clients: seconds per round and peak memory.

For each client count (default 10, 25, 50) a fresh Python process runs the
ServerApp against that many in-process clients (one at a time, in one
process, as ``harness.inprocess`` does) on TweetEval sentiment, IID,
``--rows-per-client`` rows each, for ``--rounds`` rounds with every client
training every round (FedAvg, ``local-steps`` 20). Each client fine-tunes its
LoRA teacher and embeds its rows once, in its first round, and reuses both
from its node state afterwards (the per-run teacher cache), so round 1 carries
the teachers' cost and rounds 2.. show the steady state.

Printed per client count: round 1 seconds, mean seconds of rounds 2..,
peak resident memory of the process (``ru_maxrss``) and bytes moved per round.

    python bench/scale.py [--clients 10 25 50] [--rounds 5] [--rows-per-client 40]

Ends with ``RESULT clients=<largest> peak_rss_mb=<n> seconds_per_round=<mean of
all rounds> steady_seconds_per_round=<mean of rounds 2..> first_round_s=<s>``.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from _child import report, run_child

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data" / "tweeteval_sentiment").resolve()


def one_run(clients: int, rounds: int, rows_per_client: int, data_dir: Path) -> dict[str, Any]:
    """Run the federation with ``clients`` in-process clients; measure it."""
    from harness.inprocess import run_in_process
    from server_app.results import read_rounds

    with tempfile.TemporaryDirectory() as results:
        started = time.perf_counter()
        run_in_process(
            {
                "task": "tweeteval",
                "data-dir": str(data_dir),
                "results-dir": results,
                "num-server-rounds": rounds,
                "min-nodes": clients,
                "min-train-nodes": clients,
                "max-train-rows": clients * rows_per_client,
                "server-val-rows": 200,
                "test-rows": 200,
                "partitioner": "iid",
                "strategy": "fedavg",
            },
            num_nodes=clients,
        )
        wall = time.perf_counter() - started
        (run_dir,) = Path(results).iterdir()
        records = read_rounds(run_dir / "rounds.jsonl")
        summary = json.loads((run_dir / "summary.json").read_text())
    trained = records[1:]
    assert all(len(r["clients"]) == clients for r in trained), "a client did not reply"
    return {
        "clients": clients,
        "rounds": len(trained),
        "query_s": records[0]["seconds"],
        "first_round_s": trained[0]["seconds"],
        "steady_s": sum(r["seconds"] for r in trained[1:]) / max(1, len(trained) - 1),
        "mean_round_s": sum(r["seconds"] for r in trained) / len(trained),
        "wall_s": wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "mb_per_round": sum(r["bytes-sent"] + r["bytes-received"] for r in trained)
        / len(trained)
        / 1e6,
        "final_accuracy": summary["final-global"]["accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows-per-client", type=int, default=40)
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    if args.one:
        result = one_run(args.one, args.rounds, args.rows_per_client, args.data_dir)
        report(result)
        return

    rows = []
    for clients in args.clients:
        rows.append(
            run_child(
                [
                    __file__,
                    "--one",
                    str(clients),
                    "--rounds",
                    str(args.rounds),
                    "--rows-per-client",
                    str(args.rows_per_client),
                    "--data-dir",
                    str(args.data_dir),
                ],
                f"scale run with {clients} clients",
            )
        )
        row = rows[-1]
        print(
            f"{clients:>3} clients: round 1 {row['first_round_s']:7.1f} s, "
            f"rounds 2-{row['rounds']} {row['steady_s']:6.2f} s/round, "
            f"peak RSS {row['peak_rss_mb']:7.0f} MB, {row['mb_per_round']:.2f} MB/round, "
            f"final acc {row['final_accuracy']:.3f}",
            flush=True,
        )

    print(
        "\n| clients | round 1 s (teachers) | s/round, rounds 2.. | s/round, all | "
        "peak RSS MB | MB moved/round |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['clients']} | {row['first_round_s']:.1f} | {row['steady_s']:.2f} | "
            f"{row['mean_round_s']:.1f} | {row['peak_rss_mb']:.0f} | {row['mb_per_round']:.2f} |"
        )
    last = rows[-1]
    print(
        f"RESULT clients={last['clients']} peak_rss_mb={last['peak_rss_mb']:.0f} "
        f"seconds_per_round={last['mean_round_s']:.2f} "
        f"steady_seconds_per_round={last['steady_s']:.2f} "
        f"first_round_s={last['first_round_s']:.1f}"
    )


if __name__ == "__main__":
    main()
