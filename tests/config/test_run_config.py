"""RunConfig: defaults match pyproject.toml, and every bad value gives one clear line."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from config import ConfigError, RunConfig

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_defaults_match_pyproject() -> None:
    declared = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    assert RunConfig().to_flat() == declared


def test_round_trip_and_int_for_float() -> None:
    config = RunConfig.from_flat({"student-lr": 1, "num-server-rounds": 3}, check_files=False)
    assert config.student.lr == 1.0 and isinstance(config.student.lr, float)
    assert config.federation.num_rounds == 3
    assert RunConfig.from_flat(config.to_flat(), check_files=False) == config


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"num-server-rounds": 0}, "num-server-rounds=0: must be >= 1"),
        ({"num-server-rounds": -2}, "num-server-rounds=-2: must be >= 1"),
        ({"task": "mnist"}, "task='mnist': must be one of tweeteval, genomic"),
        ({"device": "qpu"}, "device='qpu': must be one of"),
        (
            {"model": "not-a-model"},
            "model='not-a-model': not a preset (minilm, gpt2, llama-3.2-1b, deepseek-7b)",
        ),
        ({"partitioner": "shards"}, "partitioner='shards': must be one of iid, dirichlet"),
        ({"alpha": 1.5}, "alpha=1.5: must be in [0, 1]"),
        ({"temperature": 0.0}, "temperature=0.0: must be > 0"),
        ({"projection": "umap"}, "projection='umap': must be one of pca, linear"),
        ({"readout": "counts"}, "readout='counts': must be one of expval, probs"),
        ({"val-fraction": 1.0}, "val-fraction=1.0: must be in (0, 1)"),
        ({"strategy": "fedfoo"}, "strategy='fedfoo': unknown"),
        ({"strategy": "no_such_module:Cls"}, "module 'no_such_module' cannot be imported"),
        ({"num-server-rounds": "5"}, "num-server-rounds='5': expected int, got str"),
        ({"local-steps": 2.5}, "local-steps=2.5: expected int, got float"),
        ({"n-qubits": True}, "n-qubits=True: expected int, got bool"),
        ({"colour": 1}, "unknown run-config key 'colour'"),
        ({"device": "fake:FakeNowhereV2"}, "device='FakeNowhereV2': no such fake IBM backend"),
        ({"noise-model": "Manila"}, "noise-model='Manila': no such fake IBM backend"),
        ({"circuit": "mps"}, "circuit='mps': must be one of vqc, qcnn"),
        ({"embedding": "amplitude"}, "embedding='amplitude': must be one of angle, iqp"),
        ({"ansatz": "su2"}, "ansatz='su2': must be one of strong, real-amplitudes"),
        ({"shots": 0}, "shots=0: must be >= 1"),
        ({"qiskit-execution": "async"}, "qiskit-execution='async': must be one of batched"),
        ({"optimizer": "sgd"}, "optimizer='sgd': must be one of auto, adam, cobyla, spsa"),
        (
            {"optimizer": "adam", "device": "fake:FakeManilaV2"},
            "optimizer='adam': device='fake:FakeManilaV2' samples with shots",
        ),
        ({"n-qubits": 2, "readout": "expval"}, "n-qubits=2: readout='expval' needs 3 qubits"),
    ],
)
def test_bad_values_fail_with_one_line(override: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        RunConfig.from_flat(override, check_files=False)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message


def test_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^data-dir") as err:
        RunConfig.from_flat({"data-dir": str(tmp_path / "nowhere")})
    assert "\n" not in str(err.value)


def test_text_label_length_mismatch(tmp_path: Path) -> None:
    for split in ("train", "test"):
        (tmp_path / f"{split}_text.txt").write_text("good day\nbad day\nok day\n")
        (tmp_path / f"{split}_labels.txt").write_text("2\n0\n1\n")
    (tmp_path / "train_labels.txt").write_text("2\n0\n")
    with pytest.raises(ConfigError, match=r"data-dir.*train_labels\.txt"):
        RunConfig.from_flat({"data-dir": str(tmp_path)})


def test_shared_data_dirs_validate(shared_data: Path) -> None:
    RunConfig.from_flat({"data-dir": str(shared_data / "tweeteval_sentiment")})
    RunConfig.from_flat(
        {"task": "genomic", "data-dir": str(shared_data / "genomic_nontata_promoters")}
    )


def test_readme_lists_every_key_with_its_default() -> None:
    from config.run_config import markdown_table

    readme = (PYPROJECT.parent / "README.md").read_text()
    assert markdown_table() in readme, "regenerate with: python -m config.run_config"
