"""The run says whether distillation had something to give (server_app/teacher_report.py)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from config.run_config import RunConfig
from llm.probe import probe_accuracy, probe_head, unit
from server_app.teacher_report import clients_teacher, teacher_summary
from tasks.datasets import TextDataset


def _client(partition: int, teacher: float, probe: float) -> dict[str, float]:
    return {"partition-id": partition, "teacher-val-accuracy": teacher, "probe-val-accuracy": probe}


ROUNDS = [
    {"round": 0, "clients": [{"partition-id": 0}, {"partition-id": 1}]},
    {"round": 1, "clients": [_client(0, 0.50, 0.60), _client(1, 0.70, 0.60)]},
    {"round": 2, "clients": [_client(1, 0.72, 0.60)]},  # client 0 sat this round out
]


def test_each_clients_last_report_is_read_and_those_below_their_probe_named() -> None:
    found = clients_teacher(ROUNDS)
    assert found["below-probe"] == [0]
    assert found["per-client"]["0"] == {"val-accuracy": 0.50, "probe-val-accuracy": 0.60}
    assert found["per-client"]["1"]["val-accuracy"] == 0.72
    assert found["clients-val-accuracy"] == pytest.approx((0.50 + 0.72) / 2)
    assert found["clients-probe-val-accuracy"] == pytest.approx(0.60)


class _Lines(logging.Handler):
    """The warning lines of one logger, whatever a run's logging set-up did to propagation."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_one_warning_line_when_a_teacher_ends_below_its_probe(
    request: pytest.FixtureRequest,
) -> None:
    config = RunConfig.from_flat({"teacher-head": "cls", "strategy": "fedavg"})
    rows = TextDataset(["a"], np.array([0]), 2, "unused")
    lines = _Lines()
    report_logger = logging.getLogger("server_app.teacher_report")
    report_logger.addHandler(lines)
    request.addfinalizer(lambda: report_logger.removeHandler(lines))
    summary = teacher_summary(config, ROUNDS, None, rows, rows)
    assert len(lines.lines) == 1
    # The named client's own figures, not the mean over all clients (0.61 against 0.60):
    assert "client 0 (0.500 against 0.600) ended below a linear probe" in lines.lines[0]
    assert "try teacher-head='probe', teacher-epochs=2" in lines.lines[0]  # the levers unused
    assert summary["test-accuracy"] is None  # local teachers stay on their clients
    level = [ROUNDS[0], {"round": 1, "clients": [_client(0, 0.6, 0.6), _client(1, 0.8, 0.6)]}]
    assert teacher_summary(config, level, None, rows, rows)["below-probe"] == []
    assert len(lines.lines) == 1  # no second line
    # llm-guided's teachers train in chunks within a cap: those are the levers it names.
    teacher_summary(RunConfig.from_flat({"teacher-head": "cls"}), ROUNDS, None, rows, rows)
    levers = "try teacher-head='probe', teacher-chunk-epochs=2, teacher-max-steps=96"
    assert levers in lines.lines[1]
    assert "teacher-epochs" not in lines.lines[1]


def test_the_probe_accuracy_is_the_probe_heads_argmax() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8))
    labels = rng.integers(0, 3, size=120)
    x = centres[labels] + 0.8 * rng.normal(size=(120, 8))
    train, val = (x[:90], labels[:90]), (x[90:], labels[90:])
    weight, bias = probe_head(*train, *val, 3)
    expected = float(((unit(val[0]) @ weight.T + bias).argmax(1) == val[1]).mean())
    assert probe_accuracy(train, val, 3) == expected
    assert expected > 0.6  # well-separated centres: far above a third
    assert math.isnan(probe_accuracy(train, (x[:0], labels[:0]), 3))
