"""Termination rules, each firing on a constructed history and not one round before."""

from __future__ import annotations

from typing import Any

import pytest

from strategies.termination import (
    DistanceStagnation,
    MaxRounds,
    Plateau,
    TeacherGap,
    Termination,
)


def _round(number: int, loss: float, clients: list[tuple[float, float]]) -> dict[str, Any]:
    """A rounds.jsonl record: the global loss and each client's student and teacher val loss."""
    return {
        "round": number,
        "val": {"loss": loss, "accuracy": 0.5},
        "clients": [
            {
                "partition-id": i,
                "num-examples": 10,
                "steps": 5,
                "student-val-loss": s,
                "teacher-val-loss": t,
            }
            for i, (s, t) in enumerate(clients)
        ],
    }


def test_teacher_gap_fires_when_the_mean_gap_is_within_epsilon() -> None:
    rule = TeacherGap(epsilon=0.05)
    history = [_round(0, 2.0, []), _round(1, 1.0, [(1.00, 0.90), (0.95, 0.90)])]
    assert rule.check(1, history) is None  # gaps 0.10, 0.05: mean 0.075
    history.append(_round(2, 0.9, [(0.96, 0.90), (0.93, 0.90)]))  # mean 0.045
    reason = rule.check(2, history)
    assert reason is not None and reason.startswith("teacher-gap")


def test_plateau_fires_after_patience_rounds_without_progress() -> None:
    rule = Plateau(patience=2, min_delta=0.01)
    losses = [2.0, 1.0, 0.9, 0.895, 0.899]
    history = [_round(i, loss, [(1, 1)]) for i, loss in enumerate(losses)]
    assert rule.check(3, history[:4]) is None  # 0.9 beat 1.0 within the last 2 rounds
    reason = rule.check(4, history)
    assert reason is not None and reason.startswith("plateau")  # best 0.895 vs 0.9 - 0.01


def test_distance_stagnation_fires_when_the_distance_stops_changing() -> None:
    rule = DistanceStagnation(patience=2, delta=0.01)
    # mean |client - server| per round: 0.5, 0.2, 0.195, 0.19
    rows = [(1.5, [2.0, 1.0]), (1.0, [1.2, 0.8]), (1.0, [1.195, 0.805]), (1.0, [1.19, 0.81])]
    history = [_round(0, 3.0, [])] + [
        _round(i + 1, server, [(c, 0.5) for c in cs]) for i, (server, cs) in enumerate(rows)
    ]
    assert DistanceStagnation.distances(history) == pytest.approx([0.5, 0.2, 0.195, 0.19])
    assert rule.check(3, history[:4]) is None  # changes 0.3, 0.005
    reason = rule.check(4, history)
    assert reason is not None and reason.startswith("distance")


def test_max_rounds_and_min_rounds() -> None:
    assert MaxRounds(5).check(4, []) is None
    assert MaxRounds(5).check(5, []) == "max-rounds: 5 of 5 rounds run"
    always = TeacherGap(epsilon=10.0)
    history = [_round(1, 1.0, [(1.0, 0.9)])]
    assert Termination([always], min_rounds=3).check(2, history) is None
    assert Termination([always], min_rounds=3).check(3, history) is not None
