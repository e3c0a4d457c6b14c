"""The guided strategy's policies from the run config: state, settings, seeded decisions."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from config import ConfigError, RunConfig
from harness.inprocess import task_identity
from server_app.preflight import preflight
from strategies.memory import ClientMemory
from strategies.selection import build_selection
from strategies.steps import build_step_policy
from strategies.termination import build_termination

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
        ({"aggregation": "median"}, "aggregation"),
        ({"strategy": "llm-guided", "local-steps": 500}, "local-steps"),
        ({"strategy": "llmqfl-reference", "steps-policy": "bandit"}, "steps-policy"),
    ],
)
def test_bad_policy_settings_fail_with_one_line_naming_the_key(
    flat: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as err:
        preflight(RunConfig.from_flat(flat))
    message = str(err.value)
    assert message.startswith(f"{key}=") and "\n" not in message


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

    strategy.bind_nodes({node: position for position, node in enumerate(nodes)})
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
    strategy.observe_val(server_round, {"loss": 1.0 / server_round, "accuracy": 0.5})
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
