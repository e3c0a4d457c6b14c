"""Shared fixtures: offline settings, the path of the shared real data, host checks.

A test marked ``docker`` or ``netns`` needs what a user's machine may lack
(root, a Debian 12 host for the image). Where the host lacks it, the test is
skipped with the reason, which ``-rs`` shows in pytest's summary; with
``LLMQFL_REQUIRE_HOST_TESTS=1`` (as ``.ci/run`` sets it) the same reason is a
failure instead, so that CI cannot pass by skipping them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from harness.docker_run import compose_host_problem
from harness.network import namespaces_problem

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
for _var in ("FLWR_TELEMETRY_ENABLED", "RAY_USAGE_STATS_ENABLED"):
    os.environ.setdefault(_var, "0")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
# Teachers and embeddings cached by one test session stay in that session.
_CACHE = tempfile.TemporaryDirectory(prefix="llmqfl-cache-")
os.environ["LLMQFL_CACHE_DIR"] = _CACHE.name

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository (real TweetEval and genomic data)."""
    assert SHARED_DATA.is_dir(), f"expected the shared data at {SHARED_DATA}"
    return SHARED_DATA


#: What each host marker needs, as a check that returns why this host lacks it (or None).
HOST_CHECKS = {"docker": compose_host_problem, "netns": namespaces_problem}
REQUIRE_HOST_TESTS = "LLMQFL_REQUIRE_HOST_TESTS"


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker, check in HOST_CHECKS.items():
        if item.get_closest_marker(marker) is None:
            continue
        problem = check()
        if problem is None:
            continue
        if os.environ.get(REQUIRE_HOST_TESTS) == "1":
            pytest.fail(f"{marker} test cannot run here and {REQUIRE_HOST_TESTS}=1: {problem}")
        pytest.skip(f"{marker} test: {problem}")
