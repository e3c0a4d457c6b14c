"""The app on Flower's deployment engine: a SuperLink, three SuperNodes, faults.

Every test starts real ``flower-superlink``, ``flower-supernode`` and
``flower-superexec`` processes (see ``conftest.py``), submits the app with
``flwr run`` and checks the run's final status and the results it wrote.
The network each test used (network namespaces or loopback ports) is printed
in the test report and recorded as the ``network`` property (see conftest.py).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.launch import COMPLETED
from harness.network import healthy
from server_app.results import read_rounds

pytestmark = pytest.mark.slow

SMALL_RUN = {
    "min-nodes": 3,
    "min-train-nodes": 2,
    "max-train-rows": 150,
    "server-val-rows": 100,
    "test-rows": 100,
    "local-steps": 5,
    "teacher-epochs": 1.0,
    "node-wait-seconds": 120.0,
}


def _run_config(shared_data: Path, results: Path, **extra: Any) -> dict[str, Any]:
    return {
        **SMALL_RUN,
        "task": "tweeteval",
        "data-dir": str(shared_data / "tweeteval_sentiment"),
        "results-dir": str(results),
        **extra,
    }


def _run_dir(results: Path) -> Path:
    (run_dir,) = results.iterdir()
    return run_dir


def _check_completed(results: Path, rounds: int) -> list[dict[str, Any]]:
    run_dir = _run_dir(results)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds"] == rounds
    for name in ("rounds.jsonl", "student.npz", "strategy.json", "checkpoint/state.json"):
        assert (run_dir / name).is_file(), name
    return read_rounds(run_dir / "rounds.jsonl")


def test_tls_and_node_auth_refuse_a_rogue_and_a_supernode_killed_mid_run_is_recorded(
    tmp_path: Path, shared_data: Path, cluster: Callable[..., Any]
) -> None:
    """One TLS deployment with node auth, in order (each step needs the one before):

    1. the SuperLink's port speaks TLS only, and a SuperNode whose key was
       never registered is refused and exits;
    2. the three registered SuperNodes train, and Flower's evaluate phase runs
       on each of them, in round 1;
    3. SuperNode 2 is killed: one recorded failure, and the 3-round run
       completes with what was written kept.
    """
    deployment = cluster(tls=True)
    # 1. The SuperLink's one port speaks TLS only: plain HTTP gets no answer, HTTPS does.
    health = f"{deployment.address}/health"
    assert not healthy(f"http://{health}")
    assert not healthy(f"https://{health}")  # not verified without the deployment's CA
    assert healthy(f"https://{health}", deployment.certs / "ca.crt")
    rogue = deployment.start_node(3, key=3)
    rogue.popen.wait(timeout=120)
    assert rogue.popen.returncode != 0
    assert "Failed to activate SuperNode" in rogue.text(), rogue.text()
    listed = json.loads(deployment.flwr("supernode", "list", "dep", "--format", "json"))
    assert sum(n["status"] == "online" for n in listed["nodes"]) == 3  # not the rogue

    # 2. Round 1 on all three, trained and evaluated.
    results = tmp_path / "results"
    config = _run_config(
        shared_data,
        results,
        **{"num-server-rounds": 3, "round-timeout": 150.0, "fraction-evaluate": 1.0},
    )
    runner = _Background(lambda: deployment.run(config, timeout=900))
    rounds_file = _wait_for(lambda: _first_file(results, "rounds.jsonl"), timeout=600)
    _wait_for(lambda: len(read_rounds(rounds_file)) >= 2 or None, timeout=600)
    written_before = rounds_file.read_text()

    # 3. SuperNode 2 dies.
    deployment.kill_node(2)
    killed_at = time.monotonic()
    outcome = runner.result(timeout=900)
    assert outcome.status == COMPLETED, deployment.logs()

    rounds = _check_completed(results, rounds=3)
    assert rounds_file.read_text().startswith(written_before)  # nothing written was lost
    for record in rounds[:2]:  # the statistics round 0 and round 1: all three, no failure
        assert sorted(c["partition-id"] for c in record["clients"]) == [0, 1, 2]
        assert record["failures"] == []
    assert rounds[1]["update-applied"] is True
    federated = rounds[1]["federated-val"]  # Flower's evaluate phase, through each node host
    assert sorted(int(p) for p in federated["clients"]) == [0, 1, 2], federated
    assert federated["failures"] == [] and 0.0 <= federated["accuracy"] <= 1.0
    failed = [f for r in rounds[2:] for f in r["failures"]]
    assert [f["partition-id"] for f in failed] == [2]  # once: then it is no longer connected
    assert "Node Unavailable" in failed[0]["reason"] or "round-timeout" in failed[0]["reason"]
    for record in rounds[2:]:
        assert sorted(c["partition-id"] for c in record["clients"]) == [0, 1]
        assert record["update-applied"] is True  # 2 replies >= min-train-nodes
    summary = json.loads((_run_dir(results) / "summary.json").read_text())
    assert summary["failures"] == 1
    assert time.monotonic() - killed_at < 600
    # Each surviving SuperNode ran its own ClientApps: one stats query, and one train and
    # one evaluate message per round, all in one node host, which built the runtime once.
    for i in range(2):
        log = deployment.procs[f"supernode-{i}"].text()
        assert log.count("Receiving: train message") == 3
        assert log.count("Receiving: evaluate message") == 3
        assert log.count("Receiving: query.stats message") == 1
        assert deployment.procs[f"superexec-{i}"].text().count("runtime built for run") == 1


class _Background:
    """Call ``fn`` in a thread; ``result`` waits for it and re-raises its exception."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._value: Any = None
        self._error: BaseException | None = None

        def target() -> None:
            try:
                self._value = fn()
            except BaseException as err:  # noqa: BLE001 - re-raised in result()
                self._error = err

        self._thread = threading.Thread(target=target, daemon=True)
        self._thread.start()

    def result(self, timeout: float) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"no result within {timeout} s"
        if self._error is not None:
            raise self._error
        return self._value


def _first_file(results: Path, name: str) -> Path | None:
    found = sorted(results.glob(f"*/{name}")) if results.is_dir() else []
    return found[0] if found else None


def _wait_for(probe: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"not reached within {timeout} s")
