"""Bad input stops the real ServerApp with one line before any training, writing nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from config.errors import ConfigError
from harness.inprocess import InProcessGrid, run_in_process


def _tweeteval_copy(root: Path, shared: Path, *, labels: Callable[[list[str]], list[str]]) -> Path:
    """A copy of the shared TweetEval folder with its train labels rewritten."""
    root.mkdir()
    for path in (shared / "tweeteval_sentiment").iterdir():
        (root / path.name).write_bytes(path.read_bytes())
    lines = (root / "train_labels.txt").read_text().splitlines()
    (root / "train_labels.txt").write_text("\n".join(labels(lines)) + "\n")
    return root


def _malformed(tmp: Path, shared: Path) -> dict:
    bad = _tweeteval_copy(tmp / "d", shared, labels=lambda ls: ["positive", *ls[1:]])
    return {"data-dir": str(bad)}


def _mismatch(tmp: Path, shared: Path) -> dict:
    return {"data-dir": str(_tweeteval_copy(tmp / "d", shared, labels=lambda ls: ls[:-5]))}


def _unreadable(tmp: Path, shared: Path) -> dict:
    bad = _tweeteval_copy(tmp / "d", shared, labels=lambda ls: ls)
    (bad / "train_text.txt").unlink()
    (bad / "train_text.txt").mkdir()
    return {"data-dir": str(bad)}


CASES: list[tuple[str, Callable[[Path, Path], dict], str]] = [
    ("malformed label file", _malformed, "train_labels.txt line 1 is 'positive', not an integer"),
    (
        "text/label length mismatch",
        _mismatch,
        "train_labels.txt has 10279 lines but train_text.txt has 10284",
    ),
    ("unreadable data directory", _unreadable, "train_text.txt is missing"),
    ("missing data directory", lambda t, s: {"data-dir": str(t / "nowhere")}, "not a directory"),
    (
        "empty partition",
        lambda t, s: {"max-train-rows": 4},
        "of 3 has 1 row(s): lower num-partitions",
    ),
    ("unknown device", lambda t, s: {"device": "qpu.qubit"}, "device='qpu.qubit': must be one of"),
    ("unknown strategy", lambda t, s: {"strategy": "fedmagic"}, "strategy='fedmagic': unknown"),
    (
        "module:Class that does not exist",
        lambda t, s: {"strategy": "strategies.registry:NoSuchStrategy"},
        "has no attribute 'NoSuchStrategy'",
    ),
    (
        "negative rounds",
        lambda t, s: {"num-server-rounds": -3},
        "num-server-rounds=-3: must be >= 1",
    ),
]


@pytest.mark.parametrize(("name", "make", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_fast_with_one_line(
    name: str, make: Callable[[Path, Path], dict], message: str, tmp_path: Path, shared_data: Path
) -> None:
    config = {
        "task": "tweeteval",
        "data-dir": str(shared_data / "tweeteval_sentiment"),
        "min-nodes": 3,
        "results-dir": str(tmp_path / "results"),
        **make(tmp_path, shared_data),
    }
    grids: list[InProcessGrid] = []
    original = InProcessGrid.__init__

    def remember(self: InProcessGrid, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        grids.append(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(InProcessGrid, "__init__", remember)
        with pytest.raises(ConfigError) as err:
            run_in_process(config, num_nodes=3)
    text = str(err.value)
    assert message in text, text
    assert "\n" not in text
    (grid,) = grids
    # No node was ever asked to train (at most the statistics query ran).
    assert grid.messages_sent <= 3
    results = tmp_path / "results"
    written = list(results.rglob("*")) if results.exists() else []
    assert not [p for p in written if p.name in ("rounds.jsonl", "summary.json", "student.npz")]
