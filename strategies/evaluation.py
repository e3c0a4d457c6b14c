"""Flower's evaluate phase for the student: the new global student on clients' own rows.

After each round's aggregation, ``fraction-evaluate`` of the connected clients
(counted as Flower does, the share rounded down, but at least one; drawn
seeded by round) receive the new global student in an ``evaluate`` message
and score it on their local validation rows (the ClientApp's ``evaluate``
handler). Each reply is checked like a train reply
(finite metrics, accuracy in [0, 1], ``num-examples`` within the validation
rows the node declared before training); a reply that fails is a recorded
failure and adds nothing. The accepted figures are averaged, weighted by
``num-examples``, into the record that
:meth:`FederatedEvaluation.aggregate_evaluation` returns and the round flow
writes as ``federated-val``.

Each accepted figure is also the newest the strategy knows of that client's
rows (:attr:`~strategies.memory.ClientMemory.global_gap`: the global student's
loss there against the client's teacher), which ``selection=gap`` ranks by;
the curves and the stop rules read the server's own validation split.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid

from config.messages import CONFIG_KEY, COST_METRICS, METRICS_KEY, STUDENT_KEY, EvaluateReport
from strategies.memory import ClientMemory
from strategies.replies import REJECTED, failure_record
from strategies.robust import metrics_problem


def evaluate_count(available: int, fraction: float) -> int:
    """How many of ``available`` clients score the student: ``fraction`` of them rounded
    down, but at least one (none with ``fraction <= 0`` or no client)."""
    if fraction <= 0 or available <= 0:
        return 0
    return min(available, max(1, int(available * fraction)))


def evaluate_reply_problem(
    metrics: Mapping[str, Any] | None, declared_val_examples: int | None
) -> tuple[EvaluateReport | None, str | None]:
    """``(report, None)`` for an evaluate reply that may count, else ``(None, reason)``."""
    if metrics is None:
        return None, "no metrics in the reply"
    problem = metrics_problem(metrics)
    if problem:
        return None, problem
    try:
        report = EvaluateReport.from_mapping(metrics)
    except ValueError as err:
        return None, f"metrics: {err}"
    if report.num_examples < 1 or (
        declared_val_examples is not None and report.num_examples > declared_val_examples
    ):
        return None, (
            f"num-examples {report.num_examples} is outside 1..{declared_val_examples} "
            "(the validation rows the node declared before training)"
        )
    return report, None


class FederatedEvaluation:
    """``configure_evaluate`` and ``aggregate_evaluate`` for a strategy keyed by partition.

    A mixin of :class:`~strategies.student_fedavg.StudentFedAvg`: it reads the
    strategy's ``partitions`` (node -> partition), ``seed`` and
    ``fraction_evaluate`` (Flower's FedAvg attribute), and writes each accepted
    figure into the client's memory (``clients``: ``evaluated_loss``, read by
    :attr:`~strategies.memory.ClientMemory.global_gap`).
    """

    partitions: dict[int, int]
    clients: dict[int, ClientMemory]
    seed: int
    fraction_evaluate: float

    def _reset_evaluation(self) -> None:
        self.declared_val_examples: dict[int, int] = {}
        # What Flower's configure_evaluate sent, for its aggregate_evaluate.
        self._evaluate_sent: list[Message] = []

    def declare_val_examples(self, examples: Mapping[int, int]) -> None:
        """Record the validation rows each partition declared (an evaluate reply's bound)."""
        self.declared_val_examples.update({int(p): int(n) for p, n in examples.items() if n})

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One ``evaluate`` message to each of ``fraction-evaluate`` of the known clients."""
        self._evaluate_sent = []
        if self.fraction_evaluate <= 0:
            return []
        nodes = {self.partitions[n]: n for n in grid.get_node_ids() if n in self.partitions}
        wanted = evaluate_count(len(nodes), self.fraction_evaluate)
        if not wanted:
            return []
        ordered = sorted(nodes)
        rng = np.random.default_rng([self.seed, server_round, 1])  # not train's draw
        picked = sorted(ordered[i] for i in rng.choice(len(ordered), size=wanted, replace=False))
        self._evaluate_sent = [
            Message(
                content=RecordDict(
                    {
                        STUDENT_KEY: arrays,
                        CONFIG_KEY: ConfigRecord({**dict(config), "server-round": server_round}),
                    }
                ),
                dst_node_id=nodes[partition],
                message_type=MessageType.EVALUATE,
            )
            for partition in picked
        ]
        return self._evaluate_sent

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Flower's phase: the example-weighted mean of the accepted replies' validation
        figures (:meth:`aggregate_evaluation` on what :meth:`configure_evaluate` sent)."""
        record = self.aggregate_evaluation(server_round, self._evaluate_sent, replies)
        if not record["clients"]:
            return None
        return MetricRecord({"loss": record["loss"], "accuracy": record["accuracy"]})

    def aggregate_evaluation(
        self, server_round: int, sent: list[Message], replies: Iterable[Message]
    ) -> dict[str, Any]:
        """The ``federated-val`` record of the replies to ``sent``
        (:func:`evaluation_record`): the weighted figures, who was asked, who
        counted and each failure."""
        accepted, failures = {}, []
        for reply in replies:
            if reply.has_error():
                code, reason = reply.error.code, reply.error.reason
                failures.append(failure_record(reply, sent, self.partitions, code, reason))
                continue
            partition = self.partitions.get(int(reply.metadata.src_node_id))
            report, problem = evaluate_reply_problem(
                reply.content.metric_records.get(METRICS_KEY),
                self.declared_val_examples.get(partition) if partition is not None else None,
            )
            if partition is None or report is None:
                reason = f"rejected: {problem or 'the node serves no known partition'}"
                failures.append(failure_record(reply, sent, self.partitions, REJECTED, reason))
            else:
                accepted[partition] = report
                client = self.clients.get(partition)
                if client is not None:  # a client that trained once: its teacher is known
                    client.evaluated_loss = report.student_val_loss
                    client.evaluated_round = server_round
        return evaluation_record(
            [self.partitions.get(int(m.metadata.dst_node_id)) for m in sent], accepted, failures
        )


def evaluation_record(
    asked: list[int | None], accepted: Mapping[int, EvaluateReport], failures: list[dict[str, Any]]
) -> dict[str, Any]:
    """``federated-val`` of ``rounds.jsonl``: the weighted figures and who gave them
    (each accepted client's loss, accuracy and the quantum cost of its evaluation)."""
    examples = sum(r.num_examples for r in accepted.values())
    weights = {p: r.num_examples / examples for p, r in accepted.items()} if examples else {}
    mean = {
        "loss": float(sum(w * accepted[p].student_val_loss for p, w in weights.items())),
        "accuracy": float(sum(w * accepted[p].student_val_accuracy for p, w in weights.items())),
    }
    return {
        **(mean if accepted else {"loss": float("nan"), "accuracy": float("nan")}),
        "examples": examples,
        "asked": sorted(p for p in asked if p is not None),
        "clients": {
            str(p): {
                "loss": r.student_val_loss,
                "accuracy": r.student_val_accuracy,
                **{COST_METRICS[k]: v for k, v in r.cost.items()},
            }
            for p, r in sorted(accepted.items())
        },
        "failures": failures,
    }
