"""The LLM side: model loading, LoRA fine-tuning, teacher outputs and embeddings."""

from llm.models import load_classifier, load_encoder, load_tokenizer, resolve_model_source
from llm.teacher import (
    TeacherOutputs,
    build_lora_classifier,
    finetune_teacher,
    logit_metrics,
    pooled_embeddings,
    predict_logits,
)

__all__ = [
    "TeacherOutputs",
    "build_lora_classifier",
    "finetune_teacher",
    "load_classifier",
    "load_encoder",
    "load_tokenizer",
    "logit_metrics",
    "pooled_embeddings",
    "predict_logits",
    "resolve_model_source",
]
