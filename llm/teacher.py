"""The LoRA teacher's fine-tuning and what a client keeps of it.

A client fine-tunes a sequence classifier with LoRA on its own train rows,
then keeps what the student needs: the teacher's logits for its train and
validation rows, and the teacher's validation cross-entropy (nats) and
accuracy. The model is built in ``llm.teacher_model``; logits and the frozen
base's embeddings come from ``llm.inference``.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from config.model_sections import TeacherConfig
from llm.inference import encode, model_device, pooled_embeddings, predict_logits
from llm.probe import PROBE_HEAD, head_logits, is_head, logit_metrics, probe_head
from llm.teacher_model import build_teacher_model, load_trainable_arrays, set_head, trainable_arrays
from tasks.datasets import TextDataset

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherOutputs:
    """What a client keeps from its fine-tuned teacher.

    Attributes
    ----------
    train_logits, val_logits : np.ndarray
        float32, shape (rows, classes).
    val_loss, val_accuracy : float
        Cross-entropy (nats) and accuracy on the client's validation rows.
    untrained_val_loss : float
        The same cross-entropy before fine-tuning (fresh head), the yardstick
        that shows fine-tuning did something.
    steps : int
        Optimizer steps taken.
    seconds : float
        Wall seconds of fine-tuning plus the logit passes.
    arrays : dict[str, np.ndarray]
        The trained parameters (adapters and head), see :func:`trainable_arrays`.
    """

    train_logits: np.ndarray
    val_logits: np.ndarray
    val_loss: float
    val_accuracy: float
    untrained_val_loss: float
    steps: int
    seconds: float
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def teacher_batches(
    rows: int, batch_size: int, seed: int, start_step: int, steps: int
) -> Iterator[np.ndarray]:
    """The row indices of steps ``start_step .. start_step + steps - 1``.

    The rows of epoch ``e`` are a permutation seeded by ``(seed, e)``, read as one
    stream ``batch_size`` at a time, so training resumed at any step sees the
    same batches as training that never stopped.
    """
    for step in range(start_step, start_step + steps):
        first = step * batch_size
        picked: list[int] = []
        while len(picked) < batch_size:
            epoch, offset = divmod(first + len(picked), rows)
            order = np.random.default_rng([seed, epoch]).permutation(rows)
            picked.extend(order[offset : offset + batch_size - len(picked)].tolist())
        yield np.asarray(picked, dtype=np.int64)


def set_probe_head(
    model: Any,
    train: TextDataset,
    val: TextDataset,
    cfg: TeacherConfig,
    features: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Set a :class:`PooledClassifier`'s head to the probe of the frozen base's embeddings.

    ``features`` are the frozen base's pooled embeddings of ``train`` and
    ``val`` (:func:`pooled_embeddings`) where the caller has them already.
    """
    if features is None:
        embed = functools.partial(
            pooled_embeddings,
            cfg.model,
            max_length=cfg.max_length,
            batch_size=cfg.embed_batch_size,
        )
        features = embed(texts=train.texts), embed(texts=val.texts)
    set_head(
        model, *probe_head(features[0], train.labels, features[1], val.labels, train.num_classes)
    )


def finetune_teacher(
    train: TextDataset,
    val: TextDataset,
    cfg: TeacherConfig,
    seed: int,
    *,
    initial: dict[str, np.ndarray] | None = None,
    epochs: float | None = None,
    steps: int | None = None,
    start_step: int = 0,
    name: str = "teacher",
    probe_features: tuple[np.ndarray, np.ndarray] | None = None,
) -> TeacherOutputs:
    """Fine-tune a teacher on ``train`` and return its outputs.

    Starts from ``initial`` trained parameters when given (a teacher trained in
    earlier rounds, or the averaged adapters of teacher federation; a probe
    head alone, the server's pooled probe, goes on the seeded fresh adapters),
    else from the seeded fresh adapters and head; with ``teacher-head=probe``
    that head is set from the local probe (:func:`set_probe_head`, reading
    ``probe_features`` when given). Runs ``steps`` AdamW steps (default
    ``ceil(epochs * len(train) / teacher-batch-size)``, ``epochs`` defaulting to
    ``teacher-epochs``; 0 only evaluates) on :func:`teacher_batches` from
    ``start_step``. AdamW's moments start afresh with each call. With
    ``teacher-keep-best`` the teacher kept is the one, among the start and the
    end of each epoch, with the lowest validation loss. Logs one line per
    epoch completed, prefixed with ``name``.
    """
    started = time.perf_counter()
    model, tokenizer = _starting_model(train, val, cfg, seed, initial, probe_features)
    untrained_val_loss, _ = logit_metrics(
        predict_logits(model, tokenizer, val.texts, cfg.max_length, cfg.embed_batch_size),
        val.labels,
    )
    if steps is None:
        epochs = cfg.epochs if epochs is None else epochs
        steps = math.ceil(epochs * len(train) / cfg.batch_size) if epochs > 0 else 0
    best = _Best(untrained_val_loss, start_step, trainable_arrays(model)) if cfg.keep_best else None
    _train_steps(model, tokenizer, (train, val), cfg, seed, (start_step, steps), name, best)
    if best is not None and best.step != start_step + steps:
        load_trainable_arrays(model, best.arrays)
        logger.info("%s: keeping the teacher of step %d (lowest val loss)", name, best.step)
    outputs = _outputs(model, tokenizer, (train, val), cfg, untrained_val_loss, steps, started)
    if best is not None and best.step == start_step:
        # The start was kept: its loss is the one scored before fine-tuning. Scoring the
        # same weights again can differ in the last bits (CPU kernels), and a reader that
        # asks "did fine-tuning lower it?" must not read that noise as an improvement.
        outputs = replace(outputs, val_loss=untrained_val_loss)
    logger.info(
        "%s: teacher (%s) after %d steps: val loss %.4f nats (before %.4f), val acc %.3f, %.1f s",
        name,
        cfg.peft_method,
        start_step + steps,
        outputs.val_loss,
        untrained_val_loss,
        outputs.val_accuracy,
        outputs.seconds,
    )
    return outputs


def probe_teacher(
    head: dict[str, np.ndarray], features: tuple[np.ndarray, np.ndarray], val_labels: np.ndarray
) -> TeacherOutputs:
    """A teacher that is a probe head alone on fresh adapters, from the frozen base's
    embeddings of the (train, validation) rows: the same logits as the model would give
    (LoRA's update starts at zero), with no pass of the LLM."""
    started = time.perf_counter()
    train_logits, val_logits = (head_logits(x, head) for x in features)
    val_loss, val_accuracy = logit_metrics(val_logits, val_labels)
    return TeacherOutputs(
        train_logits=train_logits,
        val_logits=val_logits,
        val_loss=val_loss,
        val_accuracy=val_accuracy,
        untrained_val_loss=val_loss,
        steps=0,
        seconds=time.perf_counter() - started,
        arrays=head,
    )


def _starting_model(
    train: TextDataset,
    val: TextDataset,
    cfg: TeacherConfig,
    seed: int,
    initial: dict[str, np.ndarray] | None,
    probe_features: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[Any, Any]:
    """The model and tokenizer that fine-tuning starts from (see :func:`finetune_teacher`)."""
    model, tokenizer = build_teacher_model(cfg, train.num_classes, seed)
    if initial is not None and is_head(initial):  # the pooled probe: fresh adapters, its head
        set_head(model, *(initial[name] for name in PROBE_HEAD))
    elif initial is not None:
        load_trainable_arrays(model, initial)
    elif cfg.head == "probe":
        set_probe_head(model, train, val, cfg, probe_features)
    return model, tokenizer


def _outputs(
    model: Any,
    tokenizer: Any,
    rows: tuple[TextDataset, TextDataset],
    cfg: TeacherConfig,
    untrained_val_loss: float,
    steps: int,
    started: float,
) -> TeacherOutputs:
    """The fine-tuned teacher's logits on ``rows`` (train, val) and its validation metrics."""
    train, val = rows
    logits = [
        predict_logits(model, tokenizer, part.texts, cfg.max_length, cfg.embed_batch_size)
        for part in rows
    ]
    val_loss, val_accuracy = logit_metrics(logits[1], val.labels)
    return TeacherOutputs(
        train_logits=logits[0],
        val_logits=logits[1],
        val_loss=val_loss,
        val_accuracy=val_accuracy,
        untrained_val_loss=untrained_val_loss,
        steps=steps,
        seconds=time.perf_counter() - started,
        arrays=trainable_arrays(model),
    )


@dataclass
class _Best:
    """The teacher with the lowest validation loss so far (``teacher-keep-best``)."""

    loss: float
    step: int
    arrays: dict[str, np.ndarray]

    def check(
        self, model: Any, tokenizer: Any, val: TextDataset, cfg: TeacherConfig, step: int
    ) -> None:
        """Keep ``model`` if its loss on ``val`` is the lowest yet; leaves it in training mode."""
        val_logits = predict_logits(
            model, tokenizer, val.texts, cfg.max_length, cfg.embed_batch_size
        )
        val_loss = logit_metrics(val_logits, val.labels)[0]
        if val_loss < self.loss:
            self.loss, self.step, self.arrays = val_loss, step, trainable_arrays(model)
        model.train()


def _optimizer(model: Any, cfg: TeacherConfig, steps: int) -> tuple[Any, Any]:
    """AdamW on the trained parameters, and the ``teacher-warmup`` schedule (None without)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    warmup = math.ceil(cfg.warmup * steps)
    schedule = (
        torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: min(1.0, (i + 1) / warmup))
        if warmup
        else None
    )
    return optimizer, schedule


def _train_steps(
    model: Any,
    tokenizer: Any,
    rows: tuple[TextDataset, TextDataset],
    cfg: TeacherConfig,
    seed: int,
    span: tuple[int, int],
    name: str,
    best: _Best | None,
) -> None:
    """``span = (start_step, steps)`` AdamW steps of cross-entropy on ``rows[0]``.

    ``teacher-warmup``: the learning rate rises linearly over that share of the
    steps; ``teacher-class-weights``: the loss weighs classes by
    :func:`class_weights`.

    One log line per epoch completed; with ``best``, the validation loss on
    ``rows[1]`` after each epoch and after the last step updates it.
    """
    (train, val), (start_step, steps) = rows, span
    started = time.perf_counter()
    optimizer, schedule = _optimizer(model, cfg, steps)
    weight = class_weights(train) if cfg.class_weights else None
    per_epoch = max(1, math.ceil(len(train) / cfg.batch_size))
    model.train()
    losses: list[float] = []
    batches = teacher_batches(len(train), cfg.batch_size, seed, start_step, steps)
    for step, picked in enumerate(batches, start=start_step + 1):
        texts = [train.texts[i] for i in picked]
        enc = encode(tokenizer, texts, cfg.max_length, model_device(model))
        logits = model(**enc).logits.float()
        targets = torch.as_tensor(train.labels[picked], device=logits.device)
        loss = F.cross_entropy(
            logits, targets, weight=None if weight is None else weight.to(logits.device)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        losses.append(float(loss.detach()))
        if step % per_epoch == 0:
            logger.info(
                "%s: teacher epoch %d done, train loss %.4f, %.1f s",
                name,
                step // per_epoch,
                float(np.mean(losses[-per_epoch:])),
                time.perf_counter() - started,
            )
        if best is not None and (step % per_epoch == 0 or step == start_step + steps):
            best.check(model, tokenizer, val, cfg, step)


def class_weights(rows: TextDataset) -> torch.Tensor:
    """Inverse class frequency, ``rows / (classes * count)``; an absent class weighs 0."""
    counts = np.bincount(rows.labels, minlength=rows.num_classes).astype(np.float64)
    present = counts > 0
    weight = np.zeros(rows.num_classes)
    weight[present] = len(rows) / (present.sum() * counts[present])
    return torch.as_tensor(weight, dtype=torch.float32)
