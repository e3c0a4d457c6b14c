"""Start-up checks that need the libraries' lists: one clear line each, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, RunConfig
from server_app.preflight import preflight


def _preflight(flat: dict) -> None:
    preflight(RunConfig.from_flat(flat))


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"task": "mnist"}, "task='mnist': must be one of tweeteval, genomic"),
        ({"device": "qpu"}, "device='qpu': must be one of"),
        (
            {"model": "not-a-model"},
            "model='not-a-model': not a preset (minilm, gpt2, llama-3.2-1b, deepseek-7b)",
        ),
        ({"partitioner": "shards"}, "partitioner='shards': must be one of iid, dirichlet"),
        ({"readout": "counts"}, "readout='counts': must be one of expval, probs"),
        ({"strategy": "fedfoo"}, "strategy='fedfoo': unknown"),
        ({"strategy": "no_such_module:Cls"}, "module 'no_such_module' cannot be imported"),
        ({"device": "fake:FakeNowhereV2"}, "device='FakeNowhereV2': no such fake IBM backend"),
        ({"noise-model": "Manila"}, "noise-model='Manila': no such fake IBM backend"),
        ({"circuit": "mps"}, "circuit='mps': must be one of vqc, qcnn"),
        ({"embedding": "amplitude"}, "embedding='amplitude': must be one of angle, iqp"),
        ({"ansatz": "su2"}, "ansatz='su2': must be one of strong, real-amplitudes"),
        ({"optimizer": "sgd"}, "optimizer='sgd': must be one of auto, adam, cobyla, spsa"),
        (
            {"optimizer": "adam", "device": "fake:FakeManilaV2"},
            "optimizer='adam': device='fake:FakeManilaV2' samples with shots",
        ),
        ({"n-qubits": 1, "readout": "expval"}, "n-qubits=1: readout='expval' needs 2 qubits"),
        ({"steps-policy": "greedy"}, "steps-policy='greedy': must be one of fixed"),
        ({"selection": "best"}, "selection='best': must be one of all"),
        ({"termination": "plateau,never"}, "termination='plateau,never': unknown rule 'never'"),
        ({"bandit-arms": "5,x"}, "bandit-arms='5,x': use comma-separated integers"),
    ],
)
def test_bad_values_fail_with_one_line(override: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        _preflight(override)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message


def test_defaults_pass() -> None:
    _preflight({})


def test_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^data-dir") as err:
        _preflight({"data-dir": str(tmp_path / "nowhere")})
    assert "\n" not in str(err.value)


def test_text_label_length_mismatch(tmp_path: Path) -> None:
    for split in ("train", "test"):
        (tmp_path / f"{split}_text.txt").write_text("good day\nbad day\nok day\n")
        (tmp_path / f"{split}_labels.txt").write_text("2\n0\n1\n")
    (tmp_path / "train_labels.txt").write_text("2\n0\n")
    with pytest.raises(ConfigError, match=r"data-dir.*train_labels\.txt"):
        _preflight({"task": "tweeteval", "data-dir": str(tmp_path)})


def test_shared_data_dirs_pass(shared_data: Path) -> None:
    _preflight({"task": "tweeteval", "data-dir": str(shared_data / "tweeteval_sentiment")})
    _preflight({"task": "genomic", "data-dir": str(shared_data / "genomic_nontata_promoters")})
