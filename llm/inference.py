"""Inference on the teacher's LLM: tokenising, batching, class logits and pooled embeddings.

Student features come from the *frozen* base model (mean-pooled last hidden
state, :func:`pooled_embeddings`), so they are the same function on every
client; :func:`predict_logits` reads a teacher's class logits.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from llm.models import load_encoder, load_tokenizer


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
    device = model_device(model)
    parts = [
        (rows, model(**{k: v.to(device) for k, v in enc.items()}).logits.float().cpu())
        for rows, enc in _batches(tokenizer, texts, max_length, batch_size)
    ]
    return _in_row_order(parts).astype(np.float32)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of the last hidden states over each text's tokens (padding left out)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


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
    device = model_device(encoder)
    parts = []
    for rows, enc in _batches(tokenizer, texts, max_length, batch_size):
        enc = {key: value.to(device) for key, value in enc.items()}
        hidden = encoder(**enc).last_hidden_state
        parts.append((rows, mean_pool(hidden, enc["attention_mask"]).float().cpu()))
    return _in_row_order(parts)


def model_device(model: Any) -> torch.device:
    """The device of a model's first parameter."""
    return next(model.parameters()).device
