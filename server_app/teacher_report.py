"""Whether distillation had something to give: the teacher beside the student.

At the end of a run the summary gives, next to the student's figures:

- each client's last reported teacher and linear-probe accuracy on its own
  validation rows (the probe: logistic regression on the frozen base's
  embeddings of its train rows, the ceiling fine-tuning has to beat), and
  which clients' teachers ended below their probe (one warning line names them);
- with ``teacher-federation=fedavg``, where the server holds the one global
  teacher every client distils from, that teacher's accuracy on the server's
  validation rows and, read once like the student's, on the test rows. Local
  teachers stay on their clients, so their test accuracy is not known here.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from config.messages import TRAIN_KEYS
from config.run_config import RunConfig
from llm.inference import predict_logits
from llm.probe import PROBE_HEAD, head_logits, is_head, logit_metrics
from llm.teacher_model import build_teacher_model, load_trainable_arrays, set_head
from server_app.teacher_federation import TeacherFederation
from strategies.teacher import TeacherPolicy
from tasks.datasets import TextDataset

logger = logging.getLogger(__name__)


def clients_teacher(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Each client's last reported teacher and probe validation accuracy, and their means."""
    last: dict[int, Mapping[str, Any]] = {}
    for record in rounds[1:]:
        for client in record["clients"]:
            last[int(client["partition-id"])] = client
    teacher_key, probe_key = TRAIN_KEYS["teacher_val_accuracy"], TRAIN_KEYS["probe_val_accuracy"]
    teacher = {p: float(c.get(teacher_key, math.nan)) for p, c in sorted(last.items())}
    probe = {p: float(c.get(probe_key, math.nan)) for p, c in sorted(last.items())}
    below = [p for p in teacher if teacher[p] < probe[p]]  # NaN compares False: not below
    return {
        "clients-val-accuracy": _mean(teacher.values()),
        "clients-probe-val-accuracy": _mean(probe.values()),
        "below-probe": below,
        "per-client": {
            str(p): {"val-accuracy": teacher[p], "probe-val-accuracy": probe[p]} for p in teacher
        },
    }


def _mean(values: Any) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def global_teacher_metrics(
    config: RunConfig,
    arrays: Mapping[str, np.ndarray],
    rows: TextDataset,
    features: np.ndarray | None = None,
) -> tuple[float, float]:
    """The federated teacher (its pooled adapters and head, or a head alone) scored on
    ``rows``: cross-entropy (nats) and accuracy. A head alone reads ``features`` (the
    frozen base's embeddings of ``rows``) where given, with no pass of the LLM."""
    if is_head(arrays) and features is not None:
        return logit_metrics(head_logits(features, arrays), rows.labels)
    cfg = config.teacher
    model, tokenizer = build_teacher_model(cfg, rows.num_classes, config.federation.seed)
    if is_head(arrays):
        set_head(model, *(arrays[name] for name in PROBE_HEAD))
    else:
        load_trainable_arrays(model, dict(arrays))
    logits = predict_logits(model, tokenizer, rows.texts, cfg.max_length, cfg.embed_batch_size)
    return logit_metrics(logits, rows.labels)


def judge_global_teacher(
    config: RunConfig,
    policy: TeacherPolicy,
    teachers: TeacherFederation,
    teacher_round: int,
    val: tuple[TextDataset, np.ndarray],
) -> dict[str, Any]:
    """Score the global teacher of ``teacher_round`` (0: the start) on the server's
    validation rows and let ``policy`` judge it (``teacher-policy=validated``).

    ``val``: the rows and their frozen-base embeddings. A teacher round's average
    that is not kept ends the federation, the best teacher yet final. Returns the
    round record's ``teacher-val``: the loss (nats), accuracy, verdict, the round
    of the final teacher when the federation ended, and the scoring's seconds.
    """
    started = time.perf_counter()
    arrays = teachers.global_arrays if teacher_round else teachers.start
    assert arrays is not None
    loss, accuracy = global_teacher_metrics(config, arrays, *val)
    kept = policy.judge(teacher_round, loss)
    record: dict[str, Any] = {"teacher-round": teacher_round, "loss": loss, "accuracy": accuracy}
    record["kept"] = kept
    name = "the teachers' start" if teacher_round == 0 else f"round {teacher_round}'s average"
    if teacher_round and not kept:
        teachers.settle(teacher_round, keep=False)
        policy.end_federation(teacher_round)
        best = policy.best
        record["final-teacher-round"] = best[0] if best is not None else teacher_round
        verdict = (
            f"not below the best teacher yet by teacher-min-delta; the teacher of round "
            f"{record['final-teacher-round']} (0: the start) is final"
        )
    else:
        if teacher_round:
            teachers.settle(teacher_round, keep=True)
        verdict = "the best teacher yet" if teacher_round else "the yardstick"
    record["seconds"] = time.perf_counter() - started
    logger.info(
        "%s: server validation loss %.4f nats, acc %.3f: %s (teacher-policy=validated)",
        name,
        loss,
        accuracy,
        verdict,
    )
    return record


def teacher_summary(
    config: RunConfig,
    rounds: Sequence[Mapping[str, Any]],
    global_arrays: Mapping[str, np.ndarray] | None,
    val_rows: TextDataset,
    test_rows: TextDataset,
) -> dict[str, Any]:
    """``summary.json``'s ``teacher``; warns once when teachers ended below their probe."""
    summary: dict[str, Any] = {"federation": config.teacher.federation, **clients_teacher(rounds)}
    if global_arrays is not None:
        summary["val-accuracy"] = global_teacher_metrics(config, global_arrays, val_rows)[1]
        summary["test-accuracy"] = global_teacher_metrics(config, global_arrays, test_rows)[1]
    else:
        summary["val-accuracy"] = summary["test-accuracy"] = None
    if summary["below-probe"]:
        logger.warning(
            "the teacher of %s ended below a linear probe of its frozen encoder on its "
            "validation rows: distillation has little to give; try %s",
            _below_probe_figures(summary),
            _remedies(config),
        )
    return summary


def _below_probe_figures(summary: Mapping[str, Any]) -> str:
    """The clients below their probe, each with its own accuracy against its probe's."""
    figures = summary["per-client"]
    return ", ".join(
        f"client {p} ({figures[str(p)]['val-accuracy']:.3f} against "
        f"{figures[str(p)]['probe-val-accuracy']:.3f})"
        for p in summary["below-probe"]
    )


def _remedies(config: RunConfig) -> str:
    """The teacher levers this run did not use, as settings to try."""
    cfg, policy = config.teacher, config.policy
    chunks = config.federation.strategy == "llm-guided" and policy.teacher_policy != "once"
    tries = [
        "teacher-head='probe'" if cfg.head != "probe" else "",
        "teacher-federation='fedavg'" if cfg.federation != "fedavg" else "",
        "teacher-keep-best=true" if not cfg.keep_best else "",
        # llm-guided's steered and validated teachers train in chunks, within the cap
        f"teacher-chunk-epochs={2 * policy.teacher_chunk_epochs:g}" if chunks else "",
        f"teacher-max-steps={2 * policy.teacher_max_steps}"
        if chunks and policy.teacher_max_steps
        else "",
        "" if chunks else f"teacher-epochs={2 * cfg.epochs:g}",
    ]
    return ", ".join(t for t in tries if t)
