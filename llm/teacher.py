"""The LoRA teacher: fine-tuning, its outputs, and frozen-base embeddings.

A client fine-tunes a sequence classifier with LoRA on its own train rows,
then keeps what the student needs: the teacher's logits for its train and
validation rows, and the teacher's validation cross-entropy (nats) and
accuracy. Student features come from the *frozen* base model (mean-pooled
last hidden state), so they are the same function on every client.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from config.run_config import TeacherConfig
from llm.models import load_base, load_classifier, load_encoder, load_tokenizer
from llm.presets import HEAD_NAMES, find_target_modules
from llm.probe import PROBE_HEAD, is_head, logit_metrics, probe_head
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


def encode(
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    device: Any = "cpu",
    padding: bool | str = True,
) -> dict[str, torch.Tensor]:
    """Tokenise ``texts`` as one batch of at most ``max_length`` tokens on ``device``.

    ``padding=True`` pads to the batch's longest text (dynamic padding);
    ``"max_length"`` pads every text to ``max_length`` (what the bench compares).
    """
    enc = tokenizer(
        list(texts), padding=padding, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return {key: value.to(device) for key, value in enc.items()}


#: Inference batches: texts of similar length together ("bucketed"), padded to the batch's
#: longest ("dynamic"), or in row order padded to max-length ("fixed"; for the bench).
BATCHING = "bucketed"


def _batches(
    tokenizer: Any, texts: Sequence[str], max_length: int, batch_size: int
) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """``(rows, encoded batch)`` over ``texts`` for inference, every row once (see BATCHING)."""
    order = np.arange(len(texts))
    if BATCHING == "bucketed":  # shortest first: each batch pads to little more than its texts
        # Characters, not tokens: a second tokenisation pass would cost what it saves on long
        # texts (a DNA sequence of 251 bases is ~800 tokens before truncation).
        order = np.argsort([len(text) for text in texts], kind="stable")
    padding = "max_length" if BATCHING == "fixed" else True
    for start in range(0, len(texts), batch_size):
        rows = order[start : start + batch_size]
        yield rows, encode(tokenizer, [texts[i] for i in rows], max_length, padding=padding)


def _in_row_order(parts: Sequence[tuple[np.ndarray, torch.Tensor]]) -> np.ndarray:
    """Stack per-batch outputs back into the texts' order."""
    out = torch.cat([part for _, part in parts]).numpy()
    restored = np.empty_like(out)
    restored[np.concatenate([index for index, _ in parts])] = out
    return restored


@torch.no_grad()
def predict_logits(
    model: Any, tokenizer: Any, texts: Sequence[str], max_length: int, batch_size: int
) -> np.ndarray:
    """Class logits (rows, classes), float32, in eval mode, in the texts' order."""
    model.eval()
    device = _device(model)
    parts = [
        (rows, model(**{k: v.to(device) for k, v in enc.items()}).logits.float().cpu())
        for rows, enc in _batches(tokenizer, texts, max_length, batch_size)
    ]
    return _in_row_order(parts).astype(np.float32)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of the last hidden states over each text's tokens (padding left out)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class PooledClassifier(torch.nn.Module):
    """``teacher-head=probe``: a linear head on the encoder's mean-pooled, L2-normalised output.

    Sentence encoders such as all-MiniLM-L6-v2 are trained to be read this way
    (what sentence-transformers returns), not through BERT's pooler over
    ``[CLS]``, which ``*ForSequenceClassification`` models classify from. The
    head sees exactly what :func:`probe_head` fits on, so a head set from the
    probe starts at the probe's accuracy.
    """

    def __init__(self, encoder: Any, num_labels: int) -> None:
        super().__init__()
        self.encoder = encoder
        device = next(encoder.parameters()).device
        self.classifier = torch.nn.Linear(
            int(encoder.config.hidden_size), num_labels, device=device
        )

    @property
    def config(self) -> Any:
        """The encoder's configuration, where a transformers model keeps its own."""
        return self.encoder.config

    def forward(self, input_ids: Any = None, attention_mask: Any = None, **kwargs: Any) -> Any:
        from transformers.modeling_outputs import SequenceClassifierOutput

        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, **kwargs
        ).last_hidden_state
        pooled = F.normalize(mean_pool(hidden, attention_mask).float(), dim=-1)
        return SequenceClassifierOutput(logits=self.classifier(pooled.to(self.classifier.weight)))


@torch.no_grad()
def pooled_embeddings(
    model: str, texts: Sequence[str], max_length: int, batch_size: int
) -> np.ndarray:
    """Mean-pooled last hidden states of the frozen base ``model``.

    Returns
    -------
    np.ndarray
        float32, shape (rows, hidden size): 384 for MiniLM.
    """
    encoder, tokenizer = load_encoder(model), load_tokenizer(model)
    device = _device(encoder)
    parts = []
    for rows, enc in _batches(tokenizer, texts, max_length, batch_size):
        enc = {key: value.to(device) for key, value in enc.items()}
        hidden = encoder(**enc).last_hidden_state
        parts.append((rows, mean_pool(hidden, enc["attention_mask"]).float().cpu()))
    return _in_row_order(parts)


def build_teacher_model(cfg: TeacherConfig, num_labels: int, seed: int) -> tuple[Any, Any]:
    """The model to fine-tune, with a fresh head, and its tokenizer.

    ``peft-method``:

    - ``lora``: LoRA adapters on the preset's or architecture's attention
      projections (or ``lora-target-modules``); the head is fully trained
      (PEFT's ``modules_to_save`` for sequence classification).
    - ``qlora``: the same on a 4-bit NF4 base (see :func:`load_classifier`).
    - ``none``: the base frozen, only the head trained.

    ``teacher-head``: ``cls`` is the model's own sequence-classification head;
    ``probe`` is a :class:`PooledClassifier` around the base model (LoRA on the
    base, the head outside it and trained).

    The same ``seed`` gives the same initial adapters and head on every
    client, which federated averaging of adapters relies on.
    """
    torch.manual_seed(seed)
    quantize = cfg.peft_method == "qlora"
    tokenizer = load_tokenizer(cfg.model)
    if cfg.head == "probe":
        base = load_base(cfg.model, quantize_4bit=quantize)
        if base.config.pad_token_id is None:
            base.config.pad_token_id = tokenizer.pad_token_id
    else:
        base = load_classifier(cfg.model, num_labels, quantize_4bit=quantize)
    if cfg.peft_method == "none":
        base.requires_grad_(False)
        if cfg.head == "probe":
            return PooledClassifier(base, num_labels), tokenizer
        head = next(getattr(base, n) for n in HEAD_NAMES if hasattr(base, n))
        head.requires_grad_(True)
        return base, tokenizer
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    if quantize:
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
        _keep_cpu_training_layout(base)
    targets = find_target_modules(base, cfg.target_modules)
    lora = LoraConfig(
        task_type=TaskType.FEATURE_EXTRACTION if cfg.head == "probe" else TaskType.SEQ_CLS,
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        fan_in_fan_out=type(base).__name__.startswith("GPT2"),  # GPT-2's Conv1D layers
    )
    adapted = get_peft_model(base, lora)
    if cfg.head == "probe":
        return PooledClassifier(adapted, num_labels), tokenizer
    return adapted, tokenizer


def _keep_cpu_training_layout(model: Any) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference.

    bitsandbytes 0.50 repacks a ``Linear4bit`` weight in place on its first
    eval-mode forward on a CPU with AVX512-BF16 and keeps that layout, whose
    kernel then fails in training ("a view of a leaf Variable that requires
    grad is being used in an in-place operation"). Teachers evaluate before
    and after training, so they keep the training layout.
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def trainable_arrays(model: Any) -> dict[str, np.ndarray]:
    """The trained parameters (LoRA adapters and head, or the head), float32 copies, by name."""
    return {
        name: p.detach().float().cpu().numpy().copy()  # a copy: later steps change the tensors
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def load_trainable_arrays(model: Any, arrays: dict[str, np.ndarray]) -> None:
    """Set the parameters :func:`trainable_arrays` returned, exactly, by name.

    Raises
    ------
    ValueError
        If the names or shapes differ from the model's trained parameters.
    """
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if set(params) != set(arrays):
        missing, extra = sorted(set(params) - set(arrays)), sorted(set(arrays) - set(params))
        raise ValueError(f"teacher arrays differ from the model: missing {missing}, extra {extra}")
    with torch.no_grad():
        for name, param in params.items():
            value = torch.as_tensor(arrays[name])
            if value.shape != param.shape:
                raise ValueError(f"{name}: shape {tuple(value.shape)} != {tuple(param.shape)}")
            param.copy_(value.to(param.dtype))


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


def set_head(model: Any, weight: np.ndarray, bias: np.ndarray) -> None:
    """Set a :class:`PooledClassifier`'s linear head."""
    with torch.no_grad():
        model.classifier.weight.copy_(torch.as_tensor(weight))
        model.classifier.bias.copy_(torch.as_tensor(bias))


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
    model, tokenizer = build_teacher_model(cfg, train.num_classes, seed)
    if initial is not None and is_head(initial):  # the pooled probe: fresh adapters, its head
        set_head(model, *(initial[name] for name in PROBE_HEAD))
    elif initial is not None:
        load_trainable_arrays(model, initial)
    elif cfg.head == "probe":
        set_probe_head(model, train, val, cfg, probe_features)
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
    train_logits = predict_logits(
        model, tokenizer, train.texts, cfg.max_length, cfg.embed_batch_size
    )
    val_logits = predict_logits(model, tokenizer, val.texts, cfg.max_length, cfg.embed_batch_size)
    val_loss, val_accuracy = logit_metrics(val_logits, val.labels)
    seconds = time.perf_counter() - started
    logger.info(
        "%s: teacher (%s) after %d steps: val loss %.4f nats (before %.4f), val acc %.3f, %.1f s",
        name,
        cfg.peft_method,
        start_step + steps,
        val_loss,
        untrained_val_loss,
        val_accuracy,
        seconds,
    )
    return TeacherOutputs(
        train_logits=train_logits,
        val_logits=val_logits,
        val_loss=val_loss,
        val_accuracy=val_accuracy,
        untrained_val_loss=untrained_val_loss,
        steps=steps,
        seconds=seconds,
        arrays=trainable_arrays(model),
    )


@dataclass
class _Best:
    """The teacher with the lowest validation loss so far (``teacher-keep-best``)."""

    loss: float
    step: int
    arrays: dict[str, np.ndarray]


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
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    warmup = math.ceil(cfg.warmup * steps)
    schedule = (
        torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: min(1.0, (i + 1) / warmup))
        if warmup
        else None
    )
    weight = class_weights(train) if cfg.class_weights else None
    per_epoch = max(1, math.ceil(len(train) / cfg.batch_size))
    model.train()
    losses: list[float] = []
    batches = teacher_batches(len(train), cfg.batch_size, seed, start_step, steps)
    for step, picked in enumerate(batches, start=start_step + 1):
        enc = encode(tokenizer, [train.texts[i] for i in picked], cfg.max_length, _device(model))
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
            val_logits = predict_logits(
                model, tokenizer, val.texts, cfg.max_length, cfg.embed_batch_size
            )
            val_loss = logit_metrics(val_logits, val.labels)[0]
            if val_loss < best.loss:
                best.loss, best.step, best.arrays = val_loss, step, trainable_arrays(model)
            model.train()


def class_weights(rows: TextDataset) -> torch.Tensor:
    """Inverse class frequency, ``rows / (classes * count)``; an absent class weighs 0."""
    counts = np.bincount(rows.labels, minlength=rows.num_classes).astype(np.float64)
    present = counts > 0
    weight = np.zeros(rows.num_classes)
    weight[present] = len(rows) / (present.sum() * counts[present])
    return torch.as_tensor(weight, dtype=torch.float32)


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device
