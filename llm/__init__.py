"""The LLM side: model loading, LoRA fine-tuning, teacher outputs and embeddings."""

from llm.inference import pooled_embeddings, predict_logits
from llm.models import load_classifier, load_encoder, load_tokenizer, resolve_model_source
from llm.probe import logit_metrics
from llm.teacher import TeacherOutputs, finetune_teacher
from llm.teacher_model import build_teacher_model, load_trainable_arrays, trainable_arrays

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
