"""A synthetic text task of any number of classes, in the TweetEval layout.

For checks that the system runs on tasks it has never seen (2, 3, 4, ... classes)
without shipping anyone's text. Each row is a short sentence of filler words
with two cue words from its class's vocabulary and one from another class's,
so a model must weigh the cues; ``noise`` of the labels are then flipped to a
random other class, so the best possible accuracy is about ``1 - noise``.

    python -m tasks.synthetic OUT_DIR --classes 4 --rows 1200
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

FILLER = (
    "the a today really just about this that some very new old day week time "
    "people thing going still here there maybe again never always"
).split()
CUES = (
    "sunny bright cheerful golden warm smiling",
    "rainy grey gloomy cold wet dreary",
    "football goal match striker league stadium",
    "guitar concert album chorus melody band",
    "engine wheels highway traffic garage driver",
    "pasta kitchen recipe oven spicy dinner",
    "planet orbit telescope galaxy comet rocket",
    "garden tulips seeds soil harvest flowers",
)
SPLIT_FILES = {"train": "train", "validation": "val", "test": "test"}


def keyword_rows(
    num_classes: int, rows: int, seed: int, noise: float = 0.1
) -> tuple[list[str], np.ndarray]:
    """``rows`` sentences and labels in ``0..num_classes-1`` (balanced, seeded)."""
    if not 2 <= num_classes <= len(CUES):
        raise ValueError(f"num_classes must be in [2, {len(CUES)}], got {num_classes}")
    rng = np.random.default_rng(seed)
    vocab = [group.split() for group in CUES[:num_classes]]
    labels = np.arange(rows) % num_classes
    rng.shuffle(labels)
    texts = []
    for label in labels:
        other = (label + 1 + rng.integers(num_classes - 1)) % num_classes
        words = list(rng.choice(FILLER, size=6))
        words += list(rng.choice(vocab[label], size=2)) + [rng.choice(vocab[other])]
        rng.shuffle(words)
        texts.append(" ".join(str(w) for w in words))
    flip = rng.random(rows) < noise
    shifted = (labels + 1 + rng.integers(num_classes - 1, size=rows)) % num_classes
    return texts, np.where(flip, shifted, labels).astype(np.int64)


def write_keyword_task(
    folder: Path, num_classes: int, rows: int = 600, seed: int = 0, noise: float = 0.1
) -> Path:
    """Write train (``rows``), val and test (``rows // 4`` each) and ``mapping.txt``."""
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {"train": rows, "validation": max(rows // 4, num_classes), "test": max(rows // 4, 2)}
    for offset, (split, size) in enumerate(sizes.items()):
        texts, labels = keyword_rows(num_classes, size, seed * 10 + offset, noise)
        prefix = SPLIT_FILES[split]
        (folder / f"{prefix}_text.txt").write_text("".join(t + "\n" for t in texts))
        (folder / f"{prefix}_labels.txt").write_text("".join(f"{v}\n" for v in labels))
    names = [group.split()[0] for group in CUES[:num_classes]]
    (folder / "mapping.txt").write_text("".join(f"{i}\t{n}\n" for i, n in enumerate(names)))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--rows", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=0.1)
    args = parser.parse_args()
    write_keyword_task(args.out, args.classes, args.rows, args.seed, args.noise)


if __name__ == "__main__":
    main()
