"""Selection policies: which connected nodes train in a round.

``k`` is ``fraction-train`` of the connected nodes (never fewer than
``min-train-nodes``). Nodes never measured are taken first, so every node
reports once before a ranking applies. Each policy has one decision method,
:meth:`SelectionPolicy.select`, and ``state()`` / ``load_state()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from strategies.memory import ClientMemory, client_rng


class SelectionPolicy:
    """Base: all connected nodes train."""

    name = "all"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def select(
        self,
        server_round: int,
        partitions: Sequence[int],
        k: int,
        clients: Mapping[int, ClientMemory],
        val_loss: float,
    ) -> tuple[list[int], str]:
        """``(selected partitions, reason)``: ``k`` of the sorted ``partitions`` (all, here)."""
        return sorted(partitions), "all"

    def state(self) -> dict[str, Any]:
        """JSON-serialisable state (the selections here are functions of their inputs)."""
        return {}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state` returned."""

    def _shuffled(self, server_round: int, partitions: Sequence[int]) -> list[int]:
        ordered = sorted(int(n) for n in partitions)
        order = client_rng(self.seed, server_round).permutation(len(ordered))
        return [ordered[i] for i in order]

    def _ranked(
        self,
        server_round: int,
        partitions: Sequence[int],
        k: int,
        clients: Mapping[int, ClientMemory],
        score: Callable[[ClientMemory], float],
    ) -> list[int]:
        """Unmeasured nodes first (seeded order), then measured ones by ascending score."""
        shuffled = self._shuffled(server_round, partitions)
        unmeasured = [n for n in shuffled if n not in clients or not clients[n].measured]
        measured = sorted(
            (n for n in shuffled if n in clients and clients[n].measured),
            key=lambda n: (score(clients[n]), n),
        )
        return sorted((unmeasured + measured)[:k])


class RandomK(SelectionPolicy):
    """``k`` nodes uniformly at random, seeded by (seed, round)."""

    name = "random-k"

    def select(self, server_round, partitions, k, clients, val_loss):  # type: ignore[no-untyped-def]
        return sorted(self._shuffled(server_round, partitions)[:k]), f"random {k}"


class ClosestToServer(SelectionPolicy):
    """The paper's rule: the ``k`` nodes whose last student val loss is closest to the server's.

    Nodes never measured go first, so every node is measured once.
    """

    name = "closest"

    def select(self, server_round, partitions, k, clients, val_loss):  # type: ignore[no-untyped-def]
        if not math.isfinite(val_loss):
            return sorted(
                self._shuffled(server_round, partitions)[:k]
            ), "no validation loss yet: random"
        chosen = self._ranked(
            server_round, partitions, k, clients, lambda c: abs(c.student_val_loss - val_loss)
        )
        return chosen, f"closest {k} to the validation loss {val_loss:.4f}"


class LargestGap(SelectionPolicy):
    """The ``k`` nodes where the global student is furthest above the node's teacher.

    The gap is :attr:`~strategies.memory.ClientMemory.global_gap` (nats on the
    node's validation rows): with Flower's evaluate phase on, the newest global
    student's loss there, measured each round also for nodes that did not
    train; else the global student the node last trained from.
    """

    name = "gap"

    def select(self, server_round, partitions, k, clients, val_loss):  # type: ignore[no-untyped-def]
        chosen = self._ranked(
            server_round, partitions, k, clients, lambda c: -_or_inf(c.global_gap)
        )
        gaps = ", ".join(
            f"{p}: {clients[p].global_gap:.3f}"
            for p in chosen
            if p in clients and clients[p].measured and math.isfinite(clients[p].global_gap)
        )
        return chosen, f"largest global student-teacher gap, {k}" + (f" ({gaps})" if gaps else "")


class PowerOfChoice(SelectionPolicy):
    """Power-of-choice: sample ``d = ceil(poc-candidates * k)`` nodes, keep the ``k`` worst.

    "Worst" is the highest last student val loss; unmeasured candidates first.
    """

    name = "power-of-choice"

    def __init__(self, seed: int = 0, candidates: float = 2.0) -> None:
        super().__init__(seed)
        self.candidates = candidates

    def select(self, server_round, partitions, k, clients, val_loss):  # type: ignore[no-untyped-def]
        d = min(len(partitions), max(k, math.ceil(self.candidates * k)))
        pool = self._shuffled(server_round, partitions)[:d]
        chosen = self._ranked(server_round, pool, k, clients, lambda c: -c.student_val_loss)
        return chosen, f"power-of-choice: {k} of {d} candidates"


def _or_inf(gap: float) -> float:
    """A gap that is not known yet ranks first."""
    return gap if math.isfinite(gap) else math.inf


SELECTIONS: dict[str, type[SelectionPolicy]] = {
    cls.name: cls for cls in (SelectionPolicy, RandomK, ClosestToServer, LargestGap, PowerOfChoice)
}


def build_selection(config: Any) -> SelectionPolicy:
    """The ``selection`` policy of a ``RunConfig``."""
    name, seed = config.policy.selection, config.federation.seed
    if name == "power-of-choice":
        return PowerOfChoice(seed, config.policy.poc_candidates)
    return SELECTIONS[name](seed)
