"""RunConfig: defaults match pyproject.toml, and every bad value gives one clear line.

Settings that only another package can judge (task, device, circuit, strategy, ...)
are checked at the server's start-up: tests/server_app/test_preflight.py.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from config import ConfigError, RunConfig

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_defaults_match_pyproject() -> None:
    declared = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    assert RunConfig().to_flat() == declared


def test_round_trip_and_int_for_float() -> None:
    config = RunConfig.from_flat({"student-lr": 1, "num-server-rounds": 3})
    assert config.student.lr == 1.0 and isinstance(config.student.lr, float)
    assert config.federation.num_rounds == 3
    assert RunConfig.from_flat(config.to_flat()) == config


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"num-server-rounds": 0}, "num-server-rounds=0: must be >= 1"),
        ({"num-server-rounds": -2}, "num-server-rounds=-2: must be >= 1"),
        ({"fraction-train": 0.0}, "fraction-train=0.0: must be in (0, 1]"),
        ({"alpha": 1.5}, "alpha=1.5: must be in [0, 1]"),
        ({"temperature": 0.0}, "temperature=0.0: must be > 0"),
        ({"projection": "umap"}, "projection='umap': must be one of pca, linear"),
        ({"val-fraction": 1.0}, "val-fraction=1.0: must be in (0, 1)"),
        ({"num-server-rounds": "5"}, "num-server-rounds='5': expected int, got str"),
        ({"local-steps": 2.5}, "local-steps=2.5: expected int, got float"),
        ({"n-qubits": True}, "n-qubits=True: expected int, got bool"),
        ({"colour": 1}, "unknown run-config key 'colour'"),
        ({"shots": 0}, "shots=0: must be >= 1"),
        ({"qiskit-execution": "async"}, "qiskit-execution='async': must be one of batched"),
        ({"peft-method": "ia3"}, "peft-method='ia3': must be one of lora, qlora, none"),
        ({"min-steps": 10, "max-steps": 5}, "max-steps=5: must be >= min-steps (10)"),
        ({"bandit-epsilon": 1.5}, "bandit-epsilon=1.5: must be in [0, 1]"),
        ({"aggregation": "mean"}, "aggregation='mean': must be one of fedavg, fednova"),
        ({"teacher-cache": 1}, "teacher-cache=1: expected true or false"),
    ],
)
def test_bad_values_fail_with_one_line(override: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        RunConfig.from_flat(override)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message


def test_each_section_checks_itself() -> None:
    """A section built directly (not through from_flat) refuses a bad value too."""
    from config.run_config import StudentConfig

    with pytest.raises(ConfigError, match="n-layers=0: must be >= 1"):
        StudentConfig(n_layers=0)


def test_readme_lists_every_key_with_its_default() -> None:
    from config.run_config import markdown_table

    readme = (PYPROJECT.parent / "README.md").read_text()
    assert markdown_table() in readme, "regenerate with: python -m config.run_config"


def test_the_default_strategy_is_the_measured_llm_guided_configuration() -> None:
    """A user who names no key gets the llm-guided configuration that
    bench/compare_strategies.py measured (its ``GUIDED``), and FedAvg is one key away
    with the last round's student, as the bench's baseline."""
    import importlib.util

    path = PYPROJECT.parent / "bench" / "compare_strategies.py"
    spec = importlib.util.spec_from_file_location("compare_strategies", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    default, measured = RunConfig(), RunConfig.from_flat(bench.GUIDED)
    assert default.federation.strategy == "llm-guided"
    assert default.final_model == measured.final_model == "average"
    assert dataclasses.replace(default.policy, final_model="average") == measured.policy
    fedavg = RunConfig.from_flat(bench.STRATEGIES["fedavg"])
    assert fedavg.federation.strategy == "fedavg" and fedavg.final_model == "last"
