"""The guided strategy's policies from the run config: state, settings, seeded decisions;
its levers: steered teachers, time-aware budgets, resting, the noise-aware stop."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from fakes import reply

from config import ConfigError, RunConfig
from harness.inprocess import task_identity
from server_app.preflight import preflight
from strategies.memory import ClientMemory
from strategies.selection import build_selection
from strategies.steps import build_step_policy
from strategies.teacher import SteeredTeacher, TeacherPolicy, ValidatedTeacher
from strategies.termination import NoisePlateau, TeacherNoise, build_termination, teacher_gaps
from strategies.timing import Speed, estimate_seconds, fit_to_deadline

BIG = 2**63 + 11  # node IDs are unsigned 64-bit; numpy must not see them


def test_every_policy_state_round_trips_through_json() -> None:
    config = RunConfig.from_flat({"strategy": "llm-guided", "termination": "plateau,distance"})
    for policy in (build_step_policy(config), build_selection(config), build_termination(config)):
        state = json.loads(json.dumps(policy.state()))
        policy.load_state(state)
        assert policy.state() == state
    memory = ClientMemory(
        budget=12, rounds=1, student_val_loss=0.9, teacher_val_loss=0.8, partition_id=3
    )
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
        ({"aggregation": "mean"}, "aggregation"),
        ({"trim-fraction": 0.5}, "trim-fraction"),
        ({"max-update-norm": -1.0}, "max-update-norm"),
        ({"student-max-epochs": -1.0}, "student-max-epochs"),
        ({"teacher-max-steps": -1}, "teacher-max-steps"),
        ({"final-average-rounds": 0}, "final-average-rounds"),
        ({"final-model": "mean"}, "final-model"),
        ({"strategy": "llm-guided", "steps-policy": "adaptive", "local-steps": 500}, "local-steps"),
        ({"strategy": "llmqfl-reference", "steps-policy": "bandit"}, "steps-policy"),
        ({"teacher-policy": "validated", "teacher-federation": "local"}, "teacher-policy"),
        ({"teacher-federation": "local"}, "teacher-policy"),  # the default policy, named
    ],
)
def test_bad_policy_settings_fail_with_one_line_naming_the_key(
    flat: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as err:
        preflight(RunConfig.from_flat(flat))
    message = str(err.value)
    assert message.startswith(f"{key}=") and "\n" not in message


def test_local_teachers_pass_with_a_strategy_that_reads_no_teacher_policy() -> None:
    for strategy in ("fedavg", "fedprox", "llmqfl-reference"):
        preflight(RunConfig.from_flat({"strategy": strategy, "teacher-federation": "local"}))
    local = {"strategy": "llm-guided", "teacher-federation": "local", "teacher-policy": "once"}
    preflight(RunConfig.from_flat(local))


def _fake_round(
    strategy: Any,
    server_round: int,
    nodes: list[int],
    extra: Callable[[int, int, dict[str, Any]], dict[str, Any]] | None = None,
    reasons: list[str] | None = None,
) -> dict[int, Any]:
    """configure_round, then fake replies whose losses depend on the node and round;
    returns the round's plan (and appends why these clients to ``reasons``).

    ``extra(position, round, config)`` adds metrics to a node's reply (``config``:
    the ConfigRecord its message carried).
    """

    import numpy as np
    from flwr.app import (
        Array,
        ArrayRecord,
        ConfigRecord,
        MetricRecord,
        RecordDict,
    )

    class Grid:
        def get_node_ids(self) -> list[int]:
            return nodes

    strategy.bind_nodes({node: position for position, node in enumerate(nodes)})
    arrays = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    train = strategy.configure_round(server_round, arrays, ConfigRecord({}), Grid())
    replies = []
    for message in train.messages:
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
        if extra is not None:
            config = dict(message.content.config_records["config"])
            metrics.update(extra(position, server_round, config))
        content = RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)})
        replies.append(reply(content, node))
    strategy.aggregate_round(train, replies)
    strategy.observe_val(server_round, {"loss": 1.0 / server_round, "accuracy": 0.5})
    if reasons is not None:
        reasons.append(train.selection_reason)
    return dict(train.plan)


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
        return build_strategy(RunConfig.from_flat({**flat, "seed": seed}))

    nodes = [BIG + 7919 * i for i in range(8)]
    first, second = build(4), build(4)
    with task_identity():  # messages are built as on a SuperLink
        plans = [_fake_round(first, r, nodes) for r in range(1, 5)]
        assert [_fake_round(second, r, nodes) for r in range(1, 5)] == plans
        assert all(len(plan) == 4 for plan in plans)
        # A fresh strategy loaded with the state decides round 5 as the original does,
        # even when every client came back under a new node ID (a restarted deployment).
        resumed = build(4)
        assert isinstance(resumed, LLMGuidedStrategy)
        resumed.load_state(json.loads(json.dumps(first.state())))
        new_ids = [node + 1000 for node in nodes]
        assert _fake_round(resumed, 5, new_ids) == _fake_round(first, 5, nodes)


def _teacher_memory(losses: list[float], student: float, steps: int = 10) -> ClientMemory:
    """A client with 160 train rows (10 steps an epoch at batch 16) and a teacher history."""
    return ClientMemory(
        budget=20,
        rounds=1,
        num_examples=160,
        student_val_loss=student,
        teacher_val_loss=losses[-1],
        teacher_total_steps=steps,
        teacher_val_losses=losses,
    )


def test_steered_teacher_trains_in_chunks_while_they_pay() -> None:
    policy = SteeredTeacher(max_epochs=2.0, chunk_epochs=0.5, min_delta=0.01, batch_size=16)
    assert policy.decide(1, 0, None) == (0.5, "first chunk")
    # Still improving (1.10 -> 0.90): another chunk.
    epochs, why = policy.decide(2, 0, _teacher_memory([1.10, 0.90], student=1.10, steps=5))
    assert epochs == 0.5 and why.startswith("still improving: 0.50 epochs done")
    # Converged: the last chunk lowered the validation loss by less than 0.01 nats.
    epochs, why = policy.decide(3, 0, _teacher_memory([1.1, 0.9, 0.895], 1.2, steps=10))
    assert epochs == 0.0 and why.startswith("converged: last chunk lowered its val loss by 0.0050")
    # Its student matching it on local rows (0.85 vs 0.90) does not stop an improving teacher.
    epochs, why = policy.decide(3, 0, _teacher_memory([1.1, 0.9], 0.85, steps=10))
    assert epochs == 0.5 and why.startswith("still improving")
    # Never past teacher-epochs in all; the last chunk is what is left.
    assert policy.decide(5, 0, _teacher_memory([1.1, 0.9, 0.7], 1.0, steps=20))[0] == 0.0
    assert policy.decide(5, 0, _teacher_memory([1.1, 0.9, 0.7], 1.0, steps=15))[0] == 0.5
    tail = SteeredTeacher(max_epochs=1.2, chunk_epochs=0.5, min_delta=0.01, batch_size=16)
    left = tail.decide(4, 0, _teacher_memory([1.1, 0.9, 0.7], 1.0, steps=10))[0]
    assert left == 0.1999  # 0.2, rounded down to 1e-4 epochs
    # FedAvg's policy: teacher-epochs at first participation, then nothing.
    once = TeacherPolicy(2.0)
    assert once.decide(1, 0, None) == (2.0, "first participation")
    assert once.decide(2, 0, _teacher_memory([1.1, 0.5], 1.0, steps=20)) == (0.0, "kept")


def test_the_validated_teacher_federates_while_the_average_beats_the_best_teacher_yet() -> None:
    """teacher-policy=validated: chunks while each average lowers the server's validation
    loss by teacher-min-delta below the best teacher yet (the start included); the first
    that does not ends the federation with the best teacher final. Resumes from state."""
    import numpy as np

    from server_app.teacher_federation import TeacherFederation

    start = {"classifier.weight": np.zeros((2, 3), np.float32), "classifier.bias": np.ones(2)}
    averages = [{"lora": np.full(2, float(r), np.float32)} for r in range(4)]
    policy = ValidatedTeacher(chunk_epochs=0.5, min_delta=0.01, federated_rounds=3)
    teachers = TeacherFederation(3, start=start)
    assert policy.decide(1, 0, None) == (0.5, "federated round 1: a first chunk")
    assert policy.judge(0, 0.60)  # the start: the yardstick
    assert policy.decide(1, 0, None)[1].startswith("federated round 1: the start is the best")
    for teacher_round, loss in [(1, 0.55), (2, 0.545)]:  # 0.05 below the start; then 0.005
        teachers.global_arrays = averages[teacher_round]
        keep = policy.judge(teacher_round, loss)
        teachers.settle(teacher_round, keep)
        if not keep:
            policy.end_federation(teacher_round)
    assert policy.best == (1, 0.55) and policy.scores == [(0, 0.60), (1, 0.55), (2, 0.545)]
    assert teachers.rounds == policy.federated_rounds == 2  # ended after round 2 of 3
    assert teachers.global_arrays is averages[1]  # the best teacher is final
    assert policy.decide(3, 0, None) == (0.0, "the federated teacher is final")
    # An average above the start: the start stays final.
    first = TeacherFederation(2, start=start)
    worse = ValidatedTeacher(0.5, 0.01, 2)
    worse.judge(0, 0.60)
    first.global_arrays = averages[1]
    first.settle(1, worse.judge(1, 0.70))
    assert first.global_arrays is start and first.rounds == 1
    # The decisions survive a resume through JSON.
    restored = ValidatedTeacher(0.5, 0.01, 3)
    restored.load_state(json.loads(json.dumps(policy.state())))
    restored.end_federation(2)
    assert restored.best == policy.best
    assert [restored.decide(r, 0, None) for r in (2, 3)] == [
        policy.decide(r, 0, None) for r in (2, 3)
    ]


def test_time_aware_budgets_equalise_a_constructed_round() -> None:
    """Four clients, 1x to 8x slower; the slow ones' plans are cut to the median's time."""
    speeds = {
        p: Speed(per_step=0.01 * f, per_teacher_epoch=3.0 * f, fixed=0.2 * f)
        for p, f in enumerate([1.0, 2.0, 4.0, 8.0])
    }
    plan = {p: (40, 0.5 if p in (0, 3) else 0.0) for p in speeds}
    before = {p: estimate_seconds(speeds[p], *plan[p]) for p in plan}
    assert max(before.values()) / min(before.values()) > 10  # 16.8 s against 1.2 s
    deadline = 2.5
    fitted = fit_to_deadline(plan, speeds, deadline, min_steps=5)
    after = {
        p: estimate_seconds(speeds[p], steps, epochs) for p, (steps, epochs, _) in fitted.items()
    }
    assert fitted[0] == (40, 0.5, "")  # on time: untouched, its teacher chunk included
    assert fitted[1] == (40, 0.0, "")
    assert fitted[2] == (40, 0.0, "")  # 2.4 s
    steps, epochs, why = fitted[3]
    # The slowest defers its whole teacher chunk (no sliver of one) and runs what fits.
    assert epochs == 0.0 and steps == math.floor((2.5 - 1.6) / 0.08) == 11
    assert why == "deadline 2.5 s: teacher chunk deferred: steps 40 -> 11"
    assert all(seconds <= deadline for seconds in after.values())
    spread = max(after.values()) - min(after.values())
    assert spread < 0.1 * (max(before.values()) - min(before.values()))
    # min-steps is a floor even when it cannot meet the deadline; unmeasured clients stay.
    floor = fit_to_deadline({3: (40, 0.0), 9: (40, 1.0)}, speeds, 0.5, min_steps=5)
    assert floor[3][0] == 5 and floor[9] == (40, 1.0, "")


def test_the_epoch_cap_bounds_each_budget_by_the_clients_rows() -> None:
    """student-max-epochs: at most that many passes over a client's declared train rows."""
    from strategies import build_strategy

    config = {
        "strategy": "llm-guided",
        "selection": "all",
        "steps-policy": "fixed",
        "local-steps": 40,
        "min-steps": 2,
        "student-batch-size": 16,
        "student-max-epochs": 2.0,
    }
    strategy = build_strategy(RunConfig.from_flat(config))
    strategy.declare_examples({0: 24, 1: 1000, 2: 3})
    strategy.bind_nodes({BIG: 0, BIG + 1: 1, BIG + 2: 2})
    plan, _ = strategy.plan_round(1, [0, 1, 2])
    assert plan[0]["steps"] == 3  # ceil(2 x 24 / 16)
    assert plan[0]["reason"] == "fixed; capped at 2 epochs of 24 rows: 3"
    assert plan[1]["steps"] == 40 and plan[1]["reason"] == "fixed"  # the cap (125) is above
    assert plan[2]["steps"] == 2  # ceil(2 x 3 / 16) = 1, raised to min-steps
    # Off (the default): the budget stands whatever the rows.
    uncapped = build_strategy(RunConfig.from_flat({**config, "student-max-epochs": 0.0}))
    uncapped.declare_examples({0: 24})
    assert uncapped.plan_round(1, [0])[0][0]["steps"] == 40


def test_the_teacher_step_cap_cuts_epochs_to_fit_and_then_keeps_the_teacher() -> None:
    """teacher-max-steps: a teacher's steps in all stay within it, however many rows."""
    from strategies import build_strategy

    config = {
        "strategy": "llm-guided",
        "selection": "all",
        "teacher-policy": "steered",
        "teacher-epochs": 2.0,
        "teacher-chunk-epochs": 2.0,
        "teacher-batch-size": 16,
        "teacher-max-steps": 30,
    }
    strategy = build_strategy(RunConfig.from_flat(config))
    strategy.declare_examples({0: 711, 1: 100})
    first, _ = strategy.plan_round(1, [0, 1])
    # 711 rows: 2 epochs would be 89 steps; 0.6751 epochs is ceil(29.9998) = 30.
    assert first[0]["teacher-epochs"] == 0.6751
    assert math.ceil(0.6751 * 711 / 16) == 30
    assert first[0]["teacher-reason"] == "first chunk; capped at 30 steps: 0.6751 epochs"
    assert first[1]["teacher-epochs"] == 2.0  # 13 steps: within the cap
    # After 30 steps the teacher is kept, though the policy would train it on.
    strategy.clients[0] = replace(_teacher_memory([1.1, 0.9], 1.0, steps=30), num_examples=711)
    assert strategy.teacher_budget(2, 0) == (0.0, "kept: 30 steps done, the cap of 30")
    # A teacher with steps left gets what is left: 160 rows, 10 steps done, 20 to go.
    strategy.declare_examples({2: 160})
    strategy.clients[2] = _teacher_memory([1.1, 0.6], 1.0, steps=10)
    epochs, reason = strategy.teacher_budget(2, 2)
    assert math.ceil(epochs * 160 / 16) <= 20 and epochs == 1.0  # the policy's 1 chunk fits


def _losses(values: list[float]) -> list[dict[str, Any]]:
    return [{"round": r, "val": {"loss": v, "accuracy": 0.5}} for r, v in enumerate(values)]


def test_noise_plateau_stops_within_the_noise_and_not_on_a_steady_gain() -> None:
    rule = NoisePlateau(patience=3, noise_factor=1.0)
    # Round 1's drop is not noise; then +-0.03 scatter around 1.0 with no gain.
    noisy = [2.0, 1.0, 1.03, 0.98, 1.01, 0.99, 1.02]
    assert rule.check(4, _losses(noisy[:5])) is None  # too few rounds to tell
    reason = rule.check(5, _losses(noisy[:6]))
    assert reason is not None and reason.startswith("noise-plateau: the last 3 rounds improved")
    # A slow steady gain (0.02 a round) beats its own noise (0.02): it goes on.
    steady = [2.0, 1.0, 0.98, 0.96, 0.94, 0.92, 0.90, 0.88]
    assert all(rule.check(r, _losses(steady[: r + 1])) is None for r in range(1, 8))
    assert math.isnan(NoisePlateau.noise([2.0, 1.0]))  # no change after round 1 yet


def _gap_history(gaps: list[float], evaluate: bool = True) -> list[dict[str, Any]]:
    """Round records whose clients' global-student gaps to their teachers are ``gaps``
    (two clients, teachers at 0.5 and 0.7 nats; round 0 first)."""
    teachers = {0: 0.5, 1: 0.7}
    history: list[dict[str, Any]] = [{"round": 0, "val": {"loss": 2.0, "accuracy": 0.3}}]
    for r, gap in enumerate(gaps, start=1):
        student = {p: t + gap + (0.01 if p else -0.01) for p, t in teachers.items()}
        clients = [
            {
                "partition-id": p,
                "num-examples": 10,
                "steps": 5,
                "teacher-val-loss": t,
                "global-val-loss": student[p],
            }
            for p, t in teachers.items()
        ]
        record: dict[str, Any] = {"round": r, "val": {"loss": 1.0, "accuracy": 0.5}}
        record["clients"] = clients
        if evaluate:  # the evaluate phase's figures are read first; the replies' are older
            record["clients"] = [{**c, "global-val-loss": 9.0} for c in clients]
            record["federated-val"] = {"clients": {str(p): {"loss": v} for p, v in student.items()}}
        history.append(record)
    return history


def test_the_teacher_stop_fires_on_a_converged_run_and_not_on_a_noisy_one() -> None:
    rule = TeacherNoise(patience=3, noise_factor=1.0)
    assert teacher_gaps(_gap_history([0.9, 0.4])) == pytest.approx([0.9, 0.4])
    assert teacher_gaps(_gap_history([0.9, 0.4], evaluate=False)) == pytest.approx([0.9, 0.4])
    # Converged: the gap stopped closing and scatters by +-0.02 around 0.2.
    converged = [0.9, 0.4, 0.2, 0.22, 0.19, 0.21, 0.2]
    assert rule.check(5, _gap_history(converged[:5])) is None  # too few rounds to tell
    reason = rule.check(6, _gap_history(converged[:6]))
    assert reason is not None and "closed the gap to the teachers" in reason
    # Matched: the student is as good as the teachers within the noise.
    matched = [0.9, 0.4, 0.2, 0.1, 0.05, 0.02, 0.01]
    reason = rule.check(7, _gap_history(matched))
    assert reason is not None and "within 0.0100 nats of the teachers" in reason
    # Noisy but still learning: +-0.06 swings around a gap closing by 0.05 a round.
    noisy = [0.9, 0.8, 0.81, 0.64, 0.65, 0.48, 0.49, 0.32, 0.33]
    assert all(rule.check(r, _gap_history(noisy[:r])) is None for r in range(1, 10))
    # One unlucky round after a steady gain does not end it either.
    unlucky = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.6]
    assert rule.check(7, _gap_history(unlucky)) is None


class Fleet:
    """Fake clients 1x-8x slow whose teachers improve by a shrinking amount each chunk."""

    def __init__(self) -> None:
        self.totals: dict[int, int] = {}

    def __call__(self, position: int, server_round: int, config: dict[str, Any]) -> dict[str, Any]:
        factor = 2.0 ** (position % 4)
        rows = 10 + position
        steps = math.ceil(float(config["teacher-epochs"]) * rows / 16)
        before = self.totals.get(position, 0)
        total = self.totals[position] = before + steps
        chunks = total / max(1, math.ceil(rows / 16))
        student = 0.01 * int(config["local-steps"]) * factor
        return {
            "teacher-steps": steps,
            "teacher-total-steps": total,
            "teacher-seconds": 0.3 * steps * factor,
            "teacher-val-loss": 0.7 + 0.4 * 0.5**chunks,
            "teacher-untrained-val-loss": 1.1,
            "student-seconds": student,
            "compute-seconds": student + 0.3 * steps * factor + 0.05 * factor,
        }


GUIDED = {
    "strategy": "llm-guided",
    "selection": "all",
    "steps-policy": "adaptive",
    "teacher-policy": "steered",
    "teacher-epochs": 3.0,
    "teacher-chunk-epochs": 1.0,
    "teacher-min-delta": 0.0,
    "deadline": "median",
    "skip-epsilon": 0.05,
    "skip-rounds": 1,
    "student-max-epochs": 40.0,
    "teacher-max-steps": 3,
    "termination": "noise-plateau",
    "final-model": "best-val",
    "aggregation": "fednova",
}


def test_new_policies_repeat_under_a_seed_and_survive_resume() -> None:
    from strategies import build_strategy

    def build() -> Any:
        strategy = build_strategy(RunConfig.from_flat({**GUIDED, "seed": 5}))
        strategy.declare_examples({p: 10 + p for p in range(8)})  # as the Fleet's rows
        return strategy

    nodes = [BIG + 7919 * i for i in range(8)]
    first, second, fleet_a, fleet_b = build(), build(), Fleet(), Fleet()
    with task_identity():
        why_a: list[str] = []
        why_b: list[str] = []
        plans = [_fake_round(first, r, nodes, fleet_a, why_a) for r in range(1, 6)]
        assert [_fake_round(second, r, nodes, fleet_b, why_b) for r in range(1, 6)] == plans
        # Every lever acted: chunks after round 1, deadlines, deferred chunks, rests.
        reasons = [p["reason"] + " " + p["teacher-reason"] for plan in plans for p in plan.values()]
        assert any("still improving" in r for r in reasons)
        assert any("teacher chunk deferred" in r for r in reasons)
        assert any("deadline" in r for r in reasons)
        assert any(len(plan) < len(nodes) for plan in plans)  # someone rested
        assert any("capped at 40 epochs" in r for r in reasons)
        assert any("capped at 3 steps" in r for r in reasons)
        assert why_a == why_b and all(why_a)  # why each round's clients, the same
        # A fresh strategy loaded with the state decides round 6 as the original does,
        # its clients back under new node IDs.
        resumed = build()
        resumed.load_state(json.loads(json.dumps(first.state())))
        fleet_c = copy.deepcopy(fleet_a)
        new_ids = [node + 1000 for node in nodes]
        assert _fake_round(resumed, 6, new_ids, fleet_c) == _fake_round(first, 6, nodes, fleet_a)


def test_utility_selection_repeats_under_a_seed_and_survives_resume() -> None:
    """Every node in the federated teacher rounds (1 and 2), then k = 4 of 8 by utility,
    none waiting more than the floor; the same under the seed and after a resume."""
    from strategies import build_strategy

    flat = {
        "strategy": "llm-guided",
        "selection": "utility",
        "fraction-train": 0.5,
        "selection-floor": 2,
        "seed": 3,
    }
    nodes = [BIG + 7919 * i for i in range(8)]
    first, second = (build_strategy(RunConfig.from_flat(flat)) for _ in range(2))
    with task_identity():
        why: list[str] = []
        plans = [_fake_round(first, r, nodes, reasons=why) for r in range(1, 7)]
        assert [_fake_round(second, r, nodes) for r in range(1, 7)] == plans
        assert [len(plan) for plan in plans] == [8, 8, 4, 4, 4, 4]
        assert "teacher adapters federated in round 2" in why[1] and "best" in why[2]
        last = {p: 2 for p in range(8)}
        for r, plan in enumerate(plans[2:], start=3):
            last.update({p: r for p in plan})
            assert all(r - seen <= 2 for seen in last.values()), (r, last)
        resumed = build_strategy(RunConfig.from_flat(flat))
        resumed.load_state(json.loads(json.dumps(first.state())))
        new_ids = [node + 1000 for node in nodes]
        assert _fake_round(resumed, 7, new_ids) == _fake_round(first, 7, nodes)
