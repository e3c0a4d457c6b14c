"""Selection policies: which connected nodes train in a round.

``k`` is ``fraction-train`` of the connected nodes (never fewer than
``min-train-nodes``). Nodes never measured are taken first, so every node
reports once before a ranking applies. Each policy has one decision method,
:meth:`SelectionPolicy.select`, and ``state()`` / ``load_state()``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from strategies.memory import ClientMemory, client_rng


class SelectionPolicy:
    """Base: all connected nodes train."""

    name = "all"
    #: True: every connected node trains in the rounds whose teacher adapters are
    #: federated (``teacher-fedavg-rounds``), so the global teacher has every node's data.
    all_while_teachers_federate = False

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


class TeacherUtility(SelectionPolicy):
    """Oort-style: ``k`` nodes by what each can still teach the global student, times speed.

    A measured node's utility is ``rows x max(gap, 0) x min(1, T / t) ** speed_exponent``:
    ``gap`` is :attr:`~strategies.memory.ClientMemory.global_gap` (the newest global
    student's loss on the node's validation rows minus its teacher's, nats: what is
    left to learn from that teacher), ``rows`` its train rows, ``t`` its measured
    seconds for a round without teacher work (compute minus teacher and embedding
    seconds) and ``T`` the median ``t``: slow nodes pay for their delay, as in Oort.

    The ``k`` places go, in order, to nodes never measured (seeded order); to
    starved nodes, not selected in the last ``floor`` rounds (longest wait
    first), so that no node waits longer; to the highest utilities; and
    ``explore`` of the ``k`` places (rounded) to other nodes drawn at random
    (seeded by seed and round), so that a gap measured long ago is measured
    again. While the teacher adapters are federated every node trains
    (:attr:`all_while_teachers_federate`). ``state()`` keeps each node's last
    selected round, by partition, so resume decides as the run would have.
    """

    name = "utility"
    all_while_teachers_federate = True

    def __init__(
        self, seed: int = 0, explore: float = 0.25, floor: int = 3, speed_exponent: float = 2.0
    ) -> None:
        super().__init__(seed)
        self.explore = explore
        self.floor = floor
        self.speed_exponent = speed_exponent
        self.selected_round: dict[int, int] = {}

    @staticmethod
    def round_seconds(client: ClientMemory) -> float:
        """The client's last measured seconds without teacher work (NaN: unknown)."""
        rest = client.compute_seconds - client.teacher_seconds - client.embed_seconds
        return max(rest, client.student_seconds) if math.isfinite(rest) else math.nan

    def utilities(
        self, partitions: Sequence[int], clients: Mapping[int, ClientMemory]
    ) -> dict[int, float]:
        """Each measured node's utility (see the class docstring; an unknown gap: inf)."""
        measured = [p for p in partitions if p in clients and clients[p].measured]
        seconds = {p: self.round_seconds(clients[p]) for p in measured}
        known = [t for t in seconds.values() if math.isfinite(t) and t > 0]
        median = statistics.median(known) if known else math.nan
        out = {}
        for p in measured:
            gap = clients[p].global_gap
            if not math.isfinite(gap):
                out[p] = math.inf
                continue
            t = seconds[p]
            slow = median / t if math.isfinite(median) and math.isfinite(t) and t > 0 else 1.0
            out[p] = clients[p].num_examples * max(gap, 0.0) * min(1.0, slow) ** self.speed_exponent
        return out

    def select(self, server_round, partitions, k, clients, val_loss):  # type: ignore[no-untyped-def]
        shuffled = self._shuffled(server_round, partitions)
        measured = [p for p in shuffled if p in clients and clients[p].measured]
        unmeasured = [p for p in shuffled if p not in measured]
        waited = {p: server_round - self.selected_round.get(p, 0) for p in measured}
        starved = sorted(
            (p for p in measured if waited[p] > self.floor),
            key=lambda p: (-waited[p], shuffled.index(p)),
        )
        chosen = (unmeasured + starved)[:k]
        utility = self.utilities(measured, clients)
        rest = sorted((p for p in measured if p not in chosen), key=lambda p: (-utility[p], p))
        explore = min(k - len(chosen), round(self.explore * k))
        exploit = rest[: k - len(chosen) - explore]
        others = [p for p in rest if p not in exploit]
        drawn = [others[i] for i in client_rng(self.seed, server_round, 1).permutation(len(others))]
        explored = drawn[:explore]
        chosen = sorted(chosen + exploit + explored)
        for p in chosen:
            self.selected_round[int(p)] = server_round
        parts = [f"utility (rows x gap x speed), {k}"]
        if exploit:
            parts.append("best " + ", ".join(f"{p}: {utility[p]:.3g}" for p in exploit))
        for label, group in (
            ("never measured", [p for p in unmeasured if p in chosen]),
            (f"starved > {self.floor} rounds", [p for p in starved if p in chosen]),
            ("explored", explored),
        ):
            if group:
                parts.append(f"{label} {sorted(group)}")
        return chosen, "; ".join(parts)

    def state(self) -> dict[str, Any]:
        return {"selected-round": {str(p): r for p, r in sorted(self.selected_round.items())}}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.selected_round = {int(p): int(r) for p, r in state.get("selected-round", {}).items()}


def _or_inf(gap: float) -> float:
    """A gap that is not known yet ranks first."""
    return gap if math.isfinite(gap) else math.inf


SELECTIONS: dict[str, type[SelectionPolicy]] = {
    cls.name: cls
    for cls in (
        SelectionPolicy,
        RandomK,
        ClosestToServer,
        LargestGap,
        PowerOfChoice,
        TeacherUtility,
    )
}


def build_selection(config: Any) -> SelectionPolicy:
    """The ``selection`` policy of a ``RunConfig``."""
    name, seed = config.policy.selection, config.federation.seed
    if name == "power-of-choice":
        return PowerOfChoice(seed, config.policy.poc_candidates)
    if name == "utility":
        policy = config.policy
        return TeacherUtility(
            seed, policy.selection_explore, policy.selection_floor, policy.selection_speed_exponent
        )
    return SELECTIONS[name](seed)
