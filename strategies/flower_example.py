"""A strategy as a Flower user writes one, plugged in by ``strategy = "module:Class"``.

:class:`ServerStepFedAvg` subclasses Flower's own ``FedAvg`` and knows nothing
of this project: it moves the global model ``server_lr`` of the way from the
arrays it sent towards the clients' example-weighted mean (FedAvg with a
server learning rate). Run it on the student with the run-config keys
``strategy='strategies.flower_example:ServerStepFedAvg'`` and
``strategy-options='{"server_lr": 0.5}'`` (README, "Flower's strategies").

Any subclass of ``flwr.serverapp.strategy.Strategy`` in any importable module
plugs in the same way (:mod:`strategies.flower_aggregator`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg


class ServerStepFedAvg(FedAvg):
    """FedAvg whose global model takes a step of ``server_lr`` towards the clients' mean."""

    def __init__(self, server_lr: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0 < server_lr <= 1:
            raise ValueError(f"server_lr must be in (0, 1], got {server_lr}")
        self.server_lr = server_lr
        self.sent: ArrayRecord | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.sent = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        mean, metrics = super().aggregate_train(server_round, replies)
        if mean is None or self.sent is None:
            return mean, metrics
        stepped = {
            key: Array(sent.numpy() + self.server_lr * (mean[key].numpy() - sent.numpy()))
            for key, sent in self.sent.items()
        }
        return ArrayRecord(stepped), metrics
