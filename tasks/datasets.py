"""Task datasets: TweetEval sentiment and Genomic Benchmarks, from a local copy or the hub.

Local layouts (``data-dir``):

- ``tweeteval``: ``{split}_text.txt`` (one text per line) and
  ``{split}_labels.txt`` (one integer label per line), as in the TweetEval
  repository, for ``split`` in ``train`` and ``test``.
- ``genomic``: ``train.csv`` and ``test.csv`` with columns ``seq,label``.

Without ``data-dir`` the loaders use ``cardiffnlp/tweet_eval`` (config
``sentiment``) and the Genomic Benchmarks ``demo_human_or_worm`` task
through the ``genomic-benchmarks`` package; both need the network.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from config.errors import ConfigError
from tasks.dna import kmerize

logger = logging.getLogger(__name__)

TASKS = ("tweeteval", "genomic")
SPLITS = ("train", "test")
NUM_CLASSES = {"tweeteval": 3, "genomic": 2}
HUB_TWEETEVAL = "cardiffnlp/tweet_eval"
GENOMIC_BENCHMARK = "demo_human_or_worm"


@dataclass(frozen=True)
class TextDataset:
    """Texts ready for the tokenizer, with integer labels.

    Attributes
    ----------
    texts : list of str
        DNA is already k-mer text.
    labels : np.ndarray
        int64, shape (rows,), values in ``[0, num_classes)``.
    num_classes : int
    name : str
        e.g. ``"tweeteval/train"``.
    """

    texts: list[str]
    labels: np.ndarray
    num_classes: int
    name: str

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: np.ndarray) -> TextDataset:
        """The rows at ``indices``, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        return TextDataset(
            [self.texts[i] for i in indices], self.labels[indices], self.num_classes, self.name
        )

    def majority_rate(self) -> float:
        """Share of the most frequent label (0 for an empty dataset)."""
        if len(self) == 0:
            return 0.0
        return float(np.bincount(self.labels, minlength=self.num_classes).max() / len(self))


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ConfigError(f"task={task!r}: must be one of {', '.join(TASKS)}")


def _read_lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as lines:
        return [line.rstrip("\n") for line in lines]


def _parse_labels(values: list[str], file: str, num_classes: int) -> np.ndarray:
    labels = np.empty(len(values), dtype=np.int64)
    for row, value in enumerate(values, start=1):
        try:
            labels[row - 1] = int(value.strip())
        except ValueError:
            raise ConfigError(
                f"data-dir: {file} line {row} is {value.strip()[:20]!r}, not an integer label"
            ) from None
        if not 0 <= labels[row - 1] < num_classes:
            raise ConfigError(
                f"data-dir: {file} line {row} has label {labels[row - 1]}, "
                f"expected 0..{num_classes - 1}"
            )
    return labels


def _read_tweeteval(root: Path, split: str) -> tuple[list[str], np.ndarray]:
    text_file, label_file = f"{split}_text.txt", f"{split}_labels.txt"
    texts = _read_lines(root / text_file)
    raw_labels = _read_lines(root / label_file)
    if raw_labels and raw_labels[-1] == "" and len(raw_labels) == len(texts) + 1:
        raw_labels = raw_labels[:-1]
    if len(texts) != len(raw_labels):
        raise ConfigError(
            f"data-dir: {label_file} has {len(raw_labels)} lines but {text_file} has "
            f"{len(texts)}; each text needs exactly one label"
        )
    return texts, _parse_labels(raw_labels, label_file, NUM_CLASSES["tweeteval"])


def _read_genomic_csv(root: Path, split: str) -> tuple[list[str], np.ndarray]:
    file = f"{split}.csv"
    with open(root / file, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"seq", "label"} <= set(reader.fieldnames):
            raise ConfigError(
                f"data-dir: {file} needs a header with columns seq,label "
                f"(found {reader.fieldnames})"
            )
        rows = [(r["seq"] or "", r["label"] or "") for r in reader]
    sequences = [seq for seq, _ in rows]
    return sequences, _parse_labels([lab for _, lab in rows], file, NUM_CLASSES["genomic"])


def _read_local(task: str, data_dir: str, split: str) -> tuple[list[str], np.ndarray]:
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise ConfigError(
            f"data-dir={data_dir!r}: not a directory; pass the path of a local copy "
            "(absolute, since the SuperLink may run elsewhere)"
        )
    needed = (
        [f"{split}_text.txt", f"{split}_labels.txt"] if task == "tweeteval" else [f"{split}.csv"]
    )
    for name in needed:
        path = root / name
        if not path.is_file():
            raise ConfigError(f"data-dir={data_dir!r}: {name} is missing (task={task!r})")
        if not os.access(path, os.R_OK):
            raise ConfigError(f"data-dir={data_dir!r}: {name} is not readable")
    try:
        texts, labels = (_read_tweeteval if task == "tweeteval" else _read_genomic_csv)(root, split)
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"data-dir={data_dir!r}: cannot read {split} files ({err})") from None
    if not texts:
        raise ConfigError(f"data-dir={data_dir!r}: the {split} split is empty")
    return texts, labels


def validate_data_dir(task: str, data_dir: str) -> None:
    """Check a local data directory at start-up (files, labels, lengths); no model is loaded."""
    _check_task(task)
    for split in SPLITS:
        _read_local(task, data_dir, split)


def _load_hub(task: str, split: str) -> tuple[list[str], np.ndarray]:
    if task == "tweeteval":
        try:
            import datasets

            table = datasets.load_dataset(HUB_TWEETEVAL, "sentiment", split=split)
        except Exception as err:  # noqa: BLE001 - any failure here means "no hub access"
            raise ConfigError(
                f"data-dir is empty and {HUB_TWEETEVAL} could not be loaded (offline?): pass "
                f"data-dir=<path to a local copy in the TweetEval layout> ({type(err).__name__})"
            ) from None
        return list(table["text"]), np.asarray(table["label"], dtype=np.int64)
    return _load_genomic_package(split)


def _load_genomic_package(split: str) -> tuple[list[str], np.ndarray]:
    if any(os.environ.get(v) == "1" for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        raise ConfigError(
            f"data-dir is empty and {GENOMIC_BENCHMARK} needs a download (offline mode is on): "
            "pass data-dir=<directory with train.csv and test.csv (seq,label)>"
        )
    try:
        from genomic_benchmarks.loc2seq import download_dataset

        root = Path(download_dataset(GENOMIC_BENCHMARK, version=0))
    except Exception as err:  # noqa: BLE001 - any failure here means "no download"
        raise ConfigError(
            f"data-dir is empty and {GENOMIC_BENCHMARK} could not be downloaded (offline?): "
            f"pass data-dir=<directory with train.csv and test.csv (seq,label)> "
            f"({type(err).__name__})"
        ) from None
    # The package writes <root>/<split>/<class name>/<id>.txt; classes in sorted order.
    classes = sorted(p.name for p in (root / split).iterdir() if p.is_dir())
    sequences, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((root / split / name).glob("*.txt")):
            sequences.append(file.read_text().strip())
            labels.append(label)
    return sequences, np.asarray(labels, dtype=np.int64)


def load_task(
    task: str, split: str, data_dir: str = "", *, kmer: int = 6, kmer_stride: int = 1
) -> TextDataset:
    """Load ``split`` ("train" or "test") of ``task``, from ``data_dir`` or the hub."""
    _check_task(task)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    texts, labels = _read_local(task, data_dir, split) if data_dir else _load_hub(task, split)
    if task == "genomic":
        texts = [kmerize(seq, kmer, kmer_stride) for seq in texts]
    return TextDataset(texts, labels, NUM_CLASSES[task], f"{task}/{split}")
