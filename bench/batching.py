"""What the batching levers save: padding and length buckets, on the default and on TweetEval.

For each dataset (the embedded genomic default and TweetEval sentiment from
``--data-dir``), ``--rows`` training rows through the embedded MiniLM at
``max-length`` 64 and batch 16, each way repeated ``--repeats`` times in
turn (the median is reported, so that a busy moment hits every way alike):

- embeddings, the clients' and the server's frozen-base pass
  (``llm.inference.pooled_embeddings``), with the texts padded to
  ``max-length`` in row order (``fixed``), padded to each batch's longest
  (``dynamic``) and, the default, sorted by length first (``bucketed``);
- teacher fine-tuning: seconds per LoRA step (forward and backward on 16
  rows drawn at random, as the clients draw them) padded to ``max-length``
  against padded to the batch's longest (the default). Training batches
  stay random: sorting them by length would change what the teacher learns.

It also prints the tokens per text (median and share truncated), which is
what decides whether a lever can pay: a k-mer DNA sequence fills all 64
tokens, a tweet about half.

    python bench/batching.py [--rows 512 --repeats 3]

Ends with ``RESULT dataset=<name> embed_fixed_s=... embed_dynamic_s=...
embed_bucketed_s=... step_fixed_s=... step_dynamic_s=...`` per dataset.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import llm.inference as inference  # noqa: E402
import llm.teacher_model as teacher_model  # noqa: E402
from config.run_config import RunConfig  # noqa: E402
from llm.models import load_tokenizer  # noqa: E402
from tasks.datasets import DataSource  # noqa: E402

SHARED = REPO / ".." / "shared" / "data"
MAX_LENGTH, BATCH = 64, 16


def embed_seconds(texts: list[str], way: str) -> float:
    inference.BATCHING = way
    started = time.perf_counter()
    inference.pooled_embeddings("minilm", texts, MAX_LENGTH, BATCH)
    return time.perf_counter() - started


def step_seconds(
    model: torch.nn.Module,
    tokenizer: object,
    texts: list[str],
    padding: object,
    labels: np.ndarray,
    steps: int,
    rng: np.random.Generator,
) -> float:
    """Median seconds of a LoRA forward and backward on random batches of 16."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    times = []
    for _ in range(steps):
        rows = rng.choice(len(texts), BATCH, replace=False)
        enc = inference.encode(tokenizer, [texts[i] for i in rows], MAX_LENGTH, padding=padding)
        started = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(
            model(**enc).logits, torch.as_tensor(labels[rows], dtype=torch.long)
        )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(name: str, texts: list[str], labels: np.ndarray, repeats: int) -> None:
    tokenizer = load_tokenizer("minilm")
    lengths = [len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]]
    truncated = float(np.mean([n > MAX_LENGTH for n in lengths]))
    embed_seconds(texts[:32], "dynamic")  # load the encoder once, untimed
    ways = ["fixed", "dynamic", "bucketed"]
    runs: dict[str, list[float]] = {w: [] for w in ways}
    for _ in range(repeats):
        for way in ways:
            runs[way].append(embed_seconds(texts, way))
    embed = {w: statistics.median(runs[w]) for w in ways}
    inference.BATCHING = "bucketed"
    config = RunConfig.from_flat({"teacher-epochs": 1.0}).teacher
    model, tok = teacher_model.build_teacher_model(config, int(labels.max()) + 1, seed=0)
    rng = np.random.default_rng(0)
    step_seconds(model, tok, texts, True, labels, 3, rng)  # warm-up
    steps = {"fixed": [], "dynamic": []}  # type: dict[str, list[float]]
    for _ in range(repeats):
        steps["fixed"].append(step_seconds(model, tok, texts, "max_length", labels, 8, rng))
        steps["dynamic"].append(step_seconds(model, tok, texts, True, labels, 8, rng))
    step = {w: statistics.median(v) for w, v in steps.items()}
    print(
        f"{name}: {len(texts)} rows, tokens per text median {statistics.median(lengths):.0f}, "
        f"{100 * truncated:.0f}% longer than {MAX_LENGTH}; embeddings "
        + ", ".join(f"{w} {embed[w]:.2f} s" for w in ways)
        + f"; teacher step fixed {step['fixed']:.3f} s, dynamic {step['dynamic']:.3f} s",
        flush=True,
    )
    print(
        f"RESULT dataset={name} embed_fixed_s={embed['fixed']:.2f} "
        f"embed_dynamic_s={embed['dynamic']:.2f} embed_bucketed_s={embed['bucketed']:.2f} "
        f"step_fixed_s={step['fixed']:.3f} step_dynamic_s={step['dynamic']:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(SHARED / "tweeteval_sentiment"))
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    for name, source in [
        ("genomic", DataSource("genomic")),
        ("tweeteval", DataSource("tweeteval", args.data_dir)),
    ]:
        train = source.load("train")
        measure(
            name,
            list(train.texts[: args.rows]),
            np.asarray(train.labels[: args.rows]),
            args.repeats,
        )


if __name__ == "__main__":
    main()
