"""Selection policies: which nodes train, with hand-computable inputs."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config import RunConfig
from strategies.memory import ClientMemory
from strategies.selection import (
    ClosestToServer,
    LargestGap,
    PowerOfChoice,
    RandomK,
    SelectionPolicy,
    TeacherUtility,
)

BIG = 2**63 + 11  # node IDs are unsigned 64-bit; numpy must not see them


def _client(budget: int, student: float, teacher: float, **extra: Any) -> ClientMemory:
    return ClientMemory(
        budget=budget, rounds=1, student_val_loss=student, teacher_val_loss=teacher, **extra
    )


NODES = [BIG + 7919 * i for i in range(6)]


def _measured(losses: list[float], teacher: float = 0.8) -> dict[int, ClientMemory]:
    return {n: _client(20, loss, teacher) for n, loss in zip(NODES, losses, strict=True)}


def test_all_and_random_k() -> None:
    assert SelectionPolicy().select(1, NODES[::-1], 2, {}, math.nan)[0] == NODES
    picks = RandomK(seed=5).select(3, NODES, 4, {}, math.nan)[0]
    assert len(picks) == 4 and set(picks) <= set(NODES)
    assert RandomK(seed=5).select(3, NODES, 4, {}, math.nan)[0] == picks
    draws = {tuple(RandomK(seed=s).select(3, NODES, 3, {}, math.nan)[0]) for s in range(20)}
    assert len(draws) > 1


def test_closest_to_server_loss_is_the_papers_rule() -> None:
    clients = _measured([0.90, 1.30, 0.95, 0.60, 1.05, 0.99])
    chosen, reason = ClosestToServer(seed=1).select(4, NODES, 3, clients, val_loss=1.0)
    assert chosen == sorted([NODES[5], NODES[4], NODES[2]])  # |d| = .01, .05, .05
    assert "closest 3" in reason


def test_unmeasured_nodes_are_selected_first() -> None:
    clients = _measured([0.90, 1.30, 0.95, 0.60, 1.05, 0.99])
    del clients[NODES[3]]
    chosen, _ = ClosestToServer(seed=1).select(4, NODES, 2, clients, val_loss=1.0)
    assert NODES[3] in chosen and NODES[5] in chosen


def test_largest_gap_ranks_by_the_newest_global_loss_against_each_teacher() -> None:
    """The gap is the global student's loss on a node's rows minus its teacher's: from its
    last train reply (round 1), or from the evaluate phase where that is newer."""
    trained_from = [0.90, 1.30, 0.95, 0.60, 1.05, 0.99]  # the global student of round 0
    teachers = [0.80, 0.80, 0.80, 0.50, 0.80, 0.40]
    clients = {
        n: _client(20, 0.5, teacher, global_val_loss=g, last_round=1)
        for n, g, teacher in zip(NODES, trained_from, teachers, strict=True)
    }
    # Gaps .10 .50 .15 .10 .25 .59: nodes 5 and 1 (the local students, all 0.5, do not count).
    chosen, reason = LargestGap().select(2, NODES, 2, clients, 1.0)
    assert chosen == sorted([NODES[5], NODES[1]])
    assert f"{NODES[5]}: 0.590" in reason and "largest global student-teacher gap" in reason
    # Round 1's evaluate phase: node 3's rows got worse (gap 1.5), node 5's are learnt (0.05).
    for node, loss in ((NODES[3], 2.0), (NODES[5], 0.45)):
        clients[node].evaluated_loss, clients[node].evaluated_round = loss, 1
    assert LargestGap().select(2, NODES, 2, clients, 1.0)[0] == sorted([NODES[3], NODES[1]])
    # An evaluation older than the node's last train reply is not read: node 3 back at .10.
    clients[NODES[3]].last_round = 2
    assert LargestGap().select(2, NODES, 2, clients, 1.0)[0] == sorted([NODES[1], NODES[4]])


def test_power_of_choice() -> None:
    clients = _measured([0.90, 1.30, 0.95, 0.60, 1.05, 0.99])
    # With d = all 6 candidates, power-of-choice keeps the highest losses.
    poc = PowerOfChoice(seed=2, candidates=3.0)
    assert poc.select(2, NODES, 2, clients, 1.0)[0] == sorted([NODES[1], NODES[4]])
    # With d = k it is a random sample.
    sample = PowerOfChoice(seed=2, candidates=1.0).select(2, NODES, 2, clients, 1.0)[0]
    assert sample == RandomK(seed=2).select(2, NODES, 2, {}, 1.0)[0]


def _utility_fleet() -> dict[int, ClientMemory]:
    """Six measured clients: rows, the global student's gap to each teacher, and seconds
    of a round without teacher work (compute minus teacher and embedding seconds)."""
    rows = [100, 100, 400, 100, 100, 100]
    gaps = [0.50, 0.10, 0.20, 0.40, 0.05, 0.30]
    seconds = [1.0, 1.0, 1.0, 8.0, 1.0, 1.0]  # node 3 is 8x slower than the median
    return {
        n: _client(
            20,
            0.5,
            0.5,
            global_val_loss=0.5 + gap,
            last_round=1,
            num_examples=r,
            compute_seconds=t + 30.0,
            teacher_seconds=20.0,
            embed_seconds=10.0,
            student_seconds=t / 2,
        )
        for n, r, gap, t in zip(NODES, rows, gaps, seconds, strict=True)
    }


def test_utility_is_rows_times_the_gap_to_the_teacher_times_speed() -> None:
    clients = _utility_fleet()
    policy = TeacherUtility(seed=3, explore=0.0, floor=5, speed_exponent=2.0)
    utility = policy.utilities(NODES, clients)
    # rows x gap, and node 3 (8 s against the median 1 s) x (1/8)^2.
    want = [50.0, 10.0, 80.0, 100 * 0.4 / 64, 5.0, 30.0]
    assert [utility[n] for n in NODES] == pytest.approx(want)
    chosen, reason = policy.select(2, NODES, 3, clients, 1.0)
    assert chosen == sorted([NODES[2], NODES[0], NODES[5]])
    assert reason.startswith("utility (rows x gap x speed), 3; best") and "80" in reason
    # Without the speed term the slow node's gap counts in full (40 > 30).
    fast_blind = TeacherUtility(seed=3, explore=0.0, floor=5, speed_exponent=0.0)
    assert NODES[3] in fast_blind.select(2, NODES, 3, clients, 1.0)[0]
    # A node never measured goes first; a gap the node has not yet measured ranks first.
    del clients[NODES[4]]
    clients[NODES[1]].global_val_loss = math.nan
    chosen, reason = TeacherUtility(seed=3, explore=0.0, floor=5).select(2, NODES, 3, clients, 1.0)
    assert chosen == sorted([NODES[4], NODES[1], NODES[2]]) and "never measured" in reason


def test_a_starved_node_is_selected_again_within_the_floor() -> None:
    """Node 4 (the smallest utility) is never worth a place, but no node waits more than
    ``floor`` rounds (where ``k x (floor + 1)`` places cover the nodes); the exploration
    draw repeats under the seed."""
    clients = _utility_fleet()
    floor = 2
    policy = TeacherUtility(seed=7, explore=0.0, floor=floor)
    waits: dict[int, int] = {n: 0 for n in NODES}
    for server_round in range(1, 13):
        chosen, reason = policy.select(server_round, NODES, 3, clients, 1.0)
        for n in NODES:
            waits[n] = 0 if n in chosen else waits[n] + 1
            assert waits[n] <= floor, (server_round, n)
        if NODES[4] in chosen and server_round > floor:
            assert f"starved > {floor} rounds" in reason

    # Exploration: the same draws under the same seed, other draws under another.
    def picks(seed: int) -> list[list[int]]:
        explorer = TeacherUtility(seed=seed, explore=0.5, floor=50)
        return [explorer.select(r, NODES, 2, clients, 1.0)[0] for r in range(1, 9)]

    assert picks(1) == picks(1)
    assert picks(1) != picks(2)
    assert all(NODES[2] in p for p in picks(1))  # one place exploits the best utility
    # The state round-trips: a resumed policy decides the next round alike.
    resumed = TeacherUtility(seed=7, explore=0.0, floor=floor)
    resumed.load_state(policy.state())
    assert resumed.select(13, NODES, 3, clients, 1.0) == policy.select(13, NODES, 3, clients, 1.0)


@settings(deadline=None)
@given(
    n=st.integers(1, 12),
    fraction=st.floats(0.01, 1.0),
    minimum=st.integers(1, 15),
    name=st.sampled_from(["all", "random-k", "closest", "gap", "power-of-choice", "utility"]),
)
def test_selection_never_picks_fewer_than_the_minimum_nor_absent_nodes(
    n: int, fraction: float, minimum: int, name: str
) -> None:
    from strategies import LLMGuidedStrategy

    config = RunConfig.from_flat(
        {
            "strategy": "llm-guided",
            "selection": name,
            "fraction-train": fraction,
            "min-train-nodes": minimum,
        }
    )
    strategy = LLMGuidedStrategy.from_config(config)
    nodes = NODES[:6] + [BIG + 104729 * i for i in range(1, 7)]
    nodes = nodes[:n]
    chosen = strategy.select_clients(2, nodes)
    assert set(chosen) <= set(nodes)
    assert len(chosen) == len(set(chosen)) >= min(minimum, n)
