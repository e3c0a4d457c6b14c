"""Each round's plan: who trains, with how many steps, teacher epochs and shots, and why.

:class:`RoundPlanner` is a mixin of :class:`~strategies.student_fedavg.StudentFedAvg`
(through it, of :class:`~strategies.teacher_books.TeacherBooks` too) holding
its decisions, each a small method that a guided strategy overrides:
:meth:`~RoundPlanner.select_clients`, :meth:`~RoundPlanner.step_budget` and
:meth:`~RoundPlanner.shot_budget` here, the teacher's budgets in
:class:`~strategies.teacher_books.TeacherBooks`; :meth:`~RoundPlanner.plan_round`
puts them together. It reads the strategy's ``fraction_train``,
``min_train_nodes``, ``seed``, ``local_steps`` and shot settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from strategies.rounds import Selection
from strategies.shots import shot_budget
from strategies.teacher_books import TeacherBooks


class RoundPlanner(TeacherBooks):
    """FedAvg's decisions: a seeded random sample and a fixed budget (see the module docstring)."""

    fraction_train: float
    min_train_nodes: int
    seed: int
    local_steps: int
    shots: int
    shots_policy: str
    min_shots: int
    num_rounds: int

    def num_to_select(self, available: int) -> int:
        """``fraction_train`` of ``available`` nodes, at least ``min_train_nodes``, at most all."""
        return min(max(int(available * self.fraction_train), self.min_train_nodes), available)

    def select_clients(self, server_round: int, partitions: Sequence[int]) -> list[int]:
        """Sample ``fraction_train`` of the connected clients (at least ``min_train_nodes``).

        Returns a :class:`~strategies.rounds.Selection` (the clients and why); an
        override may return a plain list.
        """
        wanted = self.num_to_select(len(partitions))
        rng = np.random.default_rng([self.seed, server_round])
        ordered = sorted(int(p) for p in partitions)
        picked = sorted(ordered[i] for i in rng.choice(len(ordered), size=wanted, replace=False))
        return Selection(picked, f"random {wanted} of {len(partitions)}")

    def step_budget(self, server_round: int, partition: int) -> tuple[int, str]:
        """Local optimizer steps for client ``partition`` this round, and the reason."""
        return self.local_steps, "fixed"

    def shot_budget(self, server_round: int, partition: int) -> tuple[int, str]:
        """Shots per row for client ``partition`` this round on a shot-based device, and why.

        ``shots-policy`` (:func:`strategies.shots.shot_budget`); 0 with ``shots=0``:
        the client's own setting.
        """
        if self.shots <= 0:
            return 0, "node setting"
        return shot_budget(
            self.shots_policy,
            server_round,
            shots=self.shots,
            min_shots=self.min_shots,
            num_rounds=self.num_rounds,
        )

    def plan_round(
        self, server_round: int, partitions: Sequence[int]
    ) -> tuple[dict[int, dict[str, Any]], str]:
        """Who trains and how much, and why these clients: ``({partition: {"steps",
        "reason", "teacher-epochs", "teacher-reason", "teacher-restore-steps", "shots",
        "shots-reason"}}, selection reason)`` from :meth:`select_clients`,
        :meth:`step_budget`, :meth:`teacher_budget`, :meth:`restore_budget` and
        :meth:`shot_budget`."""
        chosen = self.select_clients(server_round, partitions)
        why = getattr(chosen, "reason", f"{type(self).__name__}.select_clients")
        plan = {}
        for partition in chosen:
            steps, reason = self.step_budget(server_round, partition)
            teacher_epochs, teacher_reason = self.teacher_budget(server_round, partition)
            shots, shots_reason = self.shot_budget(server_round, partition)
            plan[partition] = {
                "steps": int(steps),
                "reason": reason,
                "teacher-epochs": float(teacher_epochs),
                "teacher-reason": teacher_reason,
                "teacher-restore-steps": self.restore_budget(partition),
                "shots": int(shots),
                "shots-reason": shots_reason,
            }
        return plan, why
