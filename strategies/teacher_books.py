"""What the server knows of each client's LLM teacher, and the teacher budgets it plans.

:class:`TeacherBooks` is a mixin of :class:`~strategies.student_fedavg.StudentFedAvg`:
the teacher steps each client's node is known to hold (its statistics reply,
then its accepted train replies; 0 after a failure), each round's teacher
budget (the strategy's :class:`~strategies.teacher.TeacherPolicy`), the steps
to rebuild a teacher a node may have lost, and the most teacher steps a
reply may report. It reads the strategy's ``clients`` (partition ->
:class:`~strategies.memory.ClientMemory`), ``declared_examples``,
``teacher_batch_size`` and ``teacher_policy``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from config.messages import TrainReport, teacher_steps
from strategies.memory import ClientMemory
from strategies.teacher import TeacherPolicy


class TeacherBooks:
    """The teacher's side of a strategy keyed by partition (see the module docstring)."""

    clients: dict[int, ClientMemory]
    declared_examples: dict[int, int]
    teacher_batch_size: int
    teacher_policy: TeacherPolicy

    def _reset_teachers(self) -> None:
        # Teacher steps each client's node is known to hold: below the memory's, it lost them.
        self.teacher_held: dict[int, int] = {}

    def teacher_budget(self, server_round: int, partition: int) -> tuple[float, str]:
        """Epochs client ``partition`` fine-tunes its teacher this round, and the reason.

        The teacher policy's decision: here ``teacher-epochs`` the first time
        the client trains and nothing after.
        """
        return self.teacher_policy.decide(server_round, partition, self.clients.get(partition))

    def restore_budget(self, partition: int) -> int:
        """Steps to rebuild client ``partition``'s teacher if its node may have lost it:
        the steps its teacher had by its last accepted reply, when its node is not known
        to hold them (a restarted node, a resumed run, a failed reply); else 0.

        A node that still holds them runs none. Federated teachers are never
        restored: the server sends the global adapters again.
        """
        client = self.clients.get(partition)
        known = client.teacher_total_steps if client is not None else 0
        if self.teacher_policy.federated_rounds or self.teacher_held.get(partition, known) >= known:
            return 0
        return known

    def declare_teachers(self, held: Mapping[int, int]) -> None:
        """Record the teacher steps each partition's node holds (its statistics reply)."""
        self.teacher_held.update({int(p): int(n) for p, n in held.items()})

    def teacher_step_budget(
        self, partition: int, plan: Mapping[str, Any] | None
    ) -> tuple[int, int] | None:
        """The most teacher steps client ``partition`` may report this round: ``(new
        chunk, restore)``, from its ``plan`` this round and its declared rows (None: unknown)."""
        rows = self.declared_examples.get(partition)
        if rows is None or plan is None:
            return None
        chunk = teacher_steps(float(plan["teacher-epochs"]), rows, self.teacher_batch_size)
        return chunk, int(plan["teacher-restore-steps"])

    def note_teachers(
        self, failures: Sequence[Mapping[str, Any]], reports: Mapping[int, TrainReport]
    ) -> None:
        """After a round: a failed client's node may have lost its teacher; an accepted
        reply says how many steps its node holds."""
        for failure in failures:
            if failure["partition-id"] is not None:
                self.teacher_held[int(failure["partition-id"])] = 0
        for partition, report in reports.items():
            self.teacher_held[partition] = report.teacher_total_steps
