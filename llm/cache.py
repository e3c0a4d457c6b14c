"""A node's on-disk cache of fine-tuned teachers and frozen-base embeddings.

A teacher entry is keyed by everything that decides it: the model, the PEFT
settings, the fine-tuning settings, the seed, the exact rows (texts and
labels) of the client's partition and, for a federated teacher, the bytes of
the global adapters it started from. A restarted client, or a later run on the
same partition, reuses the adapter, head and logits instead of fine-tuning
again. Embeddings are keyed by the model, ``max-length`` and the texts.

Location: ``config.node_config.NodeConfig.cache_dir`` (the node config's
``cache-dir``, else ``$LLMQFL_CACHE_DIR``, else ``~/.cache/llmqfl``). Entries
are written atomically (a crash mid-write leaves no entry); delete the folder
to clear it. ``teacher-cache=false`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from config.run_config import TeacherConfig
from llm.models import resolve_model_source
from llm.teacher import TeacherOutputs

logger = logging.getLogger(__name__)

_VERSION = 3  # bump when the entry format or the fine-tuning code changes its results


def _rows_digest(texts: Sequence[str], labels: np.ndarray | None = None) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    if labels is not None:
        digest.update(np.asarray(labels, dtype=np.int64).tobytes())
    return digest.hexdigest()


def _arrays_digest(arrays: Mapping[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{value.dtype}:{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _model_identity(model: str) -> str:
    source = resolve_model_source(model)
    return str(Path(source).resolve()) if Path(source).is_dir() else source


def teacher_key(
    cfg: TeacherConfig,
    seed: int,
    train_texts: Sequence[str],
    train_labels: np.ndarray,
    val_texts: Sequence[str],
    val_labels: np.ndarray,
    schedule: Sequence[int] = (),
    start: Mapping[str, np.ndarray] | None = None,
) -> str:
    """The cache key of a fine-tuned teacher.

    ``schedule`` lists the total steps after each training chunk so far (a
    teacher trained 10 + 10 steps is not the one trained 20 at once: AdamW's
    moments restart with each chunk); empty means ``teacher-epochs`` at once.
    ``start``: the adapters and head it started from when they came from
    elsewhere (teacher federation's average), keyed by a digest of their bytes.
    """
    settings = {
        k: v
        for k, v in asdict(cfg).items()
        if k not in ("cache", "embed_batch_size", "model", "epochs")
    }
    identity = {
        "version": _VERSION,
        "model": _model_identity(cfg.model),
        "settings": settings,
        "seed": seed,
        "train": _rows_digest(train_texts, train_labels),
        "val": _rows_digest(val_texts, val_labels),
        "schedule": [float(s) for s in schedule] or [cfg.epochs],
        "start": _arrays_digest(start) if start is not None else None,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def embeddings_key(model: str, max_length: int, texts: Sequence[str]) -> str:
    """The cache key of frozen-base embeddings of ``texts``."""
    identity = [_VERSION, _model_identity(model), max_length, _rows_digest(texts)]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]


def _save_npz(path: Path, arrays: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(handle)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load_npz(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError):  # absent, or unreadable: treat as a miss
        return None


class NodeCache:
    """Teachers and embeddings of one node, under its ``NodeConfig.cache_dir``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def load_teacher(self, key: str) -> TeacherOutputs | None:
        """The cached teacher under ``key``, or None."""
        entry = _load_npz(self.root / "teachers" / f"{key}.npz")
        if entry is None:
            return None
        meta = json.loads(str(entry.pop("__meta__")))
        arrays = {k[len("param:") :]: v for k, v in entry.items() if k.startswith("param:")}
        logger.info("teacher cache hit %s (%s)", key, self.root)
        return TeacherOutputs(
            train_logits=entry["train_logits"],
            val_logits=entry["val_logits"],
            val_loss=float(meta["val_loss"]),
            val_accuracy=float(meta["val_accuracy"]),
            untrained_val_loss=float(meta["untrained_val_loss"]),
            steps=int(meta["steps"]),
            seconds=0.0,
            arrays=arrays,
        )

    def save_teacher(self, key: str, outputs: TeacherOutputs) -> None:
        """Store ``outputs`` (logits, metrics, trained parameters) under ``key``."""
        meta = {
            "val_loss": outputs.val_loss,
            "val_accuracy": outputs.val_accuracy,
            "untrained_val_loss": outputs.untrained_val_loss,
            "steps": outputs.steps,
            "fine_tune_seconds": outputs.seconds,
        }
        _save_npz(
            self.root / "teachers" / f"{key}.npz",
            {
                "train_logits": outputs.train_logits,
                "val_logits": outputs.val_logits,
                "__meta__": np.array(json.dumps(meta)),
                **{f"param:{k}": v for k, v in outputs.arrays.items()},
            },
        )

    def load_embeddings(self, key: str) -> np.ndarray | None:
        entry = _load_npz(self.root / "embeddings" / f"{key}.npz")
        return None if entry is None else entry["features"]

    def save_embeddings(self, key: str, features: np.ndarray) -> None:
        _save_npz(self.root / "embeddings" / f"{key}.npz", {"features": features})
