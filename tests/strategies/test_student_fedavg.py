"""The FedAvg seam with fake replies (no Ray): weighting, per-node configs, registry."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import numpy as np
import pytest
from fakes import Grid, reply
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MessageType,
    Metadata,
    MetricRecord,
    RecordDict,
)

from config import ConfigError, RunConfig
from config.messages import TrainInstructions
from harness.inprocess import task_identity
from strategies import LLMGuidedStrategy, StudentFedAvg, build_strategy
from strategies.registry import check_strategy
from strategies.replies import reply_node
from strategies.rounds import TrainRound


@pytest.fixture(autouse=True)
def as_superlink() -> Iterator[None]:
    with task_identity():
        yield


BIG_ID = 2**64 - 5
#: The node IDs the tests use and the clients (partitions) they serve.
PARTITIONS = {10: 0, 11: 1, 12: 2, BIG_ID: 3}


def _reply(node_id: int, weights: list[float], examples: int) -> Message:
    content = RecordDict(
        {
            "arrays": ArrayRecord({"w": Array(np.array(weights, dtype=np.float32))}),
            "metrics": MetricRecord(
                {"num-examples": examples, "steps": 5, "partition-id": PARTITIONS[node_id]}
            ),
        }
    )
    return reply(content, node_id)


def _send(strategy: StudentFedAvg, nodes: list[int], server_round: int = 1) -> TrainRound:
    """Configure a round, as the server does before replies can count against it."""
    w = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    return strategy.configure_round(server_round, w, ConfigRecord({}), Grid(nodes))


def _strategy(**kwargs: object) -> StudentFedAvg:
    defaults = {
        "local_steps": 7,
        "student_lr": 0.05,
        "projection_lr": 0.02,
        "temperature": 2.0,
        "alpha": 0.5,
    }
    strategy = StudentFedAvg(**{**defaults, **kwargs})  # type: ignore[arg-type]
    strategy.bind_nodes(PARTITIONS)
    return strategy


def test_example_weighted_average_by_hand() -> None:
    strategy = _strategy()
    train = _send(strategy, [10, 11, 12])
    instruction = Message(RecordDict(), dst_node_id=12, message_type=MessageType.TRAIN)
    failed = Message(
        Error(code=2, reason="Traceback ...\nRuntimeError: boom"), reply_to=instruction
    )
    outcome = strategy.aggregate_round(
        train, [_reply(10, [1.0, 1.0], 1), _reply(11, [4.0, 7.0], 2), failed]
    )
    assert outcome.arrays is not None
    # (1 * [1, 1] + 2 * [4, 7]) / 3 = [3, 5]
    np.testing.assert_allclose(outcome.arrays["w"].numpy(), [3.0, 5.0])
    assert list(outcome.reports) == [0, 1]  # by client (partition), not node ID
    assert outcome.failures == [
        {"node-id": 12, "partition-id": 2, "code": 2, "reason": "RuntimeError: boom"}
    ]


def test_an_error_the_superlink_wrote_is_charged_to_the_node_it_was_for() -> None:
    strategy = _strategy()
    arrays = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    train = strategy.configure_round(2, arrays, ConfigRecord({}), Grid([10, BIG_ID]))
    sent = train.messages
    for message in sent:  # as a grid does when it pushes them
        message.metadata.__dict__["_message_id"] = f"id-{message.metadata.dst_node_id}"
    unavailable = Message(  # how the SuperLink answers for a node that stopped heartbeating
        Error(code=5, reason="Error: Node Unavailable"),
        metadata=Metadata(
            run_id=1,
            message_id="",
            src_node_id=1,  # the SuperLink's own ID
            dst_node_id=1,
            reply_to_message_id=f"id-{BIG_ID}",
            group_id="2",
            created_at=time.time(),
            ttl=60.0,
            message_type=MessageType.TRAIN,
        ),
    )
    outcome = strategy.aggregate_round(train, [_reply(10, [1.0, 1.0], 1), unavailable])
    assert outcome.failures == [
        {"node-id": BIG_ID, "partition-id": 3, "code": 5, "reason": "Error: Node Unavailable"}
    ]
    assert reply_node(unavailable, sent) == BIG_ID
    assert reply_node(_reply(10, [0.0, 0.0], 1), sent) == 10


def test_one_message_per_node_with_its_own_config() -> None:
    strategy = _strategy()
    arrays = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    train = strategy.configure_round(3, arrays, ConfigRecord({}), Grid([12, 10, 11]))
    messages = train.messages
    assert [m.metadata.dst_node_id for m in messages] == [10, 11, 12]
    configs = [m.content.config_records["config"] for m in messages]
    assert all(c["local-steps"] == 7 and c["server-round"] == 3 for c in configs)
    assert all(c["alpha"] == 0.5 and c["temperature"] == 2.0 for c in configs)
    assert len({id(c) for c in configs}) == 3  # a separate record per node
    first = {
        "teacher-epochs": 2.0,
        "teacher-reason": "first participation",
        "teacher-restore-steps": 0,
    }
    own_shots = {"shots": 0, "shots-reason": "node setting"}  # built without a shots setting
    assert train.plan == {
        p: {"steps": 7, "reason": "fixed", **first, **own_shots} for p in (0, 1, 2)
    }
    assert train.selection_reason == "random 3 of 3"
    assert all(c["shots"] == 0 for c in configs)
    assert all(c["teacher-epochs"] == 2.0 for c in configs)


def test_64_bit_node_ids_reach_the_messages_exactly() -> None:
    nodes = [2**64 - 1, 2**63 + 12345, 171412779869714627, 3]
    strategy = _strategy()
    strategy.bind_nodes({node: i for i, node in enumerate(nodes)})
    arrays = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    messages = strategy.configure_train(1, arrays, ConfigRecord({}), Grid(nodes))
    assert sorted(m.metadata.dst_node_id for m in messages) == sorted(nodes)


def test_a_restarted_node_is_the_same_client_under_its_new_id() -> None:
    strategy = _strategy()
    strategy.bind_nodes({99: 1})  # node 11 restarted as node 99, still partition 1
    assert strategy.partitions == {10: 0, 12: 2, BIG_ID: 3, 99: 1}
    arrays = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    train = strategy.configure_round(1, arrays, ConfigRecord({}), Grid([10, 99]))
    assert [m.metadata.dst_node_id for m in train.messages] == [10, 99]
    assert list(train.plan) == [0, 1]


def test_fractional_selection_is_seeded_and_bounded() -> None:
    clients = list(range(10))
    picks = [_strategy(fraction_train=0.3, seed=s).select_clients(2, clients) for s in (1, 1, 2)]
    assert picks[0] == picks[1] and picks[0] != picks[2] and len(picks[0]) == 3
    assert len(_strategy(fraction_train=0.05, min_train_nodes=2).select_clients(1, clients)) == 2
    assert _strategy(fraction_train=0.5, min_train_nodes=5).select_clients(1, [1, 2]) == [1, 2]


class CustomStrategy(StudentFedAvg):
    """A user strategy: every client runs one step more each round."""

    def step_budget(self, server_round: int, partition: int) -> tuple[int, str]:
        return self.local_steps + server_round, "custom"


def test_registry_builds_builtin_and_module_class() -> None:
    assert type(build_strategy(RunConfig.from_flat({"strategy": "fedavg"}))) is StudentFedAvg
    assert type(build_strategy(RunConfig())) is LLMGuidedStrategy  # the default
    spec = f"{__name__}:CustomStrategy"
    strategy = build_strategy(RunConfig.from_flat({"strategy": spec}))
    assert isinstance(strategy, CustomStrategy)
    assert strategy.step_budget(2, 5) == (22, "custom")
    with pytest.raises(ConfigError, match="has no attribute 'Nope'"):
        check_strategy(RunConfig.from_flat({"strategy": f"{__name__}:Nope"}))


def _steps_reply(node_id: int, weights: list[float], examples: int, steps: int) -> Message:
    reply = _reply(node_id, weights, examples)
    reply.content.metric_records["metrics"]["steps"] = steps
    return reply


class PlannedSteps(StudentFedAvg):
    """Client 0 is planned 2 steps, client 1 is planned 8."""

    def step_budget(self, server_round: int, partition: int) -> tuple[int, str]:
        return (2, "two") if partition == 0 else (8, "eight")


def _planned(aggregation: str) -> StudentFedAvg:
    strategy = PlannedSteps(
        local_steps=7, student_lr=0.05, projection_lr=0.02, temperature=2.0, alpha=0.5,
        aggregation=aggregation,
    )  # fmt: skip
    strategy.bind_nodes(PARTITIONS)
    return strategy


def test_fednova_normalises_updates_by_the_planned_steps_by_hand() -> None:
    strategy = _planned("fednova")
    sent = ArrayRecord({"w": Array(np.array([0.0, 0.0], dtype=np.float32))})
    train = strategy.configure_round(1, sent, ConfigRecord({}), Grid([10, 11]))
    replies = [
        _steps_reply(10, [-2.0, 4.0], 1, 2),  # per step: (1, -2)
        _steps_reply(11, [-8.0, 0.0], 3, 8),  # per step: (1, 0)
    ]
    outcome = strategy.aggregate_round(train, replies)
    arrays = outcome.arrays
    assert arrays is not None and outcome.step_mismatches == []
    # p = (1/4, 3/4); d = 1/4 (1, -2) + 3/4 (1, 0) = (1, -0.5); tau_eff = 1/4 2 + 3/4 8 = 6.5
    np.testing.assert_allclose(arrays["w"].numpy(), [-6.5, 3.25])
    plain = _planned("fedavg")
    list(plain.configure_train(1, sent, ConfigRecord({}), Grid([10, 11])))
    fedavg, _ = plain.aggregate_train(1, replies)
    assert fedavg is not None  # plain FedAvg: 1/4 (-2, 4) + 3/4 (-8, 0) = (-6.5, 1)
    np.testing.assert_allclose(fedavg["w"].numpy(), [-6.5, 1.0])


def test_a_client_that_ran_other_steps_than_planned_is_logged_and_recorded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    strategy = _planned("fednova")
    sent = ArrayRecord({"w": Array(np.array([0.0, 0.0], dtype=np.float32))})
    train = strategy.configure_round(1, sent, ConfigRecord({}), Grid([10, 11]))
    replies = [
        _steps_reply(10, [-2.0, 4.0], 1, 2),
        _steps_reply(11, [-8.0, 0.0], 3, 5),  # claims 5 of its planned 8
    ]
    strategy_logger = logging.getLogger("strategies.student_fedavg")  # may not propagate
    strategy_logger.addHandler(caplog.handler)
    try:
        with caplog.at_level("WARNING", logger="strategies.student_fedavg"):
            outcome = strategy.aggregate_round(train, replies)
    finally:
        strategy_logger.removeHandler(caplog.handler)
    arrays = outcome.arrays
    assert outcome.step_mismatches == [{"partition-id": 1, "planned": 8, "ran": 5}]
    assert "client 1 ran 5 steps, 8 were planned" in caplog.text
    assert arrays is not None  # FedNova still divides by the planned 8, not the claimed 5
    np.testing.assert_allclose(arrays["w"].numpy(), [-6.5, 3.25])


def test_fednova_with_equal_steps_is_fedavg() -> None:
    sent = ArrayRecord({"w": Array(np.array([0.5, -1.0], dtype=np.float32))})
    replies = [_steps_reply(10, [1.0, 2.0], 2, 7), _steps_reply(11, [3.0, -4.0], 6, 7)]
    results = []
    for aggregation in ("fedavg", "fednova"):
        strategy = _strategy(aggregation=aggregation)
        list(strategy.configure_train(1, sent, ConfigRecord({}), Grid([10, 11])))
        arrays, _ = strategy.aggregate_train(1, replies)
        assert arrays is not None
        results.append(arrays["w"].numpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6)


def test_replies_are_remembered_and_the_state_round_trips() -> None:
    strategy = _strategy()
    train = _send(strategy, [BIG_ID], server_round=2)
    reply = _reply(BIG_ID, [1.0, 1.0], 4)
    reply.content.metric_records["metrics"]["student-val-loss"] = 0.9
    reply.content.metric_records["metrics"]["teacher-val-loss"] = 0.8
    strategy.aggregate_round(train, [reply])
    strategy.observe_val(2, {"loss": 1.1, "accuracy": 0.5})
    memory = strategy.clients[3]  # BIG_ID serves partition 3
    assert (memory.budget, memory.rounds, memory.last_round) == (5, 1, 2)
    assert memory.ratio == pytest.approx(0.9 / 0.8)
    restored = _strategy()
    restored.load_state(json.loads(json.dumps(strategy.state())))
    assert restored.state() == strategy.state() and restored.val_loss == 1.1


def test_fedprox_sends_its_proximal_weight() -> None:
    config = RunConfig.from_flat({"strategy": "fedprox", "proximal-mu": 0.3})
    strategy = build_strategy(config)
    strategy.bind_nodes(PARTITIONS)
    arrays = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    (message,) = strategy.configure_train(1, arrays, ConfigRecord({}), Grid([10]))
    assert message.content.config_records["config"]["proximal-mu"] == 0.3
    plain = build_strategy(RunConfig.from_flat({"strategy": "fedavg"}))
    plain.bind_nodes(PARTITIONS)
    (message,) = plain.configure_train(1, arrays, ConfigRecord({}), Grid([10]))
    assert message.content.config_records["config"]["proximal-mu"] == 0.0


def _teacher_reply(node_id: int, **teacher: int) -> Message:
    """A good reply of 48 examples whose metrics also report ``teacher`` (metric keys)."""
    reply = _reply(node_id, [0.5, 0.5], 48)
    metrics = dict(reply.content.metric_records["metrics"])
    metrics.update({k.replace("_", "-"): v for k, v in teacher.items()})
    reply.content["metrics"] = MetricRecord(metrics)
    return reply


def test_teacher_budgets_are_checked_and_a_lost_teacher_gets_a_restore_budget() -> None:
    """48 rows, batch 16, 2 epochs: a first chunk of 6 steps and not one more. A node
    that says it lost its teacher (or failed) may rebuild the 6 steps, and only then."""
    strategy = _strategy(teacher_batch_size=16)
    strategy.declare_examples({0: 48, 1: 48})
    strategy.declare_teachers({0: 0, 1: 0})
    train = _send(strategy, [10, 11])
    assert {p: plan["teacher-restore-steps"] for p, plan in train.plan.items()} == {0: 0, 1: 0}
    outcome = strategy.aggregate_round(
        train,
        [
            _teacher_reply(10, teacher_steps=6, teacher_total_steps=6),
            _teacher_reply(11, teacher_steps=7, teacher_total_steps=7),
        ],
    )
    [failure] = outcome.failures
    assert failure["partition-id"] == 1 and "teacher-steps 7 is outside 0..6" in failure["reason"]
    assert strategy.clients[0].teacher_total_steps == 6 and 1 not in strategy.clients

    plan, _ = strategy.plan_round(2, [0, 1])
    assert (plan[0]["teacher-epochs"], plan[0]["teacher-restore-steps"]) == (0.0, 0)
    assert (plan[1]["teacher-epochs"], plan[1]["teacher-restore-steps"]) == (2.0, 0)

    strategy.declare_teachers({0: 0})  # its node restarted: the statistics reply says so
    train = _send(strategy, [10], server_round=2)
    assert train.plan[0]["teacher-restore-steps"] == 6
    config = TrainInstructions.from_record(train.messages[0].content["config"])
    assert (config.teacher_epochs, config.teacher_restore_steps) == (0.0, 6)
    too_much = _teacher_reply(10, teacher_restore_steps=12, teacher_total_steps=12)
    outcome = strategy.aggregate_round(train, [too_much])
    assert "teacher-restore-steps 12 is outside 0..6" in outcome.failures[0]["reason"]
    train = _send(strategy, [10], server_round=3)  # still owed: the failed reply proved nothing
    assert train.plan[0]["teacher-restore-steps"] == 6
    outcome = strategy.aggregate_round(
        train, [_teacher_reply(10, teacher_restore_steps=6, teacher_total_steps=6)]
    )
    assert (
        outcome.failures == [] and strategy.plan_round(4, [0])[0][0]["teacher-restore-steps"] == 0
    )


def test_federated_teachers_are_budgeted_each_federated_round_and_never_restored() -> None:
    strategy = _strategy(teacher_batch_size=16, teacher_federated_rounds=2)
    strategy.declare_examples({0: 48})
    strategy.declare_teachers({0: 0})
    arrays = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    for server_round, epochs, reason in [
        (1, 2.0, "federated round 1 of 2"),
        (2, 2.0, "federated round 2 of 2"),
        (3, 0.0, "the federated teacher is final"),
    ]:
        train = strategy.configure_round(server_round, arrays, ConfigRecord({}), Grid([10]))
        plan = train.plan[0]
        assert (plan["teacher-epochs"], plan["teacher-reason"]) == (epochs, reason)
        assert plan["teacher-restore-steps"] == 0
        steps = 6 if epochs else 0
        total = 6 * min(server_round, 2)
        outcome = strategy.aggregate_round(
            train, [_teacher_reply(10, teacher_steps=steps, teacher_total_steps=total)]
        )
        assert outcome.failures == []
    # After the federated rounds, a reply that fine-tuned anyway is refused.
    train = strategy.configure_round(4, arrays, ConfigRecord({}), Grid([10]))
    outcome = strategy.aggregate_round(
        train, [_teacher_reply(10, teacher_steps=1, teacher_total_steps=13)]
    )
    assert "teacher-steps 1 is outside 0..0" in outcome.failures[0]["reason"]


def test_a_teacher_federation_that_ended_early_budgets_no_more_teacher_epochs() -> None:
    """The flow tells the policy once (``end_federation``) when the federated teacher became
    final early; later rounds plan no teacher epochs, and a later round number cannot
    reopen it."""
    strategy = _strategy(teacher_batch_size=16, teacher_federated_rounds=3)
    strategy.declare_examples({0: 48})
    arrays = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    strategy.teacher_policy.end_federation(1)
    strategy.teacher_policy.end_federation(5)  # never longer than it was
    plan = strategy.configure_round(2, arrays, ConfigRecord({}), Grid([10])).plan[0]
    assert (plan["teacher-epochs"], plan["teacher-reason"]) == (
        0.0,
        "the federated teacher is final",
    )
    assert strategy.teacher_policy.federated_rounds == 1


def test_flowers_phases_give_what_the_round_values_give() -> None:
    """Flower's ``configure_train`` / ``aggregate_train`` are thin wrappers over
    ``configure_round`` / ``aggregate_round``; replies to a round that was not sent count
    for nothing."""
    replies = [_reply(10, [1.0, 1.0], 1), _reply(11, [4.0, 7.0], 2)]
    by_value = _strategy()
    outcome = by_value.aggregate_round(_send(by_value, [10, 11]), replies)
    by_flower = _strategy()
    arrays = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    messages = list(by_flower.configure_train(1, arrays, ConfigRecord({}), Grid([10, 11])))
    assert [m.metadata.dst_node_id for m in messages] == [10, 11]
    assert by_flower.aggregate_train(2, replies) == (None, None)  # round 2 was never sent
    new, metrics = by_flower.aggregate_train(1, replies)
    assert new is not None and outcome.arrays is not None and metrics is None
    np.testing.assert_array_equal(new["w"].numpy(), outcome.arrays["w"].numpy())
    assert by_flower.state() == by_value.state()
