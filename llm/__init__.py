"""The LLM side: model loading, LoRA fine-tuning, teacher outputs and embeddings."""

from llm.models import load_classifier, load_encoder, load_tokenizer, resolve_model_source
from llm.teacher import (
    TeacherOutputs,
    build_teacher_model,
    finetune_teacher,
    load_trainable_arrays,
    logit_metrics,
    pooled_embeddings,
    predict_logits,
    trainable_arrays,
)

__all__ = [
    "TeacherOutputs",
    "build_teacher_model",
    "finetune_teacher",
    "load_classifier",
    "load_encoder",
    "load_tokenizer",
    "logit_metrics",
    "pooled_embeddings",
    "load_trainable_arrays",
    "predict_logits",
    "trainable_arrays",
    "resolve_model_source",
]
