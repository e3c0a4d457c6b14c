"""The LoRA teacher: fine-tuning, its outputs, and frozen-base embeddings.

A client fine-tunes a sequence classifier with LoRA on its own train rows,
then keeps what the student needs: the teacher's logits for its train and
validation rows, and the teacher's validation cross-entropy (nats) and
accuracy. Student features come from the *frozen* base model (mean-pooled
last hidden state), so they are the same function on every client.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from config.run_config import TeacherConfig
from llm.models import load_classifier, load_encoder, load_tokenizer
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
    """

    train_logits: np.ndarray
    val_logits: np.ndarray
    val_loss: float
    val_accuracy: float
    untrained_val_loss: float
    steps: int
    seconds: float


def logit_metrics(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy in nats and accuracy of ``logits`` (rows, classes)."""
    logits_t = torch.as_tensor(logits, dtype=torch.float64)
    labels_t = torch.as_tensor(labels, dtype=torch.long)
    loss = F.cross_entropy(logits_t, labels_t).item()
    accuracy = (logits_t.argmax(dim=1) == labels_t).double().mean().item()
    return float(loss), float(accuracy)


def _batches(
    tokenizer: Any, texts: Sequence[str], max_length: int, batch_size: int
) -> Iterator[tuple[slice, dict[str, torch.Tensor]]]:
    for start in range(0, len(texts), batch_size):
        rows = slice(start, start + batch_size)
        enc = tokenizer(
            list(texts[rows]),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        yield rows, dict(enc)


@torch.no_grad()
def predict_logits(
    model: Any, tokenizer: Any, texts: Sequence[str], max_length: int, batch_size: int
) -> np.ndarray:
    """Class logits (rows, classes), float32, in eval mode."""
    model.eval()
    out = [
        model(**enc).logits.float() for _, enc in _batches(tokenizer, texts, max_length, batch_size)
    ]
    return torch.cat(out).numpy().astype(np.float32)


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
    out = []
    for _, enc in _batches(tokenizer, texts, max_length, batch_size):
        hidden = encoder(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0))
    return torch.cat(out).float().numpy()


def build_lora_classifier(cfg: TeacherConfig, num_labels: int, seed: int) -> tuple[Any, Any]:
    """A classifier with a fresh head wrapped in LoRA adapters; returns (model, tokenizer).

    LoRA targets come from PEFT's table for the architecture (``query`` and
    ``value`` for BERT-style encoders); the head is fully trained
    (``modules_to_save``, which PEFT sets for sequence classification).
    """
    from peft import LoraConfig, TaskType, get_peft_model

    torch.manual_seed(seed)
    base = load_classifier(cfg.model, num_labels)
    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
    )
    return get_peft_model(base, lora), load_tokenizer(cfg.model)


def finetune_teacher(
    train: TextDataset, val: TextDataset, cfg: TeacherConfig, seed: int
) -> TeacherOutputs:
    """Fine-tune a LoRA teacher on ``train`` and return its outputs.

    Runs ``ceil(teacher-epochs * len(train) / teacher-batch-size)`` AdamW steps
    over seeded shuffles of the rows.
    """
    started = time.perf_counter()
    model, tokenizer = build_lora_classifier(cfg, train.num_classes, seed)
    untrained_val_loss, _ = logit_metrics(
        predict_logits(model, tokenizer, val.texts, cfg.max_length, cfg.embed_batch_size),
        val.labels,
    )
    steps = max(1, math.ceil(cfg.epochs * len(train) / cfg.batch_size))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    rng = np.random.default_rng(seed)
    order = np.empty(0, dtype=np.int64)
    model.train()
    for _ in range(steps):
        if len(order) < cfg.batch_size:
            order = np.concatenate([order, rng.permutation(len(train))])
        rows, order = order[: cfg.batch_size], order[cfg.batch_size :]
        enc = tokenizer(
            [train.texts[i] for i in rows],
            padding=True,
            truncation=True,
            max_length=cfg.max_length,
            return_tensors="pt",
        )
        loss = F.cross_entropy(model(**enc).logits, torch.as_tensor(train.labels[rows]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    train_logits = predict_logits(
        model, tokenizer, train.texts, cfg.max_length, cfg.embed_batch_size
    )
    val_logits = predict_logits(model, tokenizer, val.texts, cfg.max_length, cfg.embed_batch_size)
    val_loss, val_accuracy = logit_metrics(val_logits, val.labels)
    seconds = time.perf_counter() - started
    logger.info(
        "teacher fine-tuned: %d steps, val loss %.4f nats (untrained %.4f), val acc %.3f, %.1f s",
        steps,
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
    )
