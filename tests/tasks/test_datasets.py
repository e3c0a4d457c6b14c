"""Loaders on the shared real data and the embedded data, class counts, k-mers, data checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from config.errors import ConfigError
from tasks.datasets import DataSource
from tasks.dna import kmerize


def load_task(task: str, split: str, data_dir: str, **kwargs: int):  # type: ignore[no-untyped-def]
    return DataSource(task, data_dir, **kwargs).load(split)


def validate_data_dir(task: str, data_dir: str) -> None:
    DataSource(task, data_dir).validate()


def test_kmerize_by_hand() -> None:
    assert kmerize("ACGTAC", k=3) == "ACG CGT GTA TAC"
    assert kmerize("acgtac", k=3, stride=3) == "ACG TAC"
    assert kmerize("ACGTACG", k=3, stride=2) == "ACG GTA ACG"
    assert kmerize("AC", k=3) == "AC"
    with pytest.raises(ConfigError, match="kmer=0"):
        kmerize("ACGT", k=0)
    with pytest.raises(ConfigError, match="kmer-stride=0"):
        kmerize("ACGT", k=2, stride=0)


def test_tweeteval_local(shared_data: Path) -> None:
    root = shared_data / "tweeteval_sentiment"
    train = load_task("tweeteval", "train", str(root))
    test = load_task("tweeteval", "test", str(root))
    val = load_task("tweeteval", "validation", str(root))
    assert (len(train), len(val), len(test), train.num_classes) == (10284, 2000, 2000, 3)
    first_text = (root / "train_text.txt").read_text(encoding="utf-8").split("\n")[0]
    first_label = int((root / "train_labels.txt").read_text().split()[0])
    assert train.texts[0] == first_text and train.labels[0] == first_label
    assert set(np.unique(train.labels)) == {0, 1, 2}


def test_genomic_local_as_kmers(shared_data: Path) -> None:
    root = shared_data / "genomic_nontata_promoters"
    train = load_task("genomic", "train", str(root), kmer=6, kmer_stride=3)
    test = load_task("genomic", "test", str(root))
    assert (len(train), len(test), train.num_classes) == (7227, 1807, 2)
    seq, label = (root / "train.csv").read_text().splitlines()[1].split(",")
    assert train.texts[0] == kmerize(seq, 6, 3) and train.labels[0] == int(label)
    assert len(train.texts[0].split()) == (len(seq) - 6) // 3 + 1
    assert 0.4 < test.majority_rate() < 0.6


def _tweeteval_dir(root: Path, texts: int = 3, labels: int = 3, label: str = "") -> Path:
    """Texts and labels per split; labels 0, 1, 0, 1, ... unless one ``label`` is given."""
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        (root / f"{split}_text.txt").write_text("".join(f"tweet {i}\n" for i in range(texts)))
        values = [label or str(i % 2) for i in range(labels)]
        (root / f"{split}_labels.txt").write_text("".join(f"{v}\n" for v in values))
    return root


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "absent", "not a directory"),
        (lambda p: (p / "file.txt").write_text("x") and p / "file.txt", "not a directory"),
        (
            lambda p: _tweeteval_dir(p / "d", texts=4),
            "train_labels.txt has 3 lines but train_text.txt has 4",
        ),
        (
            lambda p: _tweeteval_dir(p / "d", label="pos"),
            "train_labels.txt line 1 is 'pos', not an integer",
        ),
        (
            lambda p: _tweeteval_dir(p / "d", label="7"),
            "the train labels are 7; they must be 0..K-1 with K >= 2",
        ),
        (lambda p: _tweeteval_dir(p / "d", texts=0, labels=0), "the train split is empty"),
    ],
)
def test_bad_tweeteval_dirs(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as err:
        validate_data_dir("tweeteval", str(make(tmp_path)))
    assert message in str(err.value) and str(err.value).startswith("data-dir")
    assert "\n" not in str(err.value)


def test_missing_file_and_bad_header(tmp_path: Path) -> None:
    root = _tweeteval_dir(tmp_path / "t")
    (root / "test_labels.txt").unlink()
    with pytest.raises(ConfigError, match="test_labels.txt is missing"):
        validate_data_dir("tweeteval", str(root))
    genomic = tmp_path / "g"
    genomic.mkdir()
    (genomic / "train.csv").write_text("sequence,class\nACGT,1\n")
    (genomic / "test.csv").write_text("seq,label\nACGT,1\n")
    with pytest.raises(ConfigError, match="train.csv needs a header with columns seq,label"):
        validate_data_dir("genomic", str(genomic))


def test_unreadable_dir(tmp_path: Path) -> None:
    root = _tweeteval_dir(tmp_path / "locked")
    (root / "train_text.txt").unlink()
    (root / "train_text.txt").mkdir()  # unreadable as a file, also for root
    with pytest.raises(ConfigError, match="data-dir.*train_text.txt is missing"):
        validate_data_dir("tweeteval", str(root))


def test_unknown_task() -> None:
    with pytest.raises(ConfigError, match="task='mnist': must be one of tweeteval, genomic"):
        load_task("mnist", "train", "")
    with pytest.raises(ConfigError, match="tweeteval-task='moods': must be one of emoji"):
        DataSource("tweeteval", tweeteval_task="moods")


@pytest.mark.parametrize(
    ("task", "data_dir", "message"),
    [
        ("tweeteval", "", "cardiffnlp/tweet_eval (sentiment) could not be loaded"),
        ("tweeteval", "hub", "cardiffnlp/tweet_eval (sentiment) could not be loaded"),
        ("genomic", "hub", "demo_human_or_worm needs a download"),
    ],
)
def test_hub_loaders_offline_fail_fast_and_clearly(
    task: str, data_dir: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(ConfigError) as err:
        load_task(task, "train", data_dir)
    assert message in str(err.value) and "data-dir=" in str(err.value)
    assert "\n" not in str(err.value)


def test_the_embedded_default_is_the_shared_genomic_data(shared_data: Path) -> None:
    """data-dir='' for genomic reads the sequences shipped in the package, offline."""
    embedded = DataSource("genomic")
    assert embedded.description == "genomic: the embedded human_nontata_promoters"
    local = DataSource("genomic", str(shared_data / "genomic_nontata_promoters"))
    for split in ("train", "test"):
        a, b = embedded.load(split), local.load(split)
        assert a.texts == b.texts and np.array_equal(a.labels, b.labels)
    assert embedded.num_classes == 2 and not embedded.has_split("validation")


@pytest.mark.parametrize("classes", [2, 3, 4, 6])
def test_the_class_count_comes_from_the_data(tmp_path: Path, classes: int) -> None:
    root = tmp_path / "d"
    root.mkdir()
    for split in ("train", "test"):
        rows = 3 * classes
        (root / f"{split}_text.txt").write_text("".join(f"text {i}\n" for i in range(rows)))
        (root / f"{split}_labels.txt").write_text("".join(f"{i % classes}\n" for i in range(rows)))
    assert DataSource("tweeteval", str(root)).num_classes == classes
    # mapping.txt wins: a class absent from the rows still counts.
    (root / "mapping.txt").write_text("".join(f"{i}\tname{i}\n" for i in range(classes + 1)))
    assert DataSource("tweeteval", str(root)).load("train").num_classes == classes + 1


@pytest.mark.parametrize(
    ("train", "test", "mapping", "message"),
    [
        ([1, 2, 1, 2], [1, 2], None, "the train labels are 1, 2; they must be 0..K-1"),
        ([0, 2, 0, 2], [0, 2], None, "the train labels are 0, 2; they must be 0..K-1"),
        ([0, 1, 0, 1], [0, 3], None, "the test split has label 3, but the task has 2 classes"),
        ([0, 1, 2, 1], [0, 1], "a\nb\n", "the train split has label 2, but the task has 2"),
    ],
)
def test_labels_that_are_not_0_to_k_minus_1_are_one_line_errors(
    tmp_path: Path, train: list[int], test: list[int], mapping: str | None, message: str
) -> None:
    root = tmp_path / "d"
    root.mkdir()
    for split, labels in (("train", train), ("test", test)):
        (root / f"{split}_text.txt").write_text("".join(f"t{i}\n" for i in range(len(labels))))
        (root / f"{split}_labels.txt").write_text("".join(f"{v}\n" for v in labels))
    if mapping is not None:
        (root / "mapping.txt").write_text(mapping)
    with pytest.raises(ConfigError) as err:
        DataSource("tweeteval", str(root)).validate()
    assert message in str(err.value) and "\n" not in str(err.value)
