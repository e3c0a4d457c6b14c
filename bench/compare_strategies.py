"""llm-guided against fixed-budget FedAvg on a heterogeneous federation: compute, idle, accuracy.

The federation: ``--task`` (TweetEval sentiment, or the genomic promoters),
``--clients`` clients (8) with Dirichlet
(alpha 0.5) label partitions of unequal sizes, and unequal speeds: by node
config, partition 0 is a slow quantum site (``slowdown`` 6: its every reported
second counts six times, emulating a node six times slower, since a real
``fake:FakeManilaV2`` student would make this bench run for hours), partition
1 is 3 times slower and partition 2 twice; the others run at this machine's
speed. A small untimed warm-up run comes first. Each seed runs, in process
and one client at a time, with the teacher cache off so that every run
fine-tunes its own teachers and pays for them:

- ``fedavg``: every client trains ``--local-steps`` steps every round for
  ``--rounds`` rounds, teachers fine-tuned for ``teacher-epochs`` in round 1
  (the baseline);
- ``llm-guided``: :data:`GUIDED`, llm-guided's defaults spelled out: the
  federated teacher trained in 1-epoch chunks (at most ``teacher-max-steps``
  steps in all) while each average beats the best teacher yet on the
  server's validation rows, the pooled probe included
  (``teacher-policy=validated``), FedAvg's student budgets, aggregation and
  rounds, and the mean of the last 3 rounds' students;
- one run per lever of llm-guided with that lever switched off (the validated
  teacher: ``teacher-epochs`` in each federated round, as FedAvg; the teacher
  cap; the mean of the last rounds);
- with ``--only NAME ...``: fedavg, llm-guided and the named runs, among them
  :data:`EXTRA` (``guided-student-caps``: at most ``student-max-epochs`` 5
  passes over a client's rows and a median deadline on measured seconds;
  ``llmqfl-reference``: the published code's rules;
  ``guided-rest``: clients that match their teacher rest;
  ``guided-adaptive-steps``: the adaptive ratio rule on;
  ``guided-fednova``: FedNova aggregation;
  ``guided-with-stop``: the noise-aware stop on;
  ``guided-steered-chunks``: teachers in 1-epoch chunks while they improve;
  ``guided-best-model``: the best round's student on the validation split;
  ``guided-utility``: Oort-style selection of half the nodes by their gap to
  their teacher and their speed; ``guided-random-half``: the same places drawn
  at random; ``guided-teacher-stop``: the stop when the gap
  to the teachers is within its noise; ``guided-teacher-levers``: both).

Per run, from the apps' own measurements: client compute seconds (teacher,
embeddings, student and the rest of every reply, the statistics query
included), idle seconds as a parallel deployment would see them (per round,
the slowest participant's seconds minus each participant's), steps, rounds,
bytes, the final test accuracy, and compute-to-accuracy: the client compute
spent until the run's validation accuracy first reached FedAvg's final
validation accuracy minus 1 point.

    python bench/compare_strategies.py --task tweeteval --seeds 1 2 3 4 5
    python bench/compare_strategies.py --task genomic --seeds 1 2 3 4 5 --only

With ``--out DIR --reuse`` a seed's run already in ``DIR`` is read instead of run
again, if its stored configuration has the same value for every key the bench
sets: an interrupted bench resumes where it stopped.

Ends with ``RESULT task=<t> compute_saving=<share of fedavg's client compute
saved> idle_saving=<share of fedavg's idle seconds saved> accuracy_gap=<llm-guided
minus fedavg test accuracy, points, mean over seeds> gap_low= gap_high=<its paired
95% t interval over seeds> reached=<share of seeds in which llm-guided's
validation accuracy reached fedavg's final validation accuracy minus 1 point>
rounds_saved=<fedavg's rounds minus llm-guided's, mean over seeds>`` and a line
per lever.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.inprocess import run_in_process  # noqa: E402
from server_app.results import read_rounds  # noqa: E402

SHARED = REPO / ".." / "shared" / "data"
#: ``--task``: its data directory and the teacher's max-length.
TASKS = {
    "tweeteval": (SHARED / "tweeteval_sentiment", 64),
    "genomic": (SHARED / "genomic_nontata_promoters", 128),
}
#: The nodes' emulated speeds (node config ``slowdown``), by partition.
SLOWDOWNS = {0: 6.0, 1: 3.0, 2: 2.0}
#: llm-guided's defaults, spelled out (tests/config checks that they are the defaults).
GUIDED: dict[str, Any] = {
    "strategy": "llm-guided",
    "selection": "all",
    "steps-policy": "fixed",
    "teacher-policy": "validated",
    "teacher-chunk-epochs": 1.0,
    "teacher-max-steps": 48,
    "student-max-epochs": 0.0,
    "deadline": "off",
    "termination": "max-rounds",
    "final-model": "average",
    "final-average-rounds": 3,
    "aggregation": "fedavg",
}
#: The noise-aware stop, as tried (see the README).
STOP: dict[str, Any] = {
    "termination": "noise-plateau",
    "stop-patience": 3,
    "stop-min-rounds": 6,
    "stop-noise-factor": 1.0,
}
STRATEGIES: dict[str, dict[str, Any]] = {
    "fedavg": {"strategy": "fedavg"},
    "llm-guided": GUIDED,
    # llm-guided with one lever off each (the lever's contribution).
    "guided-teacher-once": {**GUIDED, "teacher-policy": "once"},  # teacher-epochs, not judged
    "guided-no-teacher-cap": {**GUIDED, "teacher-max-steps": 0},
    # the same rounds as llm-guided; the last round's student instead of the mean of 3
    "guided-last-model": {**GUIDED, "final-model": "last"},
}
#: Run only when named in ``--only``.
EXTRA: dict[str, dict[str, Any]] = {
    # the student caps of the earlier configuration: at most 5 passes over a client's
    # rows, and a median deadline on measured seconds
    "guided-student-caps": {**GUIDED, "student-max-epochs": 5.0, "deadline": "median"},
    "llmqfl-reference": {"strategy": "llmqfl-reference", "steps-policy": "adaptive"},
    "guided-rest": {**GUIDED, "skip-epsilon": 0.0},
    "guided-adaptive-steps": {**GUIDED, "steps-policy": "adaptive"},
    "guided-fednova": {**GUIDED, "aggregation": "fednova"},
    "guided-with-stop": {**GUIDED, **STOP},
    # the earlier steered teachers: 1-epoch chunks while they improve, no step cap
    "guided-steered-chunks": {
        **GUIDED,
        "teacher-policy": "steered",
        "teacher-chunk-epochs": 1.0,
        "teacher-min-delta": 0.01,
        "teacher-max-steps": 0,
    },
    # llm-guided ending with the best round on the validation split instead of the mean of 3
    "guided-best-model": {**GUIDED, "final-model": "best-val"},
    # the teacher-reading levers: Oort-style selection of half the nodes after the
    # federated teacher rounds, and the stop on the gap to the teachers
    "guided-utility": {**GUIDED, "selection": "utility", "fraction-train": 0.5},
    # the same places drawn at random (with the floor): what the teacher signal adds
    "guided-random-half": {
        **GUIDED,
        "selection": "utility",
        "fraction-train": 0.5,
        "selection-explore": 1.0,
    },
    "guided-teacher-stop": {**GUIDED, "termination": "teacher-noise", "stop-min-rounds": 6},
    "guided-teacher-levers": {
        **GUIDED,
        "selection": "utility",
        "fraction-train": 0.5,
        "termination": "teacher-noise",
        "stop-min-rounds": 6,
    },
}


def account(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """Compute and idle seconds, steps and bytes of one run (see the module docstring)."""
    compute = idle = teacher = 0.0
    for record in rounds:
        seconds = [float(c.get("compute-seconds", 0.0)) for c in record["clients"]]
        teacher += sum(float(c.get("teacher-seconds", 0.0)) for c in record["clients"])
        if seconds:
            compute += sum(seconds)
            idle += sum(max(seconds) - s for s in seconds)
    return {
        "compute": compute,
        "teacher": teacher,
        "idle": idle,
        "steps": float(sum(c.get("steps", 0) for r in rounds[1:] for c in r["clients"])),
        "bytes": float(
            sum(
                r["bytes-sent"]
                + r["bytes-received"]
                + r.get("teacher-bytes-sent", 0)
                + r.get("teacher-bytes-received", 0)
                for r in rounds
            )
        ),
    }


def compute_to_accuracy(rounds: list[dict[str, Any]], target: float) -> float:
    """Client compute until the validation accuracy first reached ``target`` (NaN: never)."""
    spent = 0.0
    for record in rounds:
        spent += sum(float(c.get("compute-seconds", 0.0)) for c in record["clients"])
        if record["round"] >= 1 and record["val"]["accuracy"] >= target:
            return spent
    return math.nan


def paired_interval(gaps: list[float]) -> tuple[float, float]:
    """The paired 95% t interval of the mean of per-seed ``gaps`` (NaN with one seed)."""
    if len(gaps) < 2:
        return math.nan, math.nan
    from scipy.stats import t

    half = float(t.ppf(0.975, len(gaps) - 1)) * statistics.stdev(gaps) / math.sqrt(len(gaps))
    mean = statistics.mean(gaps)
    return mean - half, mean + half


def warm_up(args: argparse.Namespace, out: Path) -> None:
    """One small untimed run first, so that loading libraries and models from disk is
    not charged to whichever strategy happens to run first."""
    config = {
        "strategy": "fedavg",
        "task": args.task,
        "data-dir": str(Path(args.data_dir).resolve()),
        "num-server-rounds": 1,
        "max-train-rows": 200,
        "server-val-rows": 50,
        "test-rows": 50,
        "teacher-epochs": 0.2,
        "teacher-cache": False,
        "results-dir": str(out / "warm-up"),
    }
    run_in_process(config, 2)


def run_seed(seed: int, args: argparse.Namespace, out: Path) -> dict[str, dict[str, float]]:
    """Every strategy on one seed's partitions; figures per strategy."""
    base = {
        "task": args.task,
        "data-dir": str(Path(args.data_dir).resolve()),
        "max-length": TASKS[args.task][1],
        "num-server-rounds": args.rounds,
        "min-nodes": args.clients,
        "partitioner": "dirichlet",
        "dirichlet-alpha": args.dirichlet_alpha,
        "max-train-rows": args.max_train_rows,
        "server-val-rows": args.server_val_rows,
        "test-rows": args.test_rows,
        "teacher-epochs": args.teacher_epochs,
        "local-steps": args.local_steps,
        "teacher-cache": False,  # every run fine-tunes its own teachers, and pays for them
        "seed": seed,
    }
    nodes = {p: {"slowdown": s} for p, s in SLOWDOWNS.items()}
    runs = {}
    for name, overrides in STRATEGIES.items():
        results = out / f"seed{seed}-{name}"
        config = {**base, **overrides, "results-dir": str(results)}
        if not (args.reuse and _finished_run(results, config)):
            run_in_process(config, args.clients, node_configs=nodes)
        (run_dir,) = results.iterdir()
        runs[name] = (
            read_rounds(run_dir / "rounds.jsonl"),
            json.loads((run_dir / "summary.json").read_text()),
        )
    target = runs["fedavg"][1]["final-val"]["accuracy"] - 0.01
    figures = {}
    for name, (rounds, summary) in runs.items():
        figures[name] = {
            "accuracy": float(summary["final-test"]["accuracy"]),
            "rounds": float(summary["rounds"]),
            "to_target": compute_to_accuracy(rounds, target),
            **account(rounds),
        }
        f = figures[name]
        print(
            f"seed {seed} {name:20s} test acc {f['accuracy']:.3f} rounds {f['rounds']:2.0f} "
            f"steps {f['steps']:5.0f} compute {f['compute']:7.1f} s (teacher {f['teacher']:6.1f}) "
            f"idle {f['idle']:7.1f} s to-target {f['to_target']:7.1f} s "
            f"{f['bytes'] / 1e6:6.2f} MB  stop: {summary['stop-reason']}",
            flush=True,
        )
    return figures


def _finished_run(results: Path, config: dict[str, Any]) -> bool:
    """Whether ``results`` holds one finished run whose stored configuration has
    ``config``'s value for every key the bench sets (``--reuse``; the defaults are not
    compared). A run that differs is an error: its folder is the user's to move."""
    runs = sorted(results.glob("*/summary.json"))
    if not results.exists() or not any(results.iterdir()):
        return False
    if len(runs) != 1:
        raise SystemExit(f"--reuse: {results} holds no single finished run; move it away")
    stored = json.loads((runs[0].parent / "config.json").read_text())
    paths = ("data-dir",)
    differs = [
        key
        for key, value in config.items()
        if key != "results-dir"
        and (
            Path(stored.get(key, "")).resolve() != Path(value).resolve()
            if key in paths
            else stored.get(key) != value
        )
    ]
    if differs:
        raise SystemExit(f"--reuse: {runs[0].parent} was run with other {', '.join(differs)}")
    logging.warning("--reuse: reading %s instead of running it again", runs[0].parent)
    return True


def _table(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    print(
        "| strategy | test accuracy | rounds | client steps | client compute s | teacher s | "
        "idle s | compute to target s | MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    means: dict[str, dict[str, float]] = {}
    for name in STRATEGIES:
        rows = [s[name] for s in per_seed]
        means[name] = {k: statistics.mean(r[k] for r in rows) for k in rows[0]}
        m = means[name]
        spread = statistics.stdev(r["accuracy"] for r in rows) if len(rows) > 1 else 0.0
        reached = [r["to_target"] for r in rows if math.isfinite(r["to_target"])]
        target = (
            f"{statistics.mean(reached):.1f} ({len(reached)}/{len(rows)})" if reached else "never"
        )
        print(
            f"| {name} | {m['accuracy']:.3f} ± {spread:.3f} | {m['rounds']:.1f} | "
            f"{m['steps']:.0f} | {m['compute']:.1f} | {m['teacher']:.1f} | {m['idle']:.1f} | "
            f"{target} | {m['bytes'] / 1e6:.2f} |"
        )
    return means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="tweeteval")
    parser.add_argument("--data-dir", default="", help="default: the task's shared folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--local-steps", type=int, default=40)
    parser.add_argument("--dirichlet-alpha", type=float, default=0.5)
    parser.add_argument("--max-train-rows", type=int, default=2400)
    parser.add_argument("--server-val-rows", type=int, default=500)
    parser.add_argument("--test-rows", type=int, default=1000)
    parser.add_argument("--teacher-epochs", type=float, default=2.0)
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="run fedavg, llm-guided and only these (names from STRATEGIES or EXTRA)",
    )
    parser.add_argument("--out", default="", help="results directory (default: a temp dir)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="read a seed's finished run already in --out (same values for every key this "
        "bench sets) instead of running it again: resumes an interrupted bench",
    )
    args = parser.parse_args()
    args.data_dir = args.data_dir or str(TASKS[args.task][0])
    if args.only is not None:
        chosen = {"fedavg", "llm-guided", *args.only}
        STRATEGIES.update({n: c for n, c in EXTRA.items() if n in chosen})
        for name in [n for n in STRATEGIES if n not in chosen]:
            del STRATEGIES[name]
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="compare-"))
    warm_up(args, out)
    per_seed = [run_seed(seed, args, out) for seed in args.seeds]
    print(
        f"\nmeans over seeds {args.seeds} ({args.clients} clients, Dirichlet "
        f"alpha={args.dirichlet_alpha}, slowdowns {SLOWDOWNS}, up to {args.rounds} rounds); "
        f"results in {out}"
    )
    means = _table(per_seed)
    fedavg, guided = means["fedavg"], means["llm-guided"]
    gaps = [100.0 * (s["llm-guided"]["accuracy"] - s["fedavg"]["accuracy"]) for s in per_seed]
    low, high = paired_interval(gaps)
    reached = statistics.mean(math.isfinite(s["llm-guided"]["to_target"]) for s in per_seed)
    saved = statistics.mean(s["fedavg"]["rounds"] - s["llm-guided"]["rounds"] for s in per_seed)
    print(
        f"RESULT task={args.task} seeds={len(per_seed)} "
        f"compute_saving={1.0 - guided['compute'] / fedavg['compute']:.3f} "
        f"idle_saving={1.0 - guided['idle'] / fedavg['idle']:.3f} "
        f"accuracy_gap={statistics.mean(gaps):.2f} gap_low={low:.2f} gap_high={high:.2f} "
        f"reached={reached:.2f} rounds_saved={saved:.1f}"
    )
    for name in [n for n in STRATEGIES if n.startswith("guided-")]:
        lever = means[name]
        print(
            f"RESULT task={args.task} lever={name} "
            f"compute_saving={1.0 - lever['compute'] / fedavg['compute']:.3f} "
            f"idle_saving={1.0 - lever['idle'] / fedavg['idle']:.3f} "
            f"accuracy_gap={100.0 * (lever['accuracy'] - fedavg['accuracy']):.2f}"
        )


if __name__ == "__main__":
    main()
