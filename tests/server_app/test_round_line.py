"""A round's console line says who trained and why, each budget with its reason."""

from __future__ import annotations

from typing import Any

from server_app.round_record import round_line


def _record(**extra: Any) -> dict[str, Any]:
    return {
        "round": 3,
        "participants": [0, 1, 2],
        "selection-reason": "utility: 3 of 4",
        "budgets": {"0": 40, "1": 40, "2": 12},
        "budget-reasons": {"0": "fixed", "1": "fixed", "2": "capped at 0.5 epochs"},
        "teacher-budgets": {"0": 0.0, "1": 0.0, "2": 0.0},
        "teacher-reasons": {"0": "final", "1": "final", "2": "final"},
        "failures": [],
        "val": {"accuracy": 0.6123, "loss": 0.70001},
        "seconds": 12.34,
        **extra,
    }


def test_the_round_line_names_each_budget_with_its_reason() -> None:
    line = round_line(_record(), 5)
    assert line == (
        "round 3/5: trained 0, 1, 2 (utility: 3 of 4); "
        "steps 40 for 0, 1 (fixed), 12 for 2 (capped at 0.5 epochs); "
        "validation acc 0.612, loss 0.7000 nats; 12.3 s"
    )  # no teacher trained this round: no teacher part


def test_a_teacher_round_names_its_budget_and_the_failures_and_own_rows() -> None:
    record = _record(
        budgets={"0": 20, "1": 20},
        **{
            "participants": [0, 1],
            "budget-reasons": {"0": "fixed", "1": "fixed"},
            "teacher-budgets": {"0": 1.0, "1": 1.0},
            "teacher-reasons": {"0": "federated round 1", "1": "federated round 1"},
            "failures": [{"partition-id": 2}],
            "federated-val": {"accuracy": 0.55, "clients": {"0": {}, "1": {}}},
        },
    )
    assert round_line(record, 5) == (
        "round 3/5: trained 0, 1 (utility: 3 of 4); steps 20 each (fixed); "
        "teacher epochs 1 each (federated round 1); 1 failed; "
        "validation acc 0.612, loss 0.7000 nats; clients' own rows acc 0.550; 12.3 s"
    )
