"""Task data: where the rows come from, how many classes there are, and reading them.

A :class:`DataSource` names a task (``tweeteval`` or ``genomic``) and where its
data lives (``data-dir``):

- ``""`` (the default): the task's default source. For ``genomic`` that is the
  Genomic Benchmarks ``human_nontata_promoters`` sequences shipped inside this
  package (offline, see :mod:`tasks.embedded`); for ``tweeteval`` the hub
  dataset ``cardiffnlp/tweet_eval`` with the config ``tweeteval-task``.
- ``"hub"``: the network loaders: ``cardiffnlp/tweet_eval`` or the Genomic
  Benchmarks ``demo_human_or_worm`` task through the ``genomic-benchmarks``
  package.
- a local directory. ``tweeteval`` layout: ``{split}_text.txt`` (one text per
  line) and ``{split}_labels.txt`` (one integer label per line) for ``train``
  and ``test``, optionally ``val`` (the validation split) and ``mapping.txt``
  (one class name per line). ``genomic`` layout: ``train.csv`` and
  ``test.csv`` with columns ``seq,label``, optionally ``validation.csv``.

The class count comes from the data, never from a table: the lines of
``mapping.txt`` when given, the hub dataset's label feature, or else the
distinct labels of the train split, which must then be exactly ``0..K-1``.
Every split's labels must lie in ``0..K-1``. Each failure is one line naming
``data-dir`` (or ``task``) and the fix.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from config.errors import ConfigError
from config.run_config import DataConfig
from tasks.dna import kmerize
from tasks.embedded import embedded_csv

logger = logging.getLogger(__name__)

TASKS = ("tweeteval", "genomic")
SPLITS = ("train", "validation", "test")
HUB = "hub"
HUB_TWEETEVAL = "cardiffnlp/tweet_eval"
TWEETEVAL_TASKS = (
    "emoji",
    "emotion",
    "hate",
    "irony",
    "offensive",
    "sentiment",
    "stance_abortion",
    "stance_atheism",
    "stance_climate",
    "stance_feminist",
    "stance_hillary",
)
GENOMIC_BENCHMARK = "demo_human_or_worm"
#: File names of each split in the local layouts.
_TWEETEVAL_PREFIX = {"train": "train", "validation": "val", "test": "test"}
_GENOMIC_FILE = {"train": "train.csv", "validation": "validation.csv", "test": "test.csv"}


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


@dataclass(frozen=True)
class DataSource:
    """A task's data: see the module docstring.

    Parameters
    ----------
    task : {"tweeteval", "genomic"}
    data_dir : str
        ``""`` (default source), ``"hub"`` or a local directory.
    tweeteval_task : str
        The hub config of ``cardiffnlp/tweet_eval`` (``sentiment``, ``emotion``, ...).
    kmer, kmer_stride : int
        Genomic: DNA becomes overlapping k-mer words, ``kmer_stride`` apart.
    """

    task: str
    data_dir: str = ""
    tweeteval_task: str = "sentiment"
    kmer: int = 6
    kmer_stride: int = 1

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task={self.task!r}: must be one of {', '.join(TASKS)}")
        if self.tweeteval_task not in TWEETEVAL_TASKS:
            raise ConfigError(
                f"tweeteval-task={self.tweeteval_task!r}: must be one of "
                f"{', '.join(TWEETEVAL_TASKS)}"
            )

    @classmethod
    def from_config(cls, data: DataConfig) -> DataSource:
        """The data source a run configuration names."""
        return cls(data.task, data.data_dir, data.tweeteval_task, data.kmer, data.kmer_stride)

    @property
    def local(self) -> bool:
        """True when the rows come from a local directory."""
        return self.data_dir not in ("", HUB)

    @property
    def description(self) -> str:
        """Where the rows come from, for logs."""
        if self.local:
            return f"{self.task} from {self.data_dir}"
        if self.task == "genomic":
            return (
                "genomic: the embedded human_nontata_promoters"
                if not self.data_dir
                else f"genomic: {GENOMIC_BENCHMARK} (genomic-benchmarks)"
            )
        return f"tweeteval: {HUB_TWEETEVAL} ({self.tweeteval_task})"

    def has_split(self, split: str) -> bool:
        """Whether the source has ``split`` (train and test always; validation if given)."""
        if split != "validation":
            return split in SPLITS
        if self.local:
            return all(
                (Path(self.data_dir).expanduser() / f).is_file() for f in _files(self, split)
            )
        return self.task == "tweeteval"  # the hub dataset has one; the genomic sources do not

    @property
    def num_classes(self) -> int:
        """K: from ``mapping.txt``, the hub's label feature, or the train labels (0..K-1)."""
        return _num_classes(self, self._signature())

    def _signature(self) -> tuple[tuple[str, int, int], ...]:
        """Names, sizes and modification times of a local folder's files (for the read cache)."""
        if not self.local:
            return ()
        root = Path(self.data_dir).expanduser()
        if not root.is_dir():
            return ()
        stats = ((p.name, p.stat()) for p in sorted(root.iterdir()) if p.is_file())
        return tuple((name, st.st_size, st.st_mtime_ns) for name, st in stats)

    def load(self, split: str) -> TextDataset:
        """``split`` ("train", "validation" or "test") with labels checked against K.

        Raises
        ------
        ConfigError
            One line: a missing or unreadable file, a malformed label, a label
            outside ``0..K-1``, an empty split, or no network for a hub loader.
        """
        if split not in SPLITS or not self.has_split(split):
            raise ValueError(f"{self.description} has no {split!r} split")
        raw_texts, cached_labels = _read(self, split, self._signature())
        texts, labels = list(raw_texts), cached_labels.copy()
        classes = self.num_classes
        if len(labels) and (labels.min() < 0 or labels.max() >= classes):
            bad = int(labels[(labels < 0) | (labels >= classes)][0])
            raise ConfigError(
                f"data-dir={self.data_dir!r}: the {split} split has label {bad}, but the task "
                f"has {classes} classes (labels 0..{classes - 1}); fix the labels or mapping.txt"
            )
        if self.task == "genomic":
            texts = [kmerize(seq, self.kmer, self.kmer_stride) for seq in texts]
        return TextDataset(texts, labels, classes, f"{self.task}/{split}")

    def validate(self) -> None:
        """Read every split once (files, labels, lengths, class count); no model is loaded."""
        for split in SPLITS:
            if self.has_split(split):
                self.load(split)


def _files(source: DataSource, split: str) -> list[str]:
    if source.task == "tweeteval":
        prefix = _TWEETEVAL_PREFIX[split]
        return [f"{prefix}_text.txt", f"{prefix}_labels.txt"]
    return [_GENOMIC_FILE[split]]


@functools.lru_cache(maxsize=32)
def _read(
    source: DataSource, split: str, signature: tuple[tuple[str, int, int], ...]
) -> tuple[tuple[str, ...], np.ndarray]:
    """The raw texts (DNA as sequences) and integer labels of one split, read once.

    ``signature`` (the folder's file sizes and times) keys the cache, so a changed
    file is read again.
    """
    if source.local:
        texts, labels = _read_local(source, split)
    elif source.task == "genomic" and not source.data_dir:
        texts, labels = read_genomic_csv(io.StringIO(embedded_csv(split)), f"embedded {split}.csv")
    elif source.task == "tweeteval":
        texts, labels = _load_tweeteval_hub(source.tweeteval_task, split)
    else:
        texts, labels = _load_genomic_package(split)
    if not texts:
        raise ConfigError(f"data-dir={source.data_dir!r}: the {split} split is empty")
    labels.setflags(write=False)
    return tuple(texts), labels


@functools.lru_cache(maxsize=32)
def _num_classes(source: DataSource, signature: tuple[tuple[str, int, int], ...]) -> int:
    if source.local:
        mapping = Path(source.data_dir).expanduser() / "mapping.txt"
        if mapping.is_file():
            names = [line for line in _read_lines(mapping) if line.strip()]
            if len(names) < 2:
                raise ConfigError(
                    f"data-dir={source.data_dir!r}: mapping.txt names {len(names)} class(es); "
                    "a classification task needs at least 2"
                )
            return len(names)
    elif source.task == "tweeteval":
        return _tweeteval_hub_classes(source.tweeteval_task)
    _, labels = _read(source, "train", signature)
    present = sorted(int(v) for v in np.unique(labels))
    if present != list(range(len(present))) or len(present) < 2:
        raise ConfigError(
            f"data-dir={source.data_dir!r}: the train labels are {_listed(present)}; they must "
            "be 0..K-1 with K >= 2 (or give mapping.txt with one class name per line)"
        )
    return len(present)


def _listed(values: list[int]) -> str:
    shown = ", ".join(str(v) for v in values[:8])
    return shown + (", ..." if len(values) > 8 else "")


def _read_lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as lines:
        return [line.rstrip("\n") for line in lines]


def _parse_labels(values: list[str], file: str) -> np.ndarray:
    labels = np.empty(len(values), dtype=np.int64)
    for row, value in enumerate(values, start=1):
        try:
            labels[row - 1] = int(value.strip())
        except ValueError:
            raise ConfigError(
                f"data-dir: {file} line {row} is {value.strip()[:20]!r}, not an integer label"
            ) from None
    return labels


def _read_tweeteval(root: Path, split: str) -> tuple[list[str], np.ndarray]:
    text_file, label_file = _files(DataSource("tweeteval"), split)
    texts = _read_lines(root / text_file)
    raw_labels = _read_lines(root / label_file)
    if raw_labels and raw_labels[-1] == "" and len(raw_labels) == len(texts) + 1:
        raw_labels = raw_labels[:-1]
    if len(texts) != len(raw_labels):
        raise ConfigError(
            f"data-dir: {label_file} has {len(raw_labels)} lines but {text_file} has "
            f"{len(texts)}; each text needs exactly one label"
        )
    return texts, _parse_labels(raw_labels, label_file)


def read_genomic_csv(handle: Iterable[str], file: str) -> tuple[list[str], np.ndarray]:
    """Sequences and labels of a ``seq,label`` CSV (an open text file)."""
    reader = csv.DictReader(handle)
    if reader.fieldnames is None or not {"seq", "label"} <= set(reader.fieldnames):
        raise ConfigError(
            f"data-dir: {file} needs a header with columns seq,label (found {reader.fieldnames})"
        )
    rows = [(r["seq"] or "", r["label"] or "") for r in reader]
    return [seq for seq, _ in rows], _parse_labels([lab for _, lab in rows], file)


def _read_local(source: DataSource, split: str) -> tuple[list[str], np.ndarray]:
    data_dir = source.data_dir
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise ConfigError(
            f"data-dir={data_dir!r}: not a directory; pass the path of a local copy "
            "(absolute, since the SuperLink may run elsewhere)"
        )
    for name in _files(source, split):
        path = root / name
        if not path.is_file():
            raise ConfigError(f"data-dir={data_dir!r}: {name} is missing (task={source.task!r})")
        if not os.access(path, os.R_OK):
            raise ConfigError(f"data-dir={data_dir!r}: {name} is not readable")
    try:
        if source.task == "tweeteval":
            return _read_tweeteval(root, split)
        file = _GENOMIC_FILE[split]
        with open(root / file, encoding="utf-8", newline="") as handle:
            return read_genomic_csv(handle, file)
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"data-dir={data_dir!r}: cannot read {split} files ({err})") from None


def _offline(*variables: str) -> bool:
    return any(os.environ.get(v) == "1" for v in variables)


def _tweeteval_hub(config: str, split: str | None = None) -> object:
    try:
        import datasets

        if split is None:
            return datasets.load_dataset_builder(HUB_TWEETEVAL, config).info.features
        return datasets.load_dataset(HUB_TWEETEVAL, config, split=split)
    except Exception as err:  # noqa: BLE001 - any failure here means "no hub access"
        raise ConfigError(
            f"data-dir is empty and {HUB_TWEETEVAL} ({config}) could not be loaded (offline?): "
            "pass data-dir=<path to a local copy in the TweetEval layout> "
            f"({type(err).__name__})"
        ) from None


def _load_tweeteval_hub(config: str, split: str) -> tuple[list[str], np.ndarray]:
    table: object = _tweeteval_hub(config, split)
    return list(table["text"]), np.asarray(table["label"], dtype=np.int64)  # type: ignore[index]


def _tweeteval_hub_classes(config: str) -> int:
    features: object = _tweeteval_hub(config)
    return int(features["label"].num_classes)  # type: ignore[index]


def _load_genomic_package(split: str) -> tuple[list[str], np.ndarray]:
    if _offline("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        raise ConfigError(
            f"data-dir='hub': {GENOMIC_BENCHMARK} needs a download (offline mode is on): "
            "pass data-dir='' for the embedded sequences or a directory with train.csv and "
            "test.csv (seq,label)"
        )
    try:
        from genomic_benchmarks.loc2seq import download_dataset

        root = Path(download_dataset(GENOMIC_BENCHMARK, version=0))
    except Exception as err:  # noqa: BLE001 - any failure here means "no download"
        raise ConfigError(
            f"data-dir='hub': {GENOMIC_BENCHMARK} could not be downloaded (offline?): pass "
            "data-dir='' for the embedded sequences or a directory with train.csv and "
            f"test.csv (seq,label) ({type(err).__name__})"
        ) from None
    # The package writes <root>/<split>/<class name>/<id>.txt; classes in sorted order.
    classes = sorted(p.name for p in (root / split).iterdir() if p.is_dir())
    sequences, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((root / split / name).glob("*.txt")):
            sequences.append(file.read_text().strip())
            labels.append(label)
    return sequences, np.asarray(labels, dtype=np.int64)
