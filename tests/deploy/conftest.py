"""Fixtures of the deployment tests: a real SuperLink and SuperNodes (``harness.deployment``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.deployment import Cluster


@pytest.fixture()
def cluster(
    tmp_path: Path, request: pytest.FixtureRequest, record_property: Callable[[str, Any], None]
) -> Iterator[Callable[..., Cluster]]:
    """``cluster(**options)`` starts a ``Cluster``; every one started is stopped afterwards.

    The network it used is recorded as the ``network`` property and printed in
    the test report.
    """
    started: list[Cluster] = []

    def start(**options: Any) -> Cluster:
        made = Cluster(tmp_path / "cluster", **options)
        started.append(made)
        made.start()
        record_property("network", made.network)
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"\n{request.node.name}: {made.network}")
        return made

    yield start
    for made in started:
        made.stop()
