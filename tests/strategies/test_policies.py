"""Every policy of the guided strategy with hand-computable inputs, no Ray."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config import ConfigError, RunConfig
from server_app.inprocess import task_identity
from strategies.policies import (
    BanditSteps,
    ClientMemory,
    ClosestToServer,
    DistanceStagnation,
    LargestGap,
    MaxRounds,
    Plateau,
    PowerOfChoice,
    RandomK,
    RatioSteps,
    ReferenceRule,
    SelectionPolicy,
    TeacherGap,
    Termination,
    build_selection,
    build_step_policy,
    build_termination,
    default_arms,
)

BIG = 2**63 + 11  # node IDs are unsigned 64-bit; numpy must not see them


def _client(budget: int, student: float, teacher: float, **extra: Any) -> ClientMemory:
    return ClientMemory(
        budget=budget, rounds=1, student_val_loss=student, teacher_val_loss=teacher, **extra
    )


# ---------------------------------------------------------------- ratio rules, by hand
@pytest.mark.parametrize(
    ("rule", "budget", "student", "expected"),
    [
        # b0 = 20, teacher loss 0.8; ratio = student / 0.8
        ("incremental", 30, 1.0, 35),  # 30 + 20 * 0.25
        ("incremental", 30, 0.6, 25),  # 30 + 20 * (-0.25): lowers
        ("dynamic-weighted", 40, 1.2, 50),  # 40 * (0.5 + 0.75)
        ("dynamic-weighted", 40, 0.4, 30),  # 40 * (0.5 + 0.25)
        ("logarithmic", 20, 0.8 * math.e, 40),  # 20 * (1 + ln e)
        ("logarithmic", 40, 0.8 / math.sqrt(math.e), 20),  # 40 * (1 - 1/2)
        ("adaptive", 20, 1.0, 25),  # 20 * 1.25
        ("adaptive", 40, 0.6, 30),  # 40 * 0.75
        ("hybrid", 40, 1.6, 47),  # 40 + min(40 * 1.0, 7)
        ("hybrid", 40, 0.6, 33),  # 40 + max(-10, -7)
        ("hybrid", 40, 0.82, 41),  # 40 + 40 * 0.025
    ],
)
def test_ratio_rules_by_hand(rule: str, budget: int, student: float, expected: int) -> None:
    policy = RatioSteps(rule, base_steps=20, min_steps=1, max_steps=1000, max_increment=7)
    steps, reason = policy.decide(3, BIG, _client(budget, student, 0.8))
    assert steps == expected
    assert reason.startswith(rule)


def test_ratio_rules_clamp_and_start_at_the_base_budget() -> None:
    policy = RatioSteps("adaptive", base_steps=20, min_steps=10, max_steps=30, max_increment=5)
    assert policy.decide(1, BIG, None) == (20, "first participation")
    assert policy.decide(4, BIG, _client(25, 2.0, 1.0))[0] == 30  # 50 -> max
    assert policy.decide(4, BIG, _client(25, 0.1, 1.0))[0] == 10  # 2.5 -> min


@pytest.mark.parametrize(
    ("rule", "budget", "ratio", "expected"),
    [
        ("incremental", 10, 1.25, 12),  # 10 + int(2.5)
        ("dynamic-weighted", 10, 1.5, 12),  # int(5 + 7.5)
        ("logarithmic", 10, 1.2, 17),  # 10 + int(ln 2.2 * 10)
        ("adaptive", 10, 1.39, 13),  # int(13.9)
        ("hybrid", 10, 1.2, 17),  # 10 + min(12, 7)
    ],
)
def test_reference_rules_by_hand(rule: str, budget: int, ratio: float, expected: int) -> None:
    policy = ReferenceRule(rule, base_steps=10, max_steps=100, max_increment=7)
    client = _client(budget, 0.9, 0.9, student_train_loss=ratio * 0.5, teacher_train_loss=0.5)
    assert policy.decide(3, BIG, client)[0] == expected


def test_reference_only_raises_from_round_three_on_raw_losses() -> None:
    policy = ReferenceRule("adaptive", base_steps=10, max_steps=100, max_increment=100)
    above = _client(10, 0.5, 0.9, student_train_loss=2.0, teacher_train_loss=0.5)
    below = _client(40, 2.0, 0.5, student_train_loss=0.3, teacher_train_loss=0.5)
    assert policy.decide(2, BIG, above) == (10, "kept")  # round 2: too early
    assert policy.decide(3, BIG, above)[0] == 40  # raw train losses, not val losses
    assert policy.decide(3, BIG, below) == (40, "kept")  # never lowers
    assert (
        policy.decide(9, BIG, _client(90, 1, 1, student_train_loss=4, teacher_train_loss=1))[0]
        == 100
    )  # capped at max-steps


@given(
    rule=st.sampled_from(["incremental", "dynamic-weighted", "logarithmic", "adaptive", "hybrid"]),
    budget=st.integers(1, 500),
    base=st.integers(1, 200),
    student=st.floats(1e-3, 50.0),
    teacher=st.floats(1e-3, 50.0),
    low=st.integers(1, 50),
    span=st.integers(0, 300),
    increment=st.integers(1, 100),
)
def test_ratio_rule_bounds_always_hold(
    rule: str,
    budget: int,
    base: int,
    student: float,
    teacher: float,
    low: int,
    span: int,
    increment: int,
) -> None:
    policy = RatioSteps(rule, base, low, low + span, increment)
    for client in (None, _client(budget, student, teacher)):
        steps, _ = policy.decide(5, BIG, client)
        assert isinstance(steps, int)
        assert low <= steps <= low + span


@given(
    arms=st.lists(st.integers(1, 64), min_size=1, max_size=6),
    rewards=st.lists(st.floats(-1.0, 1.0), min_size=0, max_size=30),
)
def test_bandit_only_picks_its_arms(arms: list[int], rewards: list[float]) -> None:
    bandit = BanditSteps(arms, 10, 1, 64, epsilon=0.3, seed=1)
    for i, reward in enumerate(rewards):
        steps, _ = bandit.decide(i + 1, BIG + i, None)
        assert steps in set(arms)
        bandit.observe(BIG + i, _bandit_reply(steps, reward))


def _bandit_reply(steps: int, reduction: float, seconds: float = 1.0) -> ClientMemory:
    return ClientMemory(
        budget=steps,
        rounds=1,
        student_val_loss=1.0,
        teacher_val_loss=0.9,
        global_val_loss=1.0 + reduction,
        student_seconds=seconds,
    )


def test_bandit_tries_every_arm_then_exploits_the_best_reward_per_second() -> None:
    bandit = BanditSteps([5, 10, 20], 10, 5, 20, epsilon=0.0, seed=3)
    first = [bandit.decide(1, BIG + i, None)[0] for i in range(4)]
    assert first == [5, 10, 20, 5]  # untried first, smallest first, spread within a round
    # Reward = val-loss reduction per second: 10 steps buy 0.3 in 1 s, the others less per second.
    for steps, reduction, seconds in ((5, 0.1, 0.5), (10, 0.3, 1.0), (20, 0.4, 2.0)):
        bandit.observe(BIG, _bandit_reply(steps, reduction, seconds))
    assert bandit.mean_rewards() == pytest.approx({5: 0.2, 10: 0.3, 20: 0.2})
    assert bandit.decide(2, BIG, None)[0] == 10


def test_bandit_decisions_repeat_under_a_seed_and_state_round_trips() -> None:
    def run(seed: int) -> tuple[list[int], BanditSteps]:
        bandit = BanditSteps([5, 10, 20, 40], 10, 5, 40, epsilon=0.5, seed=seed)
        picks = []
        for r in range(1, 30):
            steps, _ = bandit.decide(r, BIG + r, None)
            picks.append(steps)
            bandit.observe(BIG + r, _bandit_reply(steps, 0.01 * (steps % 7), 0.1))
        return picks, bandit

    picks, bandit = run(seed=11)
    assert run(seed=11)[0] == picks
    assert run(seed=12)[0] != picks  # epsilon 0.5 over 25 draws: the seed matters
    restored = BanditSteps([1], 10, 1, 40, epsilon=0.5, seed=11)
    restored.load_state(json.loads(json.dumps(bandit.state())))
    assert restored.state() == bandit.state()
    assert restored.decide(31, BIG, None) == bandit.decide(31, BIG, None)


def test_default_arms_double_from_min_to_max() -> None:
    assert default_arms(5, 100) == [5, 10, 20, 40, 80, 100]
    assert default_arms(4, 4) == [4]


# ---------------------------------------------------------------- selection
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
    chosen, reason = ClosestToServer(seed=1).select(4, NODES, 3, clients, global_loss=1.0)
    assert chosen == sorted([NODES[5], NODES[4], NODES[2]])  # |d| = .01, .05, .05
    assert "closest 3" in reason


def test_unmeasured_nodes_are_selected_first() -> None:
    clients = _measured([0.90, 1.30, 0.95, 0.60, 1.05, 0.99])
    del clients[NODES[3]]
    chosen, _ = ClosestToServer(seed=1).select(4, NODES, 2, clients, global_loss=1.0)
    assert NODES[3] in chosen and NODES[5] in chosen


def test_largest_gap_and_power_of_choice() -> None:
    clients = _measured([0.90, 1.30, 0.95, 0.60, 1.05, 0.99])
    assert LargestGap().select(2, NODES, 2, clients, 1.0)[0] == sorted([NODES[1], NODES[4]])
    # With d = all 6 candidates, power-of-choice keeps the highest losses.
    poc = PowerOfChoice(seed=2, candidates=3.0)
    assert poc.select(2, NODES, 2, clients, 1.0)[0] == sorted([NODES[1], NODES[4]])
    # With d = k it is a random sample.
    sample = PowerOfChoice(seed=2, candidates=1.0).select(2, NODES, 2, clients, 1.0)[0]
    assert sample == RandomK(seed=2).select(2, NODES, 2, {}, 1.0)[0]


@settings(deadline=None)
@given(
    n=st.integers(1, 12),
    fraction=st.floats(0.01, 1.0),
    minimum=st.integers(1, 15),
    name=st.sampled_from(["all", "random-k", "closest", "gap", "power-of-choice"]),
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
    chosen = strategy.select_nodes(2, nodes)
    assert set(chosen) <= set(nodes)
    assert len(chosen) == len(set(chosen)) >= min(minimum, n)


# ---------------------------------------------------------------- termination
def _round(number: int, loss: float, clients: list[tuple[float, float]]) -> dict[str, Any]:
    return {
        "round": number,
        "global": {"loss": loss, "accuracy": 0.5},
        "clients": [{"student-val-loss": s, "teacher-val-loss": t} for s, t in clients],
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


# ---------------------------------------------------------------- state and config
def test_every_policy_state_round_trips_through_json() -> None:
    config = RunConfig.from_flat({"strategy": "llm-guided", "termination": "plateau,distance"})
    for policy in (build_step_policy(config), build_selection(config), build_termination(config)):
        state = json.loads(json.dumps(policy.state()))
        policy.load_state(state)
        assert policy.state() == state
    memory = _client(12, 0.9, 0.8, partition_id=3)
    assert ClientMemory.from_dict(json.loads(json.dumps(memory.to_dict()))) == memory
    fresh = ClientMemory(budget=5)
    assert math.isnan(
        ClientMemory.from_dict(json.loads(json.dumps(fresh.to_dict()))).global_val_loss
    )


@pytest.mark.parametrize(
    ("flat", "key"),
    [
        ({"steps-policy": "greedy"}, "steps-policy"),
        ({"min-steps": 0}, "min-steps"),
        ({"min-steps": 10, "max-steps": 5}, "max-steps"),
        ({"bandit-arms": "5,x"}, "bandit-arms"),
        ({"bandit-arms": "1,500"}, "bandit-arms"),
        ({"selection": "best"}, "selection"),
        ({"termination": "plateau,never"}, "termination"),
        ({"stop-patience": 0}, "stop-patience"),
        ({"aggregation": "median"}, "aggregation"),
        ({"strategy": "llm-guided", "local-steps": 500}, "local-steps"),
        ({"strategy": "llmqfl-reference", "steps-policy": "bandit"}, "steps-policy"),
    ],
)
def test_bad_policy_settings_fail_with_one_line_naming_the_key(
    flat: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as err:
        RunConfig.from_flat(flat)
    message = str(err.value)
    assert message.startswith(f"{key}=") and "\n" not in message


# ---------------------------------------------------------------- the strategy, with fake replies
def _fake_round(strategy: Any, server_round: int, nodes: list[int]) -> dict[int, Any]:
    """configure_train, then fake replies whose losses depend on the node and round."""
    import time

    import numpy as np
    from flwr.app import (
        Array,
        ArrayRecord,
        ConfigRecord,
        Message,
        Metadata,
        MetricRecord,
        RecordDict,
    )

    class Grid:
        def get_node_ids(self) -> list[int]:
            return nodes

    arrays = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    messages = list(strategy.configure_train(server_round, arrays, ConfigRecord({}), Grid()))
    replies = []
    for message in messages:
        node = message.metadata.dst_node_id
        steps = int(message.content.config_records["config"]["local-steps"])
        position = nodes.index(node)
        metrics = {
            "num-examples": 10 + position,
            "partition-id": position,
            "steps": steps,
            "student-val-loss": 0.7 + 0.1 * position / server_round,
            "teacher-val-loss": 0.8,
            "global-val-loss": 1.0 + 0.05 * position,
            "student-seconds": 0.01 * steps,
        }
        metadata = Metadata(
            run_id=1,
            message_id="",
            src_node_id=node,
            dst_node_id=1,
            reply_to_message_id="i",
            group_id="1",
            created_at=time.time(),
            ttl=60.0,
            message_type="train",
        )
        content = RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)})
        replies.append(Message(content, metadata=metadata))
    strategy.aggregate_train(server_round, replies)
    strategy.observe_global(server_round, {"loss": 1.0 / server_round, "accuracy": 0.5})
    return dict(strategy.last_plan)


@pytest.mark.parametrize("steps_policy", ["adaptive", "bandit", "hybrid"])
@pytest.mark.parametrize("selection", ["random-k", "closest", "gap", "power-of-choice"])
def test_guided_decisions_repeat_under_a_seed_and_resume_from_state(
    steps_policy: str, selection: str
) -> None:
    from strategies import LLMGuidedStrategy, build_strategy

    flat = {
        "strategy": "llm-guided",
        "steps-policy": steps_policy,
        "selection": selection,
        "fraction-train": 0.5,
        "bandit-epsilon": 0.5,
    }

    def build(seed: int) -> Any:
        return build_strategy(RunConfig.from_flat({**flat, "seed": seed}, check_files=False))

    nodes = [BIG + 7919 * i for i in range(8)]
    first, second = build(4), build(4)
    with task_identity():  # messages are built as on a SuperLink
        plans = [_fake_round(first, r, nodes) for r in range(1, 5)]
        assert [_fake_round(second, r, nodes) for r in range(1, 5)] == plans
        assert all(len(plan) == 4 for plan in plans)
        # A fresh strategy loaded with the state decides round 5 as the original does.
        resumed = build(4)
        assert isinstance(resumed, LLMGuidedStrategy)
        resumed.load_state(json.loads(json.dumps(first.state())))
        assert _fake_round(resumed, 5, nodes) == _fake_round(first, 5, nodes)
