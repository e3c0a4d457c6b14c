"""A whole federation in process: real data, real LoRA teachers, real circuits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from roundoff import approx_floats

from harness.inprocess import InProcessGrid, run_in_process
from server_app.results import read_rounds
from server_app.round_record import cost_rows


def _run_dir(results: Path) -> Path:
    (run_dir,) = results.iterdir()
    return run_dir


BASE = {
    "strategy": "fedavg",  # the runs below that test llm-guided name it
    "num-server-rounds": 2,
    "min-nodes": 3,
    "max-train-rows": 900,
    "server-val-rows": 400,
    "test-rows": 400,
    "teacher-epochs": 2.0,
    "local-steps": 40,
    "seed": 7,
    # Local teachers, trained once: the first run fine-tunes every teacher (asserted below);
    # the runs that reuse its grid start with fresh node state, as in Flower, and find the
    # teachers in the disk cache. (Federated teachers: tests/server_app/test_teacher_federation.py.)
    "teacher-federation": "local",
}


@pytest.fixture(scope="module")
def tweeteval_fedavg(
    tmp_path_factory: pytest.TempPathFactory, shared_data: Path
) -> tuple[Path, InProcessGrid]:
    results = tmp_path_factory.mktemp("results")
    grid = run_in_process(
        {
            **BASE,
            "task": "tweeteval",
            "data-dir": str(shared_data / "tweeteval_sentiment"),
            "results-dir": str(results),
        },
        num_nodes=3,
    )
    return _run_dir(results), grid


@pytest.fixture(scope="module")
def tweeteval_run(tweeteval_fedavg: tuple[Path, InProcessGrid]) -> Path:
    return tweeteval_fedavg[0]


@pytest.fixture(scope="module")
def guided_run(
    tmp_path_factory: pytest.TempPathFactory,
    shared_data: Path,
    tweeteval_fedavg: tuple[Path, InProcessGrid],
) -> Path:
    """llm-guided on the same three nodes (their teachers are cached from the FedAvg run)."""
    results = tmp_path_factory.mktemp("guided")
    run_in_process(
        {
            **BASE,
            "task": "tweeteval",
            "data-dir": str(shared_data / "tweeteval_sentiment"),
            "results-dir": str(results),
            "strategy": "llm-guided",
            "teacher-policy": "once",  # local teachers
            "num-server-rounds": 6,
            "min-nodes": 2,
            "fraction-train": 0.67,  # k = 2 of 3
            "selection": "closest",
            "steps-policy": "adaptive",
            "local-steps": 20,
            "min-steps": 5,
            "max-steps": 60,
            "termination": "teacher-gap",
            "stop-epsilon": 0.3,
            "stop-min-rounds": 3,
            "metrics-logger": "tensorboard",
        },
        num_nodes=3,
        grid=tweeteval_fedavg[1],
    )
    return _run_dir(results)


def test_results_directory_is_complete(tweeteval_run: Path) -> None:
    for name in ("config.json", "rounds.jsonl", "summary.json", "accuracy.png", "loss.png"):
        assert (tweeteval_run / name).stat().st_size > 0, name
    rounds = read_rounds(tweeteval_run / "rounds.jsonl")
    assert [r["round"] for r in rounds] == [0, 1, 2]
    for record in rounds[1:]:
        assert record["participants"] == [0, 1, 2]
        assert {c["partition-id"] for c in record["clients"]} == {0, 1, 2}
        assert all(c["steps"] == 40 for c in record["clients"])
        assert record["bytes-sent"] > 0 and record["bytes-received"] > 0
    summary = json.loads((tweeteval_run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds"] == 2
    assert summary["total-client-steps"] == 3 * 2 * 40


def test_student_learns_beyond_majority(tweeteval_run: Path) -> None:
    summary = json.loads((tweeteval_run / "summary.json").read_text())
    assert summary["final-val"]["accuracy"] > summary["val-majority-rate"]
    assert summary["final-val"]["loss"] < summary["initial-val"]["loss"]
    assert summary["final-test"]["accuracy"] > summary["test-majority-rate"]


def test_every_teacher_was_fine_tuned(tweeteval_run: Path) -> None:
    rounds = read_rounds(tweeteval_run / "rounds.jsonl")
    first = rounds[1]["clients"]
    assert len(first) == 3
    for client in first:
        # teacher-keep-best: never worse than the probe it started from on validation rows
        # (a kept start is scored again: equal to float32 round-off)
        assert client["teacher-val-loss"] <= client["teacher-untrained-val-loss"] + 1e-6
        assert client["teacher-seconds"] > 0 and client["teacher-steps"] > 0
    # The teacher is cached: round 2 does not fine-tune again.
    assert all(c["teacher-seconds"] == 0 for c in rounds[2]["clients"])


def test_llm_guided_selects_sets_budgets_and_stops_early(guided_run: Path) -> None:
    rounds = read_rounds(guided_run / "rounds.jsonl")[1:]
    summary = json.loads((guided_run / "summary.json").read_text())
    assert summary["strategy"] == "LLMGuidedStrategy"
    # Stopped by its termination rule before max rounds, with the reason written.
    assert summary["rounds"] == len(rounds) == 3 < 6
    assert summary["stop-reason"].startswith("teacher-gap: mean student-teacher val loss gap")
    last = rounds[-1]["clients"]
    gap = sum(c["student-val-loss"] - c["teacher-val-loss"] for c in last) / len(last)
    assert gap <= 0.3
    # k = 2 of 3 train each round (one is left out); unmeasured clients go first, so all
    # three are measured by round 2; after that the 2 closest to the server loss train.
    assert all(len(r["participants"]) == 2 for r in rounds)
    assert all(r["selection-reason"].startswith("closest 2") for r in rounds)
    assert set(rounds[0]["participants"]) | set(rounds[1]["participants"]) == {0, 1, 2}
    # Budgets start at local-steps, then follow each client's student/teacher loss ratio.
    assert set(rounds[0]["budgets"].values()) == {20}
    later = [r["budgets"] for r in rounds[1:]]
    assert any(len(set(b.values())) > 1 for b in later), later
    seen: set[int] = set()
    for record in rounds:
        for client in record["clients"]:
            part = client["partition-id"]
            assert client["steps"] == record["budgets"][str(part)]
            expected = "adaptive: ratio" if part in seen else "first participation"
            assert client["budget-reason"].startswith(expected)
        seen |= set(record["participants"])
    # Every client ran exactly its budget; the plots of budgets and participation exist.
    assert summary["total-client-steps"] == sum(sum(r["budgets"].values()) for r in rounds)
    for name in ("budgets.png", "participation.png", "strategy.json"):
        assert (guided_run / name).stat().st_size > 0
    state = json.loads((guided_run / "strategy.json").read_text())
    assert state["class"] == "LLMGuidedStrategy" and len(state["clients"]) == 3


def test_one_node_on_a_fake_ibm_backend_the_others_simulating(
    tmp_path: Path, shared_data: Path, tweeteval_fedavg: tuple[Path, InProcessGrid]
) -> None:
    """Partition 0 sets device=fake:FakeManilaV2 in its node config; only it sends jobs."""
    results = tmp_path / "results"
    run_in_process(
        {
            **BASE,
            "task": "tweeteval",
            "data-dir": str(shared_data / "tweeteval_sentiment"),
            "results-dir": str(results),
            "local-steps": 6,
            "shots": 256,
        },
        num_nodes=3,
        grid=tweeteval_fedavg[1],
        node_configs={0: {"device": "fake:FakeManilaV2"}},
    )
    run_dir = _run_dir(results)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds"] == 2
    rounds = [r for r in read_rounds(run_dir / "rounds.jsonl") if r["round"] >= 1]
    for record in rounds:
        by_partition = {c["partition-id"]: c for c in record["clients"]}
        assert sorted(by_partition) == [0, 1, 2]
        fake = by_partition[0]
        # SPSA: 2 batched jobs per step, plus one job per validation pass (before and after).
        assert fake["quantum-jobs"] == 6 + 2 and fake["steps"] == 6  # a job per SPSA step
        assert fake["quantum-shots"] == 256 * fake["quantum-executions"] > 0
        for partition in (1, 2):
            simulated = by_partition[partition]
            assert simulated["quantum-jobs"] == 0 and simulated["quantum-shots"] == 0
            assert simulated["quantum-executions"] > 0  # statevector runs are still counted
        # Flower's evaluate phase (every client by default): the fake node's one job more.
        evaluated = record["federated-val"]["clients"]
        assert evaluated["0"]["quantum-jobs"] == 1
        assert evaluated["1"]["quantum-jobs"] == evaluated["2"]["quantum-jobs"] == 0
        assert record["quantum-cost"]["quantum-jobs"] == fake["quantum-jobs"] + 1
    assert summary["quantum-cost"]["quantum-jobs"] == sum(
        r["quantum-cost"]["quantum-jobs"] for r in rounds
    )
    assert summary["quantum-cost"]["quantum-shots"] == sum(
        c["quantum-shots"] for r in rounds for c in cost_rows(r)
    )


def test_a_failing_client_is_recorded_and_the_rounds_go_on(
    tmp_path: Path, shared_data: Path, tweeteval_fedavg: tuple[Path, InProcessGrid]
) -> None:
    grid = tweeteval_fedavg[1]
    broken = sorted(grid.contexts)[2]  # partition 2 raises on every message
    grid.fail_nodes = {broken}
    try:
        run_in_process(
            {
                **BASE,
                "task": "tweeteval",
                "data-dir": str(shared_data / "tweeteval_sentiment"),
                "results-dir": str(tmp_path),
                "local-steps": 5,
            },
            num_nodes=3,
            grid=grid,
        )
    finally:
        grid.fail_nodes = set()
    run_dir = _run_dir(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds"] == 2
    assert summary["failures"] == 2  # one per training round
    for record in read_rounds(run_dir / "rounds.jsonl")[1:]:
        (failure,) = record["failures"]
        assert failure["node-id"] == broken and failure["partition-id"] is None
        assert "was told to fail" in failure["reason"]
        assert sorted(c["partition-id"] for c in record["clients"]) == [0, 1]
        assert record["update-applied"] is True  # 2 replies >= min-train-nodes = 2
    assert (run_dir / "checkpoint" / "state.json").is_file()


def test_a_node_builds_its_backend_once_per_run_and_samples_anew_each_round(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """5 rounds on qiskit.aer: one backend per node, and each round's shots are its own.

    With 0 local steps the global student never changes, so each client evaluates
    identical parameters on identical rows every round (``global-val-loss``); only
    the per-job sampling seed, derived from (seed, round, partition, job), differs.
    """
    import quantum.devices as devices

    builds: list[int] = []
    real = devices.make_qiskit_backend

    def counted(*args: object, **kwargs: object) -> object:
        builds.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(devices, "make_qiskit_backend", counted)
    results = tmp_path / "results"
    run_in_process(
        {
            **BASE,
            "task": "tweeteval",
            "data-dir": str(shared_data / "tweeteval_sentiment"),
            "results-dir": str(results),
            "num-server-rounds": 5,
            "min-nodes": 2,
            "max-train-rows": 120,
            "server-val-rows": 60,
            "test-rows": 60,
            "teacher-epochs": 1.0,
            "device": "qiskit.aer",
            "shots": 64,
            "local-steps": 0,
            "aggregation": "fednova",  # 0 planned steps: the global student stays bit for bit
        },
        num_nodes=2,
    )
    assert len(builds) == 2  # one backend per node, for all 5 rounds
    rounds = [r for r in read_rounds(_run_dir(results) / "rounds.jsonl") if r["round"] >= 1]
    assert len(rounds) == 5
    # The global student never moved: every round's server figures are round 1's, to round-off.
    assert [r["val"] for r in rounds] == approx_floats([rounds[0]["val"]] * 5)
    for partition in (0, 1):
        losses = [
            next(c for c in r["clients"] if c["partition-id"] == partition)["global-val-loss"]
            for r in rounds
        ]
        assert len(set(losses)) == 5, losses  # same parameters, new shots every round
    assert {c["backend"] for r in rounds for c in r["clients"]} == {"aer_simulator"}


def test_the_step_caps_reach_the_clients_and_are_honoured(
    tmp_path: Path, shared_data: Path, tweeteval_fedavg: tuple[Path, InProcessGrid]
) -> None:
    """teacher-max-steps and student-max-epochs: the capped budgets are what the clients ran."""
    results = tmp_path / "results"
    run_in_process(
        {
            **BASE,
            "task": "tweeteval",
            "data-dir": str(shared_data / "tweeteval_sentiment"),
            "results-dir": str(results),
            "strategy": "llm-guided",
            "teacher-policy": "once",  # local teachers
            "selection": "all",
            "steps-policy": "fixed",
            "termination": "max-rounds",
            "teacher-max-steps": 12,  # 2 epochs would be 30 steps of 240 rows
            "local-steps": 40,
            "min-steps": 1,
            "student-max-epochs": 0.5,  # ceil(0.5 x 240 / 64) = 2 steps
        },
        num_nodes=3,
        grid=tweeteval_fedavg[1],
    )
    rounds = read_rounds(_run_dir(results) / "rounds.jsonl")
    for record in rounds[1:]:
        for client in record["clients"]:
            part, rows = client["partition-id"], client["num-examples"]
            assert client["steps"] == record["budgets"][str(part)] == math.ceil(0.5 * rows / 64)
            epochs = record["teacher-budgets"][str(part)]
            assert client["teacher-steps"] == math.ceil(epochs * rows / 16)
    first = rounds[1]
    assert all(2 * c["num-examples"] / 16 > 12 for c in first["clients"])  # the cap binds
    assert all(c["teacher-steps"] == c["teacher-total-steps"] == 12 for c in first["clients"])
    assert all("capped at 12 steps" in r for r in first["teacher-reasons"].values())
    assert all(c["teacher-steps"] == 0 for c in rounds[2]["clients"])  # kept


def test_steered_teacher_budgets_reach_the_clients_and_are_honoured(
    tmp_path: Path, shared_data: Path, tweeteval_fedavg: tuple[Path, InProcessGrid]
) -> None:
    """llm-guided with steered teachers: each round's teacher budget (epochs) becomes
    exactly that many epochs of steps on the client; a teacher given 0 is not trained."""
    results = tmp_path / "results"
    run_in_process(
        {
            **BASE,
            "task": "tweeteval",
            "data-dir": str(shared_data / "tweeteval_sentiment"),
            "results-dir": str(results),
            "strategy": "llm-guided",
            "selection": "all",
            "num-server-rounds": 3,
            "teacher-policy": "steered",
            "teacher-epochs": 1.0,
            "teacher-chunk-epochs": 0.5,
            "teacher-min-delta": 0.0,
            # Students of 2 steps stay far behind their teachers, so the teachers go on
            # to their second chunk in round 2 and are done (1.0 epoch) in round 3.
            "steps-policy": "fixed",
            "local-steps": 2,
            "min-steps": 1,
            "termination": "max-rounds",
            "final-model": "best-val",
        },
        num_nodes=3,
        grid=tweeteval_fedavg[1],
    )
    run_dir = _run_dir(results)
    rounds = read_rounds(run_dir / "rounds.jsonl")
    totals = {0: 0, 1: 0, 2: 0}
    for record in rounds[1:]:
        for client in record["clients"]:
            part, rows = client["partition-id"], client["num-examples"]
            epochs = record["teacher-budgets"][str(part)]
            assert client["teacher-steps"] == math.ceil(epochs * rows / 16)  # batch size 16
            totals[part] += client["teacher-steps"]
            assert client["teacher-total-steps"] == totals[part]
            if epochs == 0:  # converged or done: no step, no second spent on it
                assert client["teacher-seconds"] == 0
                reason = record["teacher-reasons"][str(part)]
                assert reason.startswith(("converged", "kept"))
    assert set(rounds[1]["teacher-budgets"].values()) == {0.5}  # everyone's first chunk
    # Still improving, still ahead of their students: what is left of the 1.0 epoch
    # (8 of 15 steps done: 0.4666 epochs, 7 steps).
    assert set(rounds[2]["teacher-budgets"].values()) == {0.4666}
    assert set(rounds[3]["teacher-budgets"].values()) == {0.0}  # 1.0 epoch done: kept
    assert all(c["teacher-total-steps"] == 15 for c in rounds[3]["clients"])  # 240 rows / 16
    # final-model=best-val: the run ends with the round of the best validation accuracy.
    summary = json.loads((run_dir / "summary.json").read_text())
    best = max(rounds, key=lambda r: (r["val"]["accuracy"], -r["val"]["loss"]))
    assert summary["final-round"] == best["round"] and summary["final-val"] == best["val"]


def test_tensorboard_scalars_read_back_as_rounds_jsonl_says(guided_run: Path) -> None:
    """The event file, read by TensorBoard's own reader, holds each round's figures."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(guided_run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])

    def series(tag: str) -> dict[int, float]:
        return {event.step: event.value for event in events.Scalars(tag)}

    rounds = read_rounds(guided_run / "rounds.jsonl")
    assert sorted(series("val/accuracy")) == [r["round"] for r in rounds]
    for record in rounds:
        assert series("val/loss")[record["round"]] == pytest.approx(record["val"]["loss"])
    for record in rounds[1:]:
        step = record["round"]
        for partition, steps in record["budgets"].items():
            assert series(f"budget/steps/client-{partition}")[step] == steps
        for client in record["clients"]:
            tag = f"client/compute-seconds/client-{client['partition-id']}"
            assert series(tag)[step] == pytest.approx(client["compute-seconds"], rel=1e-6)
        for metric in ("quantum-jobs", "quantum-shots", "qpu-seconds"):
            assert series(f"quantum/{metric}")[step] == pytest.approx(
                record["quantum-cost"][metric]
            )
    # Budgets differ between clients and rounds here: the scalars are not one constant.
    steps = [t for t in tags if t.startswith("budget/steps/")]
    assert len({v for tag in steps for v in series(tag).values()}) > 1
    assert any(t.startswith("budget/teacher-epochs/") for t in tags)


def test_federated_evaluation_scores_the_new_student_on_the_asked_clients_rows(
    tmp_path: Path, shared_data: Path, tweeteval_fedavg: tuple[Path, InProcessGrid]
) -> None:
    """Every client by default, and with fraction-evaluate=0.67 2 of 3 clients, score each
    round's new global student through Flower's evaluate phase. A client's figure is what
    its next train reply reports as the global student's loss on its rows, before its local
    steps."""
    for record in read_rounds(tweeteval_fedavg[0] / "rounds.jsonl")[1:]:  # the default: 1.0
        assert record["federated-val"]["asked"] == [0, 1, 2]
        assert sorted(record["federated-val"]["clients"]) == ["0", "1", "2"]
    results = tmp_path / "results"
    run_in_process(
        {
            **BASE,
            "task": "tweeteval",
            "data-dir": str(shared_data / "tweeteval_sentiment"),
            "results-dir": str(results),
            "local-steps": 5,
            "fraction-evaluate": 0.67,
        },
        num_nodes=3,
        grid=tweeteval_fedavg[1],
    )
    rounds = read_rounds(_run_dir(results) / "rounds.jsonl")
    val_rows = {c["partition-id"]: c["val-examples"] for c in rounds[0]["clients"]}
    for record in rounds[1:]:
        federated = record["federated-val"]
        assert len(federated["asked"]) == 2 and federated["failures"] == []
        assert sorted(int(p) for p in federated["clients"]) == federated["asked"]
        assert federated["examples"] == sum(val_rows[p] for p in federated["asked"])
        figures = federated["clients"].values()
        assert (
            min(c["loss"] for c in figures) <= federated["loss"] <= max(c["loss"] for c in figures)
        )
        assert 0.0 <= federated["accuracy"] <= 1.0
    trained_next = {c["partition-id"]: c for c in rounds[2]["clients"]}
    for partition, figures in rounds[1]["federated-val"]["clients"].items():
        assert trained_next[int(partition)]["global-val-loss"] == pytest.approx(
            figures["loss"], abs=1e-6
        )


def test_flower_fedadam_aggregates_the_student_through_the_whole_pipeline(
    tmp_path: Path, shared_data: Path, tweeteval_fedavg: tuple[Path, InProcessGrid]
) -> None:
    """strategy=flwr:FedAdam on the FedAvg run's nodes, seed and plan: round 1's replies are
    the same students (same start, seeds and cached teachers), and Flower's FedAdam, not the
    example-weighted mean, makes the new global one of them."""
    results = tmp_path / "results"
    run_in_process(
        {
            **BASE,
            "task": "tweeteval",
            "data-dir": str(shared_data / "tweeteval_sentiment"),
            "results-dir": str(results),
            "strategy": "flwr:FedAdam",
            "strategy-options": '{"eta": 0.05}',
            "num-server-rounds": 1,
        },
        num_nodes=3,
        grid=tweeteval_fedavg[1],
    )
    run_dir = _run_dir(results)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds"] == 1
    assert math.isfinite(summary["final-test"]["loss"])
    strategy = json.loads((run_dir / "strategy.json").read_text())
    assert strategy["class"] == "FlowerAggregated" and strategy["aggregator"] == "FedAdam"
    adam, fedavg = (read_rounds(d / "rounds.jsonl") for d in (run_dir, tweeteval_fedavg[0]))
    for mine, theirs in zip(adam[1]["clients"], fedavg[1]["clients"], strict=True):
        assert mine["partition-id"] == theirs["partition-id"]
        # the same students to round-off (the teachers' last bits may differ between runs,
        # and 40 student steps carry that along)
        assert mine["student-val-loss"] == pytest.approx(theirs["student-val-loss"], abs=1e-5)
        assert mine["teacher-val-loss"] == pytest.approx(theirs["teacher-val-loss"], abs=1e-6)
    assert adam[1]["val"]["loss"] != pytest.approx(fedavg[1]["val"]["loss"], abs=1e-4)


def test_a_client_whose_partition_has_one_class_trains_like_the_others(
    tmp_path: Path, shared_data: Path
) -> None:
    """Dirichlet alpha 0.2, seed 1: partition 1 of 3 holds 130 rows of one class. Its probe,
    teacher and student train, and no round records a failure."""
    run_in_process(
        {
            "task": "genomic",
            "data-dir": str(shared_data / "genomic_nontata_promoters"),
            "results-dir": str(tmp_path),
            "num-server-rounds": 2,
            "min-nodes": 3,
            "partitioner": "dirichlet",
            "dirichlet-alpha": 0.2,
            "max-train-rows": 300,
            "server-val-rows": 100,
            "test-rows": 100,
            "max-length": 64,
            "teacher-epochs": 0.5,
            "local-steps": 5,
            "seed": 1,
            "strategy": "fedavg",
        },
        num_nodes=3,
    )
    run_dir = _run_dir(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["failures"] == 0
    rounds = read_rounds(run_dir / "rounds.jsonl")
    for record in rounds[1:]:
        assert sorted(c["partition-id"] for c in record["clients"]) == [0, 1, 2]
    (one_class,) = [c for c in rounds[1]["clients"] if c["partition-id"] == 1]
    assert one_class["probe-val-accuracy"] == 1.0  # its validation rows share its one class
    assert one_class["teacher-steps"] > 0 and one_class["steps"] == 5
