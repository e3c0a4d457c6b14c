"""The compose federation, run for real: Docker, the offline image, TLS, node auth, a crash.

One test, in order, because every step needs the one before:

1. a ``dockerd`` of the test's own (``harness.docker_run.DockerEngine``), with
   Debian's ``docker.io`` installed first if missing, and ``--iptables=false
   --ip-masq=false --bridge=none``;
2. the base image from ``debootstrap`` and the app image from wheels fetched
   on this machine, built with ``docker build --network none``;
3. ``docker-compose.yml`` + ``with-tls.yml`` + ``deploy/offline.yml`` up: a
   SuperLink, three SuperNodes (keys registered) and four SuperExecs, on one
   compose network with an explicit subnet; the SuperLink's port is published
   on 127.0.0.1 only;
4. a 3-round run in which every SuperNode trains in round 1, then one
   SuperNode's container is killed: one recorded failure, and the run
   completes, with results and checkpoints in the ``results`` volume;
5. ``docker-compose down``, the daemon stopped by its PID, and the machine's
   firewall rules and network links as they were before the engine started
   (read after the packages are installed: ``docker.io`` brings ``iptables``).
   The rules are read as ``iptables -S`` prints them, policies included, so the
   snapshot is never empty, even on a fresh machine whose ``iptables-save``
   prints nothing (``test_firewall.py`` shows that it sees a change).

What the host must have, and why, is ``compose_host_problem``: where it
finds something missing the test is skipped with that reason, or fails where
``LLMQFL_REQUIRE_HOST_TESTS=1`` (``.ci/run``) says that it must run.

The seconds of each step and the image sizes are printed and recorded as
properties of the test.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.docker_run import (
    ComposeFederation,
    DockerEngine,
    build_offline_image,
    ensure_packages,
    firewall_rules,
    iptables_save,
    network_links,
)
from harness.launch import COMPLETED
from server_app.results import read_rounds

pytestmark = [pytest.mark.slow, pytest.mark.docker]

RUN = {
    "task": "tweeteval",
    "data-dir": "/data/tweeteval_sentiment",
    "results-dir": "/results",
    "min-nodes": 3,
    "min-train-nodes": 2,
    "max-train-rows": 150,
    "server-val-rows": 100,
    "test-rows": 100,
    "local-steps": 5,
    "teacher-epochs": 1.0,
    "node-wait-seconds": 120.0,
    "round-timeout": 150.0,
}


def _runs(results: Path) -> list[Path]:
    return sorted(p for p in results.iterdir() if p.is_dir()) if results.exists() else []


def _wait_for(found: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        time.sleep(2.0)
    raise AssertionError(f"timed out waiting for {what}")


def _check_run(run_dir: Path, rounds: int) -> list[dict[str, Any]]:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds"] == rounds, summary
    for name in ("rounds.jsonl", "student.npz", "checkpoint/state.json", "checkpoint/student.npz"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "checkpoint" / "state.json").read_text())["round"] == rounds
    return read_rounds(run_dir / "rounds.jsonl")


def test_the_compose_federation_runs_survives_a_crash_and_leaves_the_machine_as_found(
    tmp_path: Path, shared_data: Path, record_property: Callable[[str, Any], None]
) -> None:
    started = time.perf_counter()
    installed = ensure_packages()  # iptables among them: read the rules after it
    saved = iptables_save()  # empty on a machine where nothing has made a table yet
    rules, links = firewall_rules(), network_links()
    assert "iptables filter: -P INPUT" in rules  # whatever the start, something to compare
    record_property("iptables-save-lines-before", len(saved.splitlines()))
    print(f"\niptables-save printed {len(saved.splitlines())} lines before the test")
    seconds: dict[str, float] = {"install": time.perf_counter() - started}
    record_property("installed-packages", " ".join(installed))
    engine = DockerEngine()
    federation: ComposeFederation | None = None
    try:
        engine.start()
        seconds["engine"] = time.perf_counter() - started - seconds["install"]
        built = build_offline_image(engine)
        seconds["base-image"], seconds["app-image"] = built["base-seconds"], built["app-seconds"]
        record_property("image-bytes", built["app-bytes"])
        record_property("base-image-bytes", built["base-bytes"])
        federation = ComposeFederation(engine, tmp_path / "compose", data_dir=shared_data)
        mark = time.perf_counter()
        federation.up()
        seconds["compose-up"] = time.perf_counter() - mark
        _published_on_loopback_only(federation)
        results = federation.volume("results")

        mark = time.perf_counter()
        _crash_run(federation, results)
        seconds["crash-run"] = time.perf_counter() - mark
    finally:
        if federation is not None:
            federation.down()
        engine.stop()
    seconds["total"] = time.perf_counter() - started
    for key, value in seconds.items():
        record_property(f"{key}-seconds", round(value, 1))
    print(f"\ncompose test: {json.dumps({k: round(v) for k, v in seconds.items()})}")
    print(f"app image {built['app-bytes'] / 1e9:.2f} GB, base {built['base-bytes'] / 1e6:.0f} MB")
    assert engine.leftover_processes() == []  # no dockerd, containerd or shim of the test's
    assert firewall_rules() == rules
    assert network_links() == links


def _published_on_loopback_only(federation: ComposeFederation) -> None:
    """Only the SuperLink publishes a port, and only on 127.0.0.1; every service is up."""
    for service in ("superlink", "superexec-serverapp", "supernode-1", "superexec-clientapp-3"):
        container = federation.container(service)
        form = "{{json .HostConfig.PortBindings}}"
        ports = json.loads(federation.engine.docker("inspect", "-f", form, container))
        bindings = [b for found in (ports or {}).values() for b in found]
        assert all(b["HostIp"] == "127.0.0.1" for b in bindings), (service, bindings)
        assert bool(bindings) == (service == "superlink"), service


def _crash_run(federation: ComposeFederation, results: Path) -> None:
    """A 3-round run; SuperNode 3's container is killed once round 1 is written."""
    before = set(_runs(results))
    assert before == set()  # the federation's first run
    outcome: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: outcome.update(run=federation.run({**RUN, "num-server-rounds": 3}))
    )
    runner.start()
    run_dir = _wait_for(lambda: next(iter(set(_runs(results)) - before), None), 600, "a run")
    rounds_file = run_dir / "rounds.jsonl"
    _wait_for(lambda: rounds_file.exists() and len(read_rounds(rounds_file)) >= 2, 600, "round 1")
    written = rounds_file.read_text()
    for record in read_rounds(rounds_file):  # the statistics round 0 and round 1: all three
        assert sorted(c["partition-id"] for c in record["clients"]) == [0, 1, 2], record
        assert record["failures"] == [], record
    federation.kill("supernode-3")
    runner.join(timeout=900)
    assert outcome["run"].status == COMPLETED, federation.logs()
    rounds = _check_run(run_dir, rounds=3)
    assert rounds_file.read_text().startswith(written)  # nothing written was lost
    failed = [f for r in rounds[2:] for f in r["failures"]]
    assert [f["partition-id"] for f in failed] == [2], failed  # once: then it is gone
    for record in rounds[2:]:
        assert sorted(c["partition-id"] for c in record["clients"]) == [0, 1]
        assert record["update-applied"] is True
    assert json.loads((run_dir / "summary.json").read_text())["failures"] == 1
