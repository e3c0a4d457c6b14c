"""Where teachers and encoders run: decided in one function, the GPU when there is one.

No GPU is available where these tests run, so the decision is tested by
pretending one is present; the models are not moved there.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import llm.models as models
from llm.models import Placement, placement


@pytest.mark.parametrize("cuda", [False, True])
def test_lora_qlora_and_the_encoder_share_one_placement(
    cuda: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    device = "cuda:0" if cuda else "cpu"
    assert placement() == Placement(device, "float32")
    assert placement(quantize_4bit=True) == Placement(device, "bfloat16" if cuda else "float32")
    seen: dict[str, dict[str, Any]] = {}

    def record(loader: Any, model: str, **kwargs: Any) -> Any:
        seen[loader.__name__] = kwargs
        raise RuntimeError("stop before loading")

    monkeypatch.setattr(models, "_load", record)
    for quantize in (False, True):
        with pytest.raises(RuntimeError, match="stop before loading"):
            models.load_classifier("minilm", 3, quantize_4bit=quantize)
        assert seen["AutoModelForSequenceClassification"]["device_map"] == {"": device}
    models.load_encoder.cache_clear()
    with pytest.raises(RuntimeError, match="stop before loading"):
        models.load_encoder("minilm")
    models.load_encoder.cache_clear()
    assert seen["AutoModel"]["device_map"] == {"": device}
    assert seen["AutoModel"]["dtype"] is torch.float32
