"""Flower's own strategies as the student's aggregator, with fake replies (no Ray):
``flwr:FedAdam`` and friends, a Flower user's ``FedAvg`` subclass, and their errors."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
from fakes import Grid, reply
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MetricRecord,
    RecordDict,
)

from config import ConfigError, RunConfig
from harness.inprocess import task_identity
from strategies import build_strategy
from strategies.flower_aggregator import FlowerAggregated
from strategies.registry import check_strategy

PARTITIONS = {10: 0, 11: 1, 12: 2}
START = [1.0, -2.0]
#: What the clients send back (per node), and their rows.
SENT_BACK = {10: ([3.0, 0.0], 10, 0.9), 11: ([1.0, 2.0], 30, 1.2)}


@pytest.fixture(autouse=True)
def as_superlink() -> Iterator[None]:
    with task_identity():
        yield


def _strategy(spec: str, options: dict[str, object] | None = None) -> FlowerAggregated:
    config = RunConfig.from_flat(
        {"strategy": spec, "strategy-options": json.dumps(options or {}), "local-steps": 5}
    )
    check_strategy(config)
    strategy = build_strategy(config)
    assert isinstance(strategy, FlowerAggregated)
    strategy.bind_nodes(PARTITIONS)
    strategy.declare_examples({p: 100 for p in PARTITIONS.values()})
    return strategy


def _reply(node: int, weights: list[float], examples: int, loss: float) -> Message:
    metrics = {
        "num-examples": examples,
        "steps": 5,
        "partition-id": PARTITIONS[node],
        "global-val-loss": loss,
    }
    content = RecordDict(
        {
            "arrays": ArrayRecord({"w": Array(np.array(weights, dtype=np.float32))}),
            "metrics": MetricRecord(metrics),
        }
    )
    return reply(content, node)


def _round(strategy: FlowerAggregated, server_round: int, start: list[float]) -> np.ndarray:
    arrays = ArrayRecord({"w": Array(np.array(start, dtype=np.float32))})
    grid = Grid(list(PARTITIONS))
    sent = list(strategy.configure_train(server_round, arrays, ConfigRecord({}), grid))
    assert len(sent) == len(PARTITIONS)  # this project's messages, one per planned client
    replies = [_reply(node, *SENT_BACK[node]) for node in SENT_BACK]
    new, _ = strategy.aggregate_train(server_round, replies)
    assert new is not None and new["w"].dtype == "float32"  # sent as float32: kept
    assert len(replies[0].content.metric_records["metrics"]) == 4  # the replies untouched
    return new["w"].numpy().astype(np.float64)


#: The example-weighted mean of SENT_BACK: (10 * [3, 0] + 30 * [1, 2]) / 40.
MEAN = np.array([1.5, 1.5])


def test_flwr_fedadam_keeps_its_moments_across_rounds_as_flower_computes_them() -> None:
    eta, beta_1, beta_2, tau = 0.1, 0.9, 0.99, 1e-3
    strategy = _strategy(
        "flwr:FedAdam", {"eta": eta, "beta_1": beta_1, "beta_2": beta_2, "tau": tau}
    )
    x, m, v = np.array(START), np.zeros(2), np.zeros(2)
    for server_round in (1, 2):
        got = _round(strategy, server_round, list(x))
        delta = MEAN - x
        m = beta_1 * m + (1 - beta_1) * delta
        v = beta_2 * v + (1 - beta_2) * delta**2
        step = eta * np.sqrt(1 - beta_2 ** (server_round + 1)) / (1 - beta_1 ** (server_round + 1))
        x = x + step * m / (np.sqrt(v) + tau)
        np.testing.assert_allclose(got, x, rtol=1e-5)
        assert not np.allclose(got, MEAN)  # not FedAvg's mean
    assert strategy.clients.keys() == {0, 1}  # this project's books still kept


def test_a_flower_users_fedavg_subclass_plugs_in_by_module_and_class() -> None:
    strategy = _strategy("strategies.flower_example:ServerStepFedAvg", {"server_lr": 0.5})
    got = _round(strategy, 1, START)
    np.testing.assert_allclose(got, np.array(START) + 0.5 * (MEAN - START), rtol=1e-6)


def test_qfedavg_reads_each_clients_loss_of_the_received_student() -> None:
    strategy = _strategy("flwr:QFedAvg", {"client_learning_rate": 0.1, "q": 1.0})
    got = _round(strategy, 1, START)
    # q-FFL: delta_k = F_k^q (w - w_k) L, h_k = q F_k^(q-1) |w - w_k|^2 L + F_k^q L, L = 1/lr
    lr, q, w = 0.1, 1.0, np.array(START)
    deltas, hs = [], []
    for weights, _, loss in SENT_BACK.values():
        grad = (w - np.array(weights)) / lr
        deltas.append(loss**q * grad)
        hs.append(q * loss ** (q - 1) * np.sum(grad**2) + loss**q / lr)
    np.testing.assert_allclose(got, w - sum(deltas) / sum(hs), rtol=1e-5)


def test_a_server_side_dp_wrapper_clips_every_update_before_flowers_mean() -> None:
    strategy = _strategy(
        "flwr:DifferentialPrivacyServerSideFixedClipping",
        {
            "strategy": "flwr:FedAvg",
            "noise_multiplier": 0.0,
            "clipping_norm": 1.0,
            "num_sampled_clients": 2,
        },
    )
    got = _round(strategy, 1, START)
    clipped = []
    for weights, _, _ in SENT_BACK.values():
        update = np.array(weights) - START
        clipped.append(update * min(1.0, 1.0 / np.linalg.norm(update)))
    # no noise: the example-weighted mean of the clipped updates
    np.testing.assert_allclose(got, START + (10 * clipped[0] + 30 * clipped[1]) / 40, rtol=1e-5)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"strategy": "flwr:FedAdamm"}, "flwr.serverapp.strategy has no strategy 'FedAdamm'"),
        ({"strategy": "flwr:FedProx"}, "use strategy=fedprox"),
        ({"strategy": "flwr:DifferentialPrivacyClientSideFixedClipping"}, "client mods"),
        ({"strategy": "flwr:QFedAvg"}, "client_learning_rate"),
        ({"strategy": "flwr:FedAdam", "strategy-options": "{eta: 1}"}, "not JSON"),
        ({"strategy": "flwr:FedAdam", "strategy-options": "[1]"}, "must be a JSON object"),
        ({"strategy": "flwr:FedAdam", "strategy-options": '{"etaa": 1}'}, "etaa"),
        (
            {"strategy": "flwr:FedAdam", "strategy-options": '{"fraction_train": 0.5}'},
            "fraction-train (the run's key) chooses who trains",
        ),
        ({"strategy": "flwr:FedAdam", "aggregation": "median"}, "leave aggregation at fedavg"),
    ],
)
def test_a_flower_strategy_that_cannot_run_stops_at_start_up_with_one_line(
    setting: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        check_strategy(RunConfig.from_flat(setting))
    assert "\n" not in str(err.value)
