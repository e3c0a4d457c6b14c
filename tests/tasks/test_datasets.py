"""Loaders on the shared real data, k-mers, and the data-dir checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from config.errors import ConfigError
from tasks.datasets import load_task, validate_data_dir
from tasks.dna import kmerize


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
    assert (len(train), len(test), train.num_classes) == (10284, 2000, 3)
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


def _tweeteval_dir(root: Path, texts: int = 3, labels: int = 3, label: str = "1") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        (root / f"{split}_text.txt").write_text("".join(f"tweet {i}\n" for i in range(texts)))
        (root / f"{split}_labels.txt").write_text(f"{label}\n" * labels)
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
            "train_labels.txt line 1 has label 7, expected 0..2",
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


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("tweeteval", "cardiffnlp/tweet_eval could not be loaded"),
        ("genomic", "demo_human_or_worm needs a download"),
    ],
)
def test_hub_loaders_offline_fail_fast_and_clearly(
    task: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(ConfigError) as err:
        load_task(task, "train", "")
    assert message in str(err.value) and "data-dir=" in str(err.value)
    assert "\n" not in str(err.value)
