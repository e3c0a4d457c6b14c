"""The node's teacher cache: a later run on the same partition reuses the teacher."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.inprocess import run_in_process
from server_app.results import read_rounds

SMALL = {
    "strategy": "fedavg",  # teacher-epochs in each federated round, as the cache tests count
    "num-server-rounds": 1,
    "min-nodes": 2,
    "max-train-rows": 120,
    "server-val-rows": 60,
    "test-rows": 60,
    "teacher-epochs": 1.0,
    "local-steps": 3,
}


def _clients(results: Path, round_: int = 1) -> list[dict[str, Any]]:
    (run_dir,) = results.iterdir()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    return sorted(
        read_rounds(run_dir / "rounds.jsonl")[round_]["clients"], key=lambda c: c["partition-id"]
    )


def _run(shared_data: Path, results: Path, cache: Path, **extra: Any) -> list[dict[str, Any]]:
    run_in_process(
        {
            **SMALL,
            "task": "tweeteval",
            "data-dir": str(shared_data / "tweeteval_sentiment"),
            "results-dir": str(results),
            **extra,
        },
        num_nodes=2,
        node_configs={i: {"cache-dir": str(cache)} for i in range(2)},
    )
    return _clients(results)


def test_a_second_run_reuses_the_cached_teachers(
    tmp_path: Path, shared_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    first = _run(shared_data, tmp_path / "first", cache)
    assert all(c["teacher-seconds"] > 0 and c["teacher-cache-hits"] == 0 for c in first)
    assert len(list((cache / "teachers").glob("*.npz"))) == 2
    assert len(list((cache / "embeddings").glob("*.npz"))) == 4  # train and val rows, 2 nodes

    cache_logger = logging.getLogger("llm.cache")  # the apps' loggers do not propagate
    cache_logger.addHandler(caplog.handler)
    try:
        second = _run(shared_data, tmp_path / "second", cache)  # fresh nodes, fresh node state
    finally:
        cache_logger.removeHandler(caplog.handler)
    assert all(c["teacher-seconds"] == 0 and c["teacher-cache-hits"] == 1 for c in second)
    assert caplog.text.count("teacher cache hit") == 2
    for a, b in zip(first, second, strict=True):  # the same teacher outputs
        assert a["partition-id"] == b["partition-id"]
        for key in ("teacher-val-loss", "teacher-val-accuracy", "teacher-train-loss"):
            assert a[key] == b[key]
    # The embeddings (computed for the statistics query, round 0) were read, not computed.
    embedded = [c["embed-seconds"] for c in _clients(tmp_path / "first", round_=0)]
    read = [c["embed-seconds"] for c in _clients(tmp_path / "second", round_=0)]
    assert all(r < e / 5 for r, e in zip(read, embedded, strict=True)), (read, embedded)

    # Another LoRA rank is another teacher: a miss, fine-tuned and stored beside the first.
    third = _run(shared_data, tmp_path / "third", cache, **{"lora-r": 4})
    assert all(c["teacher-seconds"] > 0 and c["teacher-cache-hits"] == 0 for c in third)
    assert len(list((cache / "teachers").glob("*.npz"))) == 4


def test_the_cache_can_be_turned_off(tmp_path: Path, shared_data: Path) -> None:
    cache = tmp_path / "cache"
    clients = _run(shared_data, tmp_path / "off", cache, **{"teacher-cache": False})
    assert all(c["teacher-seconds"] > 0 and c["teacher-cache-hits"] == 0 for c in clients)
    assert not cache.exists()


def test_a_federated_teacher_is_reused_only_from_the_same_received_adapters(
    tmp_path: Path, shared_data: Path
) -> None:
    """Round 2 starts from the pooled adapters: a repeated run receives the same bytes and
    reads both rounds' teachers back; the key changes with the start it was trained from."""
    cache, two = tmp_path / "cache", {"num-server-rounds": 2, "teacher-fedavg-rounds": 2}
    _run(shared_data, tmp_path / "first", cache, **two)
    _run(shared_data, tmp_path / "second", cache, **two)
    for round_ in (1, 2):
        first, second = (_clients(tmp_path / r, round_) for r in ("first", "second"))
        assert all(c["teacher-seconds"] > 0 for c in first)
        assert all(c["teacher-seconds"] == 0 for c in second)
        assert [c["teacher-cache-hits"] for c in second] == [1, 1]  # one hit a message
        for a, b in zip(first, second, strict=True):
            assert a["teacher-val-loss"] == b["teacher-val-loss"]
    assert len(list((cache / "teachers").glob("*.npz"))) == 4  # 2 nodes x 2 rounds

    from config.run_config import TeacherConfig
    from llm.cache import teacher_key

    rows = (["a", "b"], np.array([0, 1]))
    keys = {
        teacher_key(TeacherConfig(), 0, *rows, *rows, [3], start=start)
        for start in (None, {"w": np.zeros(2)}, {"w": np.ones(2)}, {"w": np.zeros(3)})
    }
    assert len(keys) == 4
