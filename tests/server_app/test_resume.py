"""Checkpoints every round; a resumed run ends where an uninterrupted one does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from roundoff import TRAINED, approx_floats, assert_within_motion

from config.errors import ConfigError
from harness.inprocess import InProcessGrid, run_in_process
from server_app.checkpoint import load_checkpoint
from server_app.results import read_rounds

GUIDED = {
    "max-train-rows": 600,
    "server-val-rows": 200,
    "test-rows": 200,
    "teacher-epochs": 1.0,
    "teacher-federation": "local",  # the restore budget is the local teachers' path
    "seed": 11,
    "strategy": "llm-guided",
    "teacher-policy": "once",  # local teachers
    "selection": "random-k",  # seeded draws: the generator's state must survive the restart
    "fraction-train": 0.67,
    "min-nodes": 3,
    "steps-policy": "adaptive",
    "local-steps": 10,
    "termination": "max-rounds",
    # the run ends with the mean of the last 3 rounds' students: those kept must survive too
    "final-model": "average",
    "final-average-rounds": 3,
}


def _only_run(results: Path) -> Path:
    (run_dir,) = results.iterdir()
    return run_dir


def _run(
    config: dict, results: Path, grid: InProcessGrid | None, run_id: int
) -> tuple[Path, InProcessGrid]:
    results.mkdir()
    grid = run_in_process(
        {**config, "results-dir": str(results)}, num_nodes=3, grid=grid, run_id=run_id
    )
    return _only_run(results), grid


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict[str, Path]:
    base = {**GUIDED, "task": "tweeteval", "data-dir": str(shared_data / "tweeteval_sentiment")}
    root = tmp_path_factory.mktemp("resume")
    straight, grid = _run({**base, "num-server-rounds": 4}, root / "straight", None, 1)
    # The same partitions under new node IDs each run, as after restarts (their teachers in
    # the disk cache, not in their state): only the partition IDs tie a client to its
    # checkpointed memory.
    first, _ = _run({**base, "num-server-rounds": 2}, root / "first", grid, 2)
    resumed, _ = _run(
        {**base, "num-server-rounds": 4, "resume-from": str(first)}, root / "resumed", grid, 3
    )
    return {"straight": straight, "first": first, "resumed": resumed}


def test_every_round_leaves_a_checkpoint(runs: dict[str, Path]) -> None:
    checkpoint = load_checkpoint(str(runs["first"]))
    assert checkpoint.round == 2
    assert [r["round"] for r in checkpoint.rounds] == [0, 1, 2]
    # The checkpoint keeps round 2's global student and the students of rounds 1-2 (the
    # last 3 rounds' so far); the run ended with their mean.
    with np.load(runs["first"] / "student.npz") as final:
        for key in final.files:
            np.testing.assert_array_equal(
                checkpoint.arrays["recent1:" + key], checkpoint.arrays[key]
            )
            mean = (checkpoint.arrays["recent0:" + key] + checkpoint.arrays["recent1:" + key]) / 2
            np.testing.assert_allclose(final[key], mean.astype(final[key].dtype), rtol=0, atol=1e-6)
            assert "recent2:" + key not in checkpoint.arrays
    summary = json.loads((runs["first"] / "summary.json").read_text())
    assert summary["averaged-rounds"] == [1, 2]


def test_resumed_run_equals_the_uninterrupted_one(runs: dict[str, Path]) -> None:
    start = load_checkpoint(str(runs["first"])).arrays  # round 2's student, resumed from
    with (
        np.load(runs["straight"] / "student.npz") as a,
        np.load(runs["resumed"] / "student.npz") as b,
    ):
        # Identical where the float kernels add in a fixed order; round-off grown by rounds
        # 3-4 elsewhere, far below what those rounds moved (see roundoff.py).
        assert_within_motion(b, a, start)
    straight = json.loads((runs["straight"] / "strategy.json").read_text())
    resumed = json.loads((runs["resumed"] / "strategy.json").read_text())
    for memory in (*straight["clients"].values(), *resumed["clients"].values()):
        for key in [k for k in memory if "seconds" in k or "chunk" in k]:
            memory.pop(key)  # timings (and the chunk timed) differ between runs; decisions do not
    # The same decisions and books; losses equal to trained round-off (see roundoff.py).
    assert resumed == approx_floats(straight, rel=TRAINED)
    rounds_a = read_rounds(runs["straight"] / "rounds.jsonl")
    rounds_b = read_rounds(runs["resumed"] / "rounds.jsonl")
    assert [r["round"] for r in rounds_b] == [0, 1, 2, 3, 4]  # earlier rounds carried over
    for a, b in zip(rounds_a, rounds_b, strict=True):
        assert a.get("participants") == b.get("participants")
        assert a.get("budgets") == b.get("budgets")
        assert a["val"]["loss"] == pytest.approx(b["val"]["loss"], rel=TRAINED)
    summary = json.loads((runs["resumed"] / "summary.json").read_text())
    assert summary["rounds"] == 4 and summary["status"] == "completed"
    assert summary["averaged-rounds"] == [2, 3, 4]  # round 2's student came from the checkpoint
    straight_summary = json.loads((runs["straight"] / "summary.json").read_text())
    assert summary["final-val"] == approx_floats(straight_summary["final-val"], rel=TRAINED)


def test_resume_errors_are_one_line(
    runs: dict[str, Path], tmp_path: Path, shared_data: Path
) -> None:
    base = {**GUIDED, "task": "tweeteval", "data-dir": str(shared_data / "tweeteval_sentiment")}
    with pytest.raises(ConfigError, match="resume-from=.*no checkpoint there"):
        run_in_process({**base, "resume-from": str(tmp_path), "results-dir": str(tmp_path)}, 3)
    done = {**base, "num-server-rounds": 2, "resume-from": str(runs["first"])}
    with pytest.raises(ConfigError, match="num-server-rounds=2: the checkpoint .* at round 2"):
        run_in_process({**done, "results-dir": str(tmp_path / "r")}, 3)
    changed = {**base, "num-server-rounds": 4, "resume-from": str(runs["first"]), "seed": 7}
    with pytest.raises(ConfigError, match="seed=7: the run in resume-from=.* used 11"):
        run_in_process({**changed, "results-dir": str(tmp_path / "s")}, 3)
    assert not (tmp_path / "s").exists()  # stopped before anything was written
    for key, value in (
        ("steps-policy", "bandit"),  # its state would not fit the checkpointed one
        ("teacher-federation", "fedavg"),
        ("peft-method", "qlora"),
    ):
        switched = {**base, "num-server-rounds": 4, "resume-from": str(runs["first"]), key: value}
        with pytest.raises(ConfigError, match=f"{key}='{value}': the run in resume-from="):
            run_in_process({**switched, "results-dir": str(tmp_path / key)}, 3)


def test_nodes_that_lost_their_teachers_rebuild_them_within_a_restore_budget(
    runs: dict[str, Path],
) -> None:
    """A resumed run's nodes hold no teacher (their state belongs to the first run; the
    disk cache is not their state): each client that had one is sent a restore budget
    of the steps it had, once, and runs exactly those (the run still ends where the
    uninterrupted one does: see the test above)."""
    memory = json.loads((runs["first"] / "strategy.json").read_text())["clients"]
    had = {p: int(c["teacher_total_steps"]) for p, c in memory.items()}
    restored = {}
    for record in read_rounds(runs["resumed"] / "rounds.jsonl")[3:]:
        assert record["failures"] == []
        budgets = record["teacher-restore-budgets"]
        for client in record["clients"]:
            partition = str(client["partition-id"])
            assert client["teacher-restore-steps"] == budgets.get(partition, 0)
            if budgets.get(partition):
                assert budgets[partition] == had[partition] and partition not in restored
                restored[partition] = budgets[partition]
    assert restored  # the resumed rounds did meet lost teachers
