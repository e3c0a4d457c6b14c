"""PEFT methods, presets, a decoder teacher, adapter serialization, offline presets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord

from config.errors import ConfigError
from config.run_config import RunConfig, TeacherConfig
from llm.inference import predict_logits
from llm.models import load_tokenizer
from llm.presets import PRESETS, find_target_modules
from llm.teacher import finetune_teacher
from llm.teacher_model import build_teacher_model, load_trainable_arrays, trainable_arrays
from tasks.datasets import TextDataset


def _toy(rows: int) -> TextDataset:
    words = {0: "awful terrible sad", 1: "table chair window", 2: "great happy wonderful"}
    labels = np.arange(rows) % 3
    return TextDataset([f"{words[int(y)]} {i}" for i, y in enumerate(labels)], labels, 3, "toy")


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer GPT-2 with random weights and a byte-level BPE tokenizer with no pad token.

    Built here, with no download: the decoder code path of the presets
    (pad token from EOS, classification from the last non-pad token, LoRA on
    GPT-2's fused ``c_attn`` Conv1D) on a model small enough for CI.
    """
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2Model, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-gpt2")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        _toy(60).texts * 5, vocab_size=300, min_frequency=1, special_tokens=["<|endoftext|>"]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    assert tokenizer.pad_token is None  # as GPT-2's own tokenizer
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    GPT2Model(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("method", ["lora", "qlora", "none"])
def test_each_peft_method_lowers_the_loss_on_cpu(method: str) -> None:
    rows = _toy(24)
    config = TeacherConfig(  # the model's fresh head, kept last: what each method learns
        peft_method=method,
        epochs=6.0,
        lr=5e-3,
        batch_size=8,
        max_length=16,
        lora_r=4,
        head="cls",
        keep_best=False,
    )
    out = finetune_teacher(rows, rows, config, seed=0)  # the same small batch, before and after
    assert out.steps == 18
    assert out.val_loss < out.untrained_val_loss - 0.02, (out.val_loss, out.untrained_val_loss)
    names = set(out.arrays)
    assert any("classifier" in n for n in names)  # the new head is always trained
    if method == "none":
        assert all("classifier" in n for n in names)
    else:
        assert any("lora_A" in n for n in names) and any("lora_B" in n for n in names)


def test_qlora_quantises_the_base_and_keeps_the_head_in_fp32() -> None:
    import bitsandbytes as bnb

    config = TeacherConfig(peft_method="qlora", lora_r=4)
    model, _ = build_teacher_model(config, num_labels=3, seed=0)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) >= 6 * 6  # every linear layer of the 6 encoder blocks
    weight = layers[0].weight
    assert weight.quant_state.quant_type == "nf4" and weight.quant_state.nested  # double quant.
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert all(p.dtype == torch.float32 for p in trained.values())
    heads = [m for n, m in model.named_modules() if "classifier" in n]
    assert heads and not any(isinstance(m, bnb.nn.Linear4bit) for m in heads)


def test_a_decoder_fine_tunes_and_classifies_from_its_last_non_pad_token(
    tiny_gpt2_dir: str,
) -> None:
    config = TeacherConfig(
        model=tiny_gpt2_dir,
        epochs=10.0,
        lr=1e-2,
        batch_size=8,
        max_length=16,
        lora_r=4,
        head="cls",
        keep_best=False,
    )
    train = _toy(24)
    out = finetune_teacher(train, train, config, seed=0)
    assert out.val_loss < out.untrained_val_loss - 0.02
    assert any(".c_attn.lora_A" in n for n in out.arrays)  # PEFT's table for gpt2
    model, tokenizer = build_teacher_model(config, 3, seed=0)
    load_trainable_arrays(model, out.arrays)
    assert tokenizer.pad_token == tokenizer.eos_token
    assert model.config.pad_token_id == tokenizer.eos_token_id
    short, long = "great", "table chair window and a few more words here"
    alone = predict_logits(model, tokenizer, [short], 16, batch_size=1)
    padded = predict_logits(model, tokenizer, [short, long], 16, batch_size=2)
    np.testing.assert_allclose(alone[0], padded[0], atol=1e-5)  # padding does not change it


def test_a_decoder_under_the_probe_head_is_read_by_its_mean_and_padding_changes_nothing(
    tiny_gpt2_dir: str,
) -> None:
    config = TeacherConfig(model=tiny_gpt2_dir, max_length=16, lora_r=4)  # head=probe
    train = _toy(24)
    out = finetune_teacher(train, train, config, seed=0, epochs=2.0)
    assert out.val_loss <= out.untrained_val_loss  # kept from the probe onwards
    assert any(".c_attn.lora_A" in n for n in out.arrays)
    model, tokenizer = build_teacher_model(config, 3, seed=0)
    load_trainable_arrays(model, out.arrays)
    assert model.config.pad_token_id == tokenizer.eos_token_id
    short, long = "great", "table chair window and a few more words here"
    alone = predict_logits(model, tokenizer, [short], 16, batch_size=1)
    padded = predict_logits(model, tokenizer, [short, long], 16, batch_size=2)
    np.testing.assert_allclose(alone[0], padded[0], atol=1e-5)


def test_adapters_round_trip_exactly_through_an_array_record() -> None:
    config = TeacherConfig(lora_r=4, epochs=1.0, batch_size=8, max_length=16)
    out = finetune_teacher(_toy(16), _toy(6), config, seed=1)
    record = ArrayRecord({k: Array(v) for k, v in out.arrays.items()})
    received = {k: a.numpy() for k, a in record.items()}
    model, tokenizer = build_teacher_model(config, 3, seed=99)  # different fresh adapters
    load_trainable_arrays(model, received)
    again = trainable_arrays(model)
    assert set(again) == set(out.arrays)
    for name, array in out.arrays.items():
        np.testing.assert_array_equal(again[name], array)
    texts = _toy(6).texts
    np.testing.assert_allclose(
        predict_logits(model, tokenizer, texts, 16, 8), out.val_logits, atol=1e-5
    )
    with pytest.raises(ValueError, match="missing"):
        load_trainable_arrays(model, {k: v for k, v in received.items() if "lora_B" not in k})


def test_presets_and_target_modules() -> None:
    assert set(PRESETS) == {"minilm", "gpt2", "llama-3.2-1b", "deepseek-7b"}
    assert PRESETS["gpt2"].source == "openai-community/gpt2" and PRESETS["gpt2"].decoder
    model, _ = build_teacher_model(TeacherConfig(peft_method="none"), 3, seed=0)
    assert find_target_modules(model) == ["query", "value"]
    assert find_target_modules(model, ("key",)) == ["key"]
    with pytest.raises(ConfigError, match="lora-target-modules='q_proj'.*no module named q_proj"):
        find_target_modules(model, ("q_proj",))
    for key, value in (("peft-method", "dora"), ("teacher-federation", "ring")):
        with pytest.raises(ConfigError, match=f"{key}='{value}': must be one of"):
            RunConfig.from_flat({key: value})


@pytest.mark.parametrize("preset", ["gpt2", "llama-3.2-1b", "deepseek-7b"])
def test_an_offline_preset_says_which_model_is_missing(
    preset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # and the weights were never downloaded here
    with pytest.raises(ConfigError) as err:
        load_tokenizer(preset)
    message = str(err.value)
    source = PRESETS[preset].source
    assert message.startswith(f"model={preset!r} ({source}): could not be loaded (offline")
    assert f"hf download {source}" in message and "model='<local directory" in message
    assert "\n" not in message
