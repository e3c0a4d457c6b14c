"""The LoRA teacher: local-path models, fine-tuning lowers the loss, embeddings, offline errors."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from config.errors import ConfigError
from config.run_config import TeacherConfig
from llm.inference import pooled_embeddings
from llm.models import load_tokenizer
from llm.probe import PROBE_CS, fit_logistic, logit_metrics, probe_head
from llm.teacher import class_weights, finetune_teacher
from tasks.datasets import TextDataset


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer BERT with random weights and MiniLM's tokenizer, saved as a local model."""
    from transformers import BertConfig, BertModel

    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = load_tokenizer("minilm")
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def _toy(rows: int) -> TextDataset:
    words = {0: "awful terrible sad", 1: "table chair window", 2: "great happy wonderful"}
    labels = np.arange(rows) % 3
    return TextDataset([f"{words[int(y)]} {i}" for i, y in enumerate(labels)], labels, 3, "toy")


def test_logit_metrics_by_hand() -> None:
    logits = np.log(np.array([[0.5, 0.25, 0.25], [0.2, 0.2, 0.6]]))
    loss, accuracy = logit_metrics(logits, np.array([0, 1]))
    assert loss == pytest.approx((-np.log(0.5) - np.log(0.2)) / 2)
    assert accuracy == 0.5


def test_a_local_model_fine_tunes_and_its_loss_drops(tiny_model_dir: str) -> None:
    config = TeacherConfig(
        model=tiny_model_dir, epochs=15.0, lr=5e-3, batch_size=8, max_length=16, lora_r=4
    )
    out = finetune_teacher(_toy(24), _toy(12), config, seed=0)
    assert out.train_logits.shape == (24, 3) and out.val_logits.shape == (12, 3)
    assert out.steps == 45
    assert out.val_loss < out.untrained_val_loss
    assert out.val_accuracy > 0.6


def test_embeddings_of_the_frozen_base(tiny_model_dir: str) -> None:
    texts = _toy(5).texts
    first = pooled_embeddings(tiny_model_dir, texts, max_length=16, batch_size=2)
    again = pooled_embeddings(tiny_model_dir, texts[::-1], max_length=16, batch_size=3)
    assert first.shape == (5, 32) and first.dtype == np.float32
    np.testing.assert_allclose(first[::-1], again, atol=1e-5)  # no batch or order effects


def test_minilm_is_embedded() -> None:
    embedding = pooled_embeddings("minilm", ["a short tweet"], max_length=16, batch_size=1)
    assert embedding.shape == (1, 384)


def test_offline_hub_model_gives_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as err:
        load_tokenizer("some-org/no-such-model")
    message = str(err.value)
    assert message.startswith("model='some-org/no-such-model': could not be loaded")
    assert "offline" in message and "\n" not in message


def test_length_bucketed_batches_give_each_text_its_own_row(
    tiny_model_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import llm.inference as inference

    words = "table chair window lamp door floor wall roof".split()
    texts = [" ".join(words[: 1 + (i * 5) % 8]) for i in range(11)]  # lengths out of order
    per_text = np.stack([pooled_embeddings(tiny_model_dir, [t], 16, 1)[0] for t in texts])
    monkeypatch.setattr(inference, "BATCHING", "bucketed")
    bucketed = pooled_embeddings(tiny_model_dir, texts, 16, 4)
    monkeypatch.setattr(inference, "BATCHING", "fixed")
    fixed = pooled_embeddings(tiny_model_dir, texts, 16, 4)
    np.testing.assert_allclose(bucketed, per_text, atol=1e-5)
    np.testing.assert_allclose(fixed, per_text, atol=1e-5)
    assert not np.allclose(per_text[0], per_text[1], atol=1e-3)  # the rows do differ


def _tweets(shared_data: Any, split: str, rows: int) -> TextDataset:
    from config.run_config import DataConfig
    from tasks.datasets import DataSource

    source = DataSource.from_config(
        DataConfig(task="tweeteval", data_dir=str(shared_data / "tweeteval_sentiment"))
    )
    return source.load(split).subset(np.arange(rows))


def test_the_probe_initialised_head_starts_at_the_probes_accuracy(shared_data: Any) -> None:
    """teacher-head=probe: before any step the teacher is the probe, prediction for prediction."""
    train, val = _tweets(shared_data, "train", 160), _tweets(shared_data, "validation", 80)
    config = TeacherConfig(head="probe", max_length=32)
    features = [pooled_embeddings("minilm", d.texts, 32, 64) for d in (train, val)]
    out = finetune_teacher(train, val, config, seed=0, epochs=0.0, probe_features=(*features,))
    weight, bias = probe_head(features[0], train.labels, features[1], val.labels, 3)
    unit = features[1] / np.linalg.norm(features[1], axis=1, keepdims=True)
    assert np.allclose(out.val_logits, unit @ weight.T + bias, atol=1e-4)
    # ... and the probe is logistic regression at the C chosen on validation rows.
    unit_train = features[0] / np.linalg.norm(features[0], axis=1, keepdims=True)
    accuracies = {
        fit_logistic(unit_train, train.labels, c).score(unit, val.labels) for c in PROBE_CS
    }
    assert any(out.val_accuracy == pytest.approx(a) for a in accuracies)
    assert out.val_accuracy > max(np.bincount(val.labels)) / len(val)  # above the majority


def test_keep_best_never_ends_above_the_start(
    shared_data: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """teacher-keep-best with a learning rate that wrecks the head: the start is kept, and its
    loss is the one scored before fine-tuning, though scoring the same weights again differs
    in the last bits (here made to: every scoring nudges class 0 by 1e-7 more), so that no
    reader takes that noise for an improvement (the teacher federation's early end does)."""
    import llm.teacher

    scored = llm.teacher.predict_logits
    calls = iter(range(1, 1000))

    def last_bits_differ(*args: Any, **kwargs: Any) -> np.ndarray:
        logits = np.array(scored(*args, **kwargs), copy=True)
        logits[:, 0] -= 1e-7 * next(calls)  # each scoring a little lower for class 0
        return logits

    monkeypatch.setattr(llm.teacher, "predict_logits", last_bits_differ)
    train, val = _tweets(shared_data, "train", 48), _tweets(shared_data, "validation", 40)
    config = TeacherConfig(head="probe", keep_best=True, lr=0.5, batch_size=16, max_length=32)
    out = finetune_teacher(train, val, config, seed=0, epochs=2.0)
    assert out.steps == 6
    assert out.val_loss == out.untrained_val_loss  # the start, as first scored


def test_class_weights_are_inverse_frequencies() -> None:
    rows = TextDataset(["x"] * 8, np.array([0, 0, 0, 0, 0, 0, 1, 1]), 3, "toy")
    # 8 rows over the 2 classes present: 8 / (2 * 6) and 8 / (2 * 2); class 2 is absent.
    assert class_weights(rows).tolist() == pytest.approx([8 / 12, 2.0, 0.0])


def test_class_weights_and_warmup_change_the_fine_tuning(tiny_model_dir: str) -> None:
    """Each lever changes the teacher, and a warm-up moves the weights less at first."""
    train = _toy(24).subset(np.r_[np.arange(0, 24, 3), np.arange(1, 24, 3), [2, 5]])
    base = TeacherConfig(
        model=tiny_model_dir, lr=5e-3, batch_size=8, max_length=16, lora_r=4, keep_best=False
    )
    start = finetune_teacher(train, _toy(6), base, seed=0, steps=0).arrays

    def moved(config: TeacherConfig) -> float:
        arrays = finetune_teacher(train, _toy(6), config, seed=0, steps=2).arrays
        return sum(float(np.abs(arrays[k] - start[k]).sum()) for k in start)

    plain = moved(base)
    assert moved(replace(base, class_weights=True)) != pytest.approx(plain)
    assert moved(replace(base, warmup=0.9)) < plain  # steps at lr/2 and lr, not lr and lr
