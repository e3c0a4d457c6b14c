"""Any Flower strategy as the student's aggregator.

``strategy = "flwr:FedAdam"`` names a class of ``flwr.serverapp.strategy``;
``strategy = "package.module:Class"`` may name a Flower user's own subclass
of Flower's ``Strategy`` (a ``FedAvg`` subclass, say). Either way the run
keeps everything else: the teachers, distillation on the clients, FedAvg's
plan (``fraction-train`` of the clients, ``local-steps`` each, the teacher
and shot budgets), every reply's checks (:mod:`strategies.robust`) and the
results. Each round :class:`FlowerAggregated` calls the Flower strategy's own
``configure_train`` on the planned clients (its messages are not sent: the
clients get this project's instructions) and its ``aggregate_train`` on the
accepted students, so its server-side state (FedAdam's moments, FedAvgM's
momentum, a differential-privacy wrapper's clipping, noise and accounting)
is its own.

The replies it aggregates hold one ``ArrayRecord`` (the student) and one
``MetricRecord`` with ``num-examples`` and ``train_loss``: the received
global student's loss on the client's validation rows before local
training, what ``QFedAvg`` weighs clients by.

Its constructor keywords come from ``strategy-options``, a JSON object; a
``"strategy"`` value there names the strategy a ``DifferentialPrivacyServerSide*``
wrapper wraps (``"flwr:FedAvg"``). ``min_train_nodes`` and
``min_available_nodes`` default to 1 where the class takes them: the plan,
not the Flower strategy, decides who trains.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from config.errors import ConfigError
from config.messages import STUDENT_KEY, TrainReport
from config.run_config import RunConfig
from strategies.rounds import TrainRound
from strategies.student_fedavg import StudentFedAvg

logger = logging.getLogger(__name__)

#: The prefix of a strategy of ``flwr.serverapp.strategy`` in ``strategy``.
FLOWER = "flwr:"
#: Flower strategies that cannot aggregate the student here, and why.
UNSUPPORTED = {
    "DifferentialPrivacyClientSideFixedClipping": "its clients must clip their updates with "
    "Flower's client mods; use DifferentialPrivacyServerSideFixedClipping",
    "DifferentialPrivacyClientSideAdaptiveClipping": "its clients must clip their updates with "
    "Flower's client mods; use DifferentialPrivacyServerSideAdaptiveClipping",
    "FedProx": "its proximal term would not reach the clients; use strategy=fedprox",
    "FedXgbBagging": "it aggregates XGBoost trees, not arrays",
    "FedXgbCyclic": "it aggregates XGBoost trees, not arrays",
}
#: Keys of ``Strategy`` constructors that the plan owns: at 1 the Flower strategy
#: never waits for more clients than the plan chose.
_PLAN_OWNED = ("min_train_nodes", "min_available_nodes")


def flower_class(spec: str) -> type[Strategy] | None:
    """The Flower ``Strategy`` class ``spec`` names (``flwr:Name``, or ``module:Class``
    naming a ``Strategy`` that is not a :class:`StudentFedAvg`), else None."""
    if spec.startswith(FLOWER):
        name = spec[len(FLOWER) :]
        module = importlib.import_module("flwr.serverapp.strategy")
        cls = getattr(module, name, None)
        if not (isinstance(cls, type) and issubclass(cls, Strategy)) or cls is Strategy:
            left_out = {*UNSUPPORTED, "Result", "Strategy"}
            known = sorted(n for n in module.__all__ if n not in left_out)
            raise ConfigError(
                f"strategy={spec!r}: flwr.serverapp.strategy has no strategy {name!r}; "
                f"use one of {', '.join(FLOWER + n for n in known)}"
            )
        if name in UNSUPPORTED:
            raise ConfigError(f"strategy={spec!r}: not supported here: {UNSUPPORTED[name]}")
        return cls
    if ":" not in spec:
        return None
    module_name, _, class_name = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name, None)
    except ImportError:
        return None  # the registry says why
    if isinstance(cls, type) and issubclass(cls, Strategy) and not issubclass(cls, StudentFedAvg):
        return cls
    return None


def strategy_options(text: str) -> dict[str, Any]:
    """``strategy-options`` as a dict (a one-line :class:`ConfigError` if it is not a JSON
    object)."""
    try:
        options = json.loads(text or "{}")
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"strategy-options={text!r}: not JSON ({err.msg}); write a JSON object such as "
            "'{\"eta\": 0.05}'"
        ) from None
    if not isinstance(options, dict):
        raise ConfigError(
            f"strategy-options={text!r}: must be a JSON object of the strategy's keywords"
        )
    return options


def build_aggregator(spec: str, options: Mapping[str, Any]) -> Strategy:
    """An instance of the Flower strategy ``spec`` with ``options`` as keywords (see the
    module's docstring), or a one-line :class:`ConfigError`."""
    cls = flower_class(spec)
    if cls is None:
        raise ConfigError(f"strategy={spec!r}: not a Flower strategy")
    kwargs = dict(options)
    if isinstance(kwargs.get("strategy"), str):
        kwargs["strategy"] = build_aggregator(kwargs["strategy"], {})
    parameters = inspect.signature(cls).parameters
    for key in _PLAN_OWNED:
        if key in parameters:
            kwargs.setdefault(key, 1)
    try:
        aggregator = cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"strategy={spec!r} with strategy-options={json.dumps(dict(options))}: {err}; "
            "give its keywords in strategy-options"
        ) from None
    for layer in _layers(aggregator):
        fraction = getattr(layer, "fraction_train", 1.0)
        if fraction != 1.0:
            raise ConfigError(
                f"strategy-options: fraction_train={fraction} in {type(layer).__name__}; leave "
                "it out: fraction-train (the run's key) chooses who trains"
            )
    return aggregator


def _layers(strategy: Strategy) -> Iterator[Strategy]:
    """``strategy`` and, for a wrapper, the strategies it wraps."""
    layer: Any = strategy
    while isinstance(layer, Strategy):
        yield layer
        layer = getattr(layer, "strategy", None)


class _PlannedGrid:
    """The grid as the Flower strategy sees it: only the nodes this round plans."""

    def __init__(self, node_ids: Sequence[int]) -> None:
        self._node_ids = list(node_ids)

    def get_node_ids(self) -> list[int]:
        return list(self._node_ids)


class FlowerAggregated(StudentFedAvg):
    """FedAvg's plan and checks, with a Flower strategy combining the accepted students.

    Parameters
    ----------
    aggregator : Strategy
        The Flower strategy whose ``configure_train`` / ``aggregate_train`` run
        each round (see the module's docstring).
    **kwargs
        :class:`StudentFedAvg`'s.
    """

    def __init__(self, *, aggregator: Strategy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aggregator = aggregator

    @classmethod
    def from_config(cls, config: RunConfig) -> FlowerAggregated:
        spec = config.federation.strategy
        aggregator = build_aggregator(spec, strategy_options(config.federation.strategy_options))
        logger.info("the student is aggregated by %s (%s)", type(aggregator).__name__, spec)
        return cls(aggregator=aggregator, **cls.config_kwargs(config))

    def state(self) -> dict[str, Any]:
        """:class:`StudentFedAvg`'s, with the aggregator's class name. The Flower
        strategy's own state (FedAdam's moments) is not kept: a resumed run starts it
        afresh."""
        return {**super().state(), "aggregator": type(self.aggregator).__name__}

    def configure_round(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> TrainRound:
        """This project's round; the Flower strategy's ``configure_train`` runs on the
        planned nodes for its own state, and its messages are not sent."""
        train = super().configure_round(server_round, arrays, config, grid)
        planned = _PlannedGrid([m.metadata.dst_node_id for m in train.messages])
        if train.messages:
            list(self.aggregator.configure_train(server_round, arrays, ConfigRecord({}), planned))  # type: ignore[arg-type]
        return train

    def combine(
        self, train: TrainRound, accepted: Sequence[tuple[int, Message, TrainReport]]
    ) -> ArrayRecord:
        """The Flower strategy's ``aggregate_train`` on the accepted students."""
        replies = [_flower_reply(reply, report) for _, reply, report in accepted]
        arrays, _ = self.aggregator.aggregate_train(train.server_round, replies)
        if arrays is None or set(arrays) != set(train.sent):
            raise RuntimeError(
                f"{type(self.aggregator).__name__}.aggregate_train returned "
                f"{'no arrays' if arrays is None else sorted(arrays)} for round "
                f"{train.server_round} from {len(replies)} accepted replies; "
                f"expected {sorted(train.sent)}"
            )
        # Flower's optimisers return float64; the student travels in the dtypes it was sent in
        return ArrayRecord(
            {k: Array(arrays[k].numpy().astype(sent.dtype)) for k, sent in train.sent.items()}
        )


def _flower_reply(reply: Message, report: TrainReport) -> Message:
    """``reply`` as Flower's strategies read one (same metadata): the student and two metrics."""
    metrics = MetricRecord(
        {"num-examples": report.num_examples, "train_loss": float(report.global_val_loss)}
    )
    student = reply.content.array_records[STUDENT_KEY]
    content = RecordDict({STUDENT_KEY: student, "metrics": metrics})
    flower = copy.copy(reply)  # its own content; the reply keeps its own
    flower.content = content
    return flower
