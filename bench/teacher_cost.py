"""What a teacher costs: LoRA against QLoRA (the embedded MiniLM by default), bytes per round.

On TweetEval sentiment (``--train-rows`` training and ``--val-rows``
validation rows from the train split), for each PEFT method in a fresh
process:

- seconds per optimizer step (batch ``teacher-batch-size`` = 16, 64 tokens;
  median of ``--steps`` timed steps after 3 warm-up steps);
- peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the
  process's peak resident memory (``ru_maxrss``) minus its resident memory
  after the libraries were imported, i.e. what the model and its training
  added;
- teacher validation accuracy and loss after a fixed budget
  (``--epochs`` over the training rows, through ``llm.teacher.finetune_teacher``,
  the code path clients run).

Then the bytes one client sends per round: its LoRA adapters and head
(``teacher-federation=fedavg``), the whole fine-tuned model (what federating
the model itself would send) and the quantum student (every round).

    python bench/teacher_cost.py [--model minilm] [--random-weights]
        [--train-rows 400 --val-rows 200 --epochs 2 --steps 20]

``--model gpt2`` (or ``llama-3.2-1b``, any hub id or local path) measures a
preset the same way where its weights are at hand; on CUDA the memory is the
peak allocated by torch. ``--random-weights`` with ``gpt2`` or
``llama-3.2-1b`` needs no download: it builds the preset's real architecture
(sizes below) with random weights and a byte-level BPE tokenizer trained on
the training rows, for step time and memory; its accuracy means nothing.

Ends with ``RESULT lora_step_s=<s> qlora_step_s=<s> lora_acc=<acc> qlora_acc=<acc>``.
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _child import report, run_child

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data" / "tweeteval_sentiment").resolve()


# The architectures of the decoder presets, as published with their weights.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "gpt2": {  # openai-community/gpt2: 124M
        "model_type": "gpt2",
        "vocab_size": 50257,
        "n_positions": 1024,
        "n_embd": 768,
        "n_layer": 12,
        "n_head": 12,
    },
    "llama-3.2-1b": {  # meta-llama/Llama-3.2-1B: 1.24B
        "model_type": "llama",
        "vocab_size": 128256,
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "max_position_embeddings": 131072,
        "rope_theta": 500000.0,
        "tie_word_embeddings": True,
    },
}


def random_weights_model(preset: str, texts: list[str], directory: Path) -> str:
    """Write ``preset``'s architecture with random weights and a small BPE tokenizer."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import AutoConfig, AutoModel, PreTrainedTokenizerFast

    if preset not in ARCHITECTURES:
        raise SystemExit(
            f"--random-weights: model={preset!r} has no architecture here; use one of "
            f"{sorted(ARCHITECTURES)}"
        )
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=2000, special_tokens=["<|endoftext|>"])
    eos = "<|endoftext|>"
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=eos, eos_token=eos, unk_token=eos
    )
    arch = dict(ARCHITECTURES[preset])
    eos_id = tokenizer.convert_tokens_to_ids(eos)
    config = AutoConfig.for_model(
        arch.pop("model_type"), bos_token_id=eos_id, eos_token_id=eos_id, **arch
    )
    torch.manual_seed(0)
    model = AutoModel.from_config(config)
    logging.getLogger(__name__).warning(
        "%s with random weights: %.1fM parameters", preset, model.num_parameters() / 1e6
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """Step time, peak memory and accuracy of one PEFT method (run in its own process)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from config.run_config import TeacherConfig
    from llm.inference import encode
    from llm.teacher import finetune_teacher
    from llm.teacher_model import build_teacher_model, trainable_arrays
    from tasks.datasets import DataSource

    rows = DataSource("tweeteval", str(args.data_dir)).load("train")
    train = rows.subset(np.arange(args.train_rows))
    val = rows.subset(np.arange(args.train_rows, args.train_rows + args.val_rows))
    cfg = TeacherConfig(model=args.model, peft_method=method, epochs=args.epochs)
    cuda = torch.cuda.is_available()
    import bitsandbytes  # noqa: F401 - imported before the baseline: libraries are not the model
    import peft  # noqa: F401
    import transformers  # noqa: F401

    baseline = _rss_mb()

    model, tokenizer = build_teacher_model(cfg, train.num_classes, seed=0)
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    model.train()
    times = []
    rng = np.random.default_rng(0)
    for step in range(3 + args.steps):
        batch = rng.choice(len(train), cfg.batch_size, replace=False)
        enc = encode(tokenizer, [train.texts[i] for i in batch], cfg.max_length, device)
        labels = torch.as_tensor(train.labels[batch], device=device)
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        loss = F.cross_entropy(model(**enc).logits.float(), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        if step >= 3:
            times.append(time.perf_counter() - started)
    adapter_bytes = sum(a.nbytes for a in trainable_arrays(model).values())
    full_bytes = sum(p.numel() * 4 for p in model.parameters())  # the model in float32
    if cuda:
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline
    model_hidden = model.config.hidden_size
    del model, optimizer

    out = finetune_teacher(train, val, cfg, seed=0)
    return {
        "method": method,
        "step_s": statistics.median(times),
        "peak_mb": peak_mb,
        "memory": "CUDA allocated" if cuda else "CPU RSS added",
        "acc": out.val_accuracy,
        "val_loss": out.val_loss,
        "untrained_val_loss": out.untrained_val_loss,
        "steps": out.steps,
        "adapter_bytes": adapter_bytes,
        "full_bytes": full_bytes,
        "hidden_size": int(model_hidden),
    }


def student_bytes(hidden_size: int) -> int:
    """Bytes of the quantum student's arrays with the default settings on these features."""
    from config.run_config import StudentConfig
    from quantum.student import make_student

    defaults = StudentConfig()
    student = make_student(
        hidden_size,
        3,
        n_qubits=defaults.n_qubits,
        n_layers=defaults.n_layers,
        trainable_projection=defaults.projection == "linear",
    )
    return sum(a.nbytes for a in student.get_arrays().values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=400)
    parser.add_argument("--val-rows", type=int, default=200)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--model", default="minilm", help="a preset, hub id or local path")
    parser.add_argument(
        "--random-weights", action="store_true", help="the preset's architecture, random weights"
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child process: one method
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    if args.one:
        report(measure(args.one, args))
        return

    with tempfile.TemporaryDirectory() as scratch:
        name = args.model
        if args.random_weights:
            from tasks.datasets import DataSource

            texts = list(DataSource("tweeteval", str(args.data_dir)).load("train").texts)
            args.model = random_weights_model(name, texts[: args.train_rows], Path(scratch))
        results = {}
        for method in ("lora", "qlora"):
            results[method] = run_child(
                [__file__, "--one", method, "--model", args.model]
                + [
                    f"--{k.replace('_', '-')}={v}"
                    for k, v in vars(args).items()
                    if k not in ("one", "model", "random_weights")
                ],
                method,
            )
        args.model = name + (" (random weights)" if args.random_weights else "")

    print(
        f"{args.model} teacher, TweetEval: {args.train_rows} train / {args.val_rows} val rows, "
        f"batch 16, 64 tokens, {args.epochs:g} epochs"
    )
    print("| method | s per step | peak memory MB | steps | val loss (before) | val accuracy |")
    print("|---|---|---|---|---|---|")
    for r in results.values():
        print(
            f"| {r['method']} | {r['step_s']:.3f} | {r['peak_mb']:.0f} ({r['memory']}) | "
            f"{r['steps']} | {r['val_loss']:.4f} ({r['untrained_val_loss']:.4f}) | "
            f"{r['acc']:.3f} |"
        )
    lora = results["lora"]
    student = student_bytes(lora["hidden_size"])
    print("\nbytes one client sends per round")
    print("| what | bytes |")
    print("|---|---|")
    print(f"| LoRA adapters and head (teacher-federation=fedavg) | {lora['adapter_bytes']:,} |")
    print(f"| the whole model, float32 | {lora['full_bytes']:,} |")
    print(f"| the quantum student (every round) | {student:,} |")
    print(
        f"RESULT lora_step_s={lora['step_s']:.3f} qlora_step_s={results['qlora']['step_s']:.3f} "
        f"lora_acc={lora['acc']:.3f} qlora_acc={results['qlora']['acc']:.3f} "
        f"lora_peak_mb={lora['peak_mb']:.0f} qlora_peak_mb={results['qlora']['peak_mb']:.0f} "
        f"adapter_bytes={lora['adapter_bytes']} full_model_bytes={lora['full_bytes']} "
        f"student_bytes={student}"
    )


if __name__ == "__main__":
    main()
