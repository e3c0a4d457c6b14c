"""Shots per row as a budget, like steps: what each client samples with in a round.

On a shot-based device every circuit execution is repeated ``shots`` times,
and on IBM hardware every shot is billed QPU time. Early rounds move the
student far and need less precision than the last ones, so a strategy may
set the shots per client and round (``shots-policy``):

- ``fixed``: ``shots`` every round (the default);
- ``ramp``: ``min-shots`` in round 1, rising linearly to ``shots`` in the
  last round (``num-server-rounds``), rounded to a multiple of 8.

The decision travels in the client's ``TrainInstructions.shots`` and is
recorded per round in ``rounds.jsonl`` (``shot-budgets``); the shots the
client actually sampled are in its ``quantum-shots`` metric.
"""

from __future__ import annotations

#: Ramped budgets are rounded to a multiple of this.
SHOT_QUANTUM = 8


def shot_budget(
    policy: str, server_round: int, *, shots: int, min_shots: int, num_rounds: int
) -> tuple[int, str]:
    """Shots per row for ``server_round`` under ``policy``, and the reason."""
    if policy == "fixed" or num_rounds <= 1:
        return shots, "fixed"
    share = min(max(server_round - 1, 0) / (num_rounds - 1), 1.0)
    wanted = min_shots + share * (shots - min_shots)
    budget = min(max(int(round(wanted / SHOT_QUANTUM)) * SHOT_QUANTUM, min_shots), shots)
    return budget, f"ramp {min_shots}->{shots}: round {server_round} of {num_rounds}"
