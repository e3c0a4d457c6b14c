"""The teacher model to fine-tune: LoRA or QLoRA on a preset's base, its head, its trained arrays.

:func:`build_teacher_model` builds it from the run's teacher section;
:func:`trainable_arrays` and :func:`load_trainable_arrays` move what training
changes (adapters and head) in and out by name, which federated averaging and
the on-disk cache rely on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from config.model_sections import TeacherConfig
from llm.inference import mean_pool
from llm.models import load_base, load_classifier, load_tokenizer
from llm.presets import HEAD_NAMES, find_target_modules


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


def set_head(model: Any, weight: np.ndarray, bias: np.ndarray) -> None:
    """Set a :class:`PooledClassifier`'s linear head."""
    with torch.no_grad():
        model.classifier.weight.copy_(torch.as_tensor(weight))
        model.classifier.bias.copy_(torch.as_tensor(bias))
