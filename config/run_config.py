"""Typed, validated run configuration: the one place that reads run-config keys.

Flower hands the apps a flat ``context.run_config`` (``{"num-server-rounds": 5,
...}``). :func:`RunConfig.from_flat` turns it into frozen dataclasses, one per
section. Like PEFT's configs, each section checks its own values in
``__post_init__`` (types, ranges, and the choices its module defines), so a
bad setting stops the run at start-up with one line that names the key and
the fix. No other module reads raw run-config keys.

Checks that need another package's list (tasks, partitioners, devices,
circuits, optimizers, model presets, strategies and their policies, the
checkpoint to resume from) run at the server's start-up, in
``server_app.preflight``: this module imports nothing of the project above it.

The federation, data and output sections live here, the teacher and student
sections in ``config.model_sections``, the policy section in
``config.policy_section``; all are built from ``config.fields``.

Every field's ``metadata["key"]`` is its run-config key and ``metadata["help"]``
its meaning; ``pyproject.toml`` carries the same defaults (a test keeps the two
in step).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from config.errors import ConfigError
from config.fields import at_least, check, check_choice, positive, setting
from config.model_sections import StudentConfig, TeacherConfig
from config.policy_section import PolicyConfig


@dataclass(frozen=True)
class FederationConfig:
    """How the federation runs."""

    num_rounds: int = setting("num-server-rounds", 5, "Rounds of federated training (>= 1).")
    fraction_train: float = setting(
        "fraction-train", 1.0, "Fraction of connected nodes that train each round, in (0, 1]."
    )
    fraction_evaluate: float = setting(
        "fraction-evaluate",
        1.0,
        "Fraction of connected nodes that score each round's new global student on their own "
        "validation rows (Flower's evaluate phase; federated-val in rounds.jsonl), in [0, 1]; "
        "0 = off.",
    )
    min_nodes: int = setting(
        "min-nodes", 2, "Nodes to wait for before starting (never longer than node-wait-seconds)."
    )
    min_train_nodes: int = setting(
        "min-train-nodes",
        2,
        "Fewest nodes a round trains (or all connected nodes, if fewer are connected).",
    )
    node_wait_seconds: float = setting(
        "node-wait-seconds", 60.0, "Longest wait for min-nodes nodes to connect, seconds."
    )
    round_timeout: float = setting(
        "round-timeout", 1800.0, "Seconds the server waits for one round's replies."
    )
    strategy: str = setting(
        "strategy",
        "llm-guided",
        "fedavg, fedprox, llm-guided, llmqfl-reference, flwr:<a Flower strategy> (FedAdam, "
        "FedYogi, FedAvgM, QFedAvg, FedMedian, DifferentialPrivacyServerSide*, ...: it "
        "aggregates the student) or package.module:Class (a StudentFedAvg or a Flower "
        "Strategy subclass).",
    )
    strategy_options: str = setting(
        "strategy-options",
        "{}",
        "flwr: and Flower-Strategy classes: their constructor keywords as a JSON object, e.g. "
        '{"eta": 0.05}; "strategy" names the strategy a DP wrapper wraps ("flwr:FedAvg").',
    )
    seed: int = setting("seed", 42, "Seed of partitioning, initialisation and sampling.")
    resume_from: str = setting(
        "resume-from",
        "",
        "Results directory of an earlier run whose last checkpoint to continue from; "
        "empty starts afresh.",
    )

    def __post_init__(self) -> None:
        at_least(self, 1, "num_rounds", "min_nodes", "min_train_nodes")
        positive(self, "node_wait_seconds", "round_timeout")
        check(
            0 < self.fraction_train <= 1, "fraction-train", self.fraction_train, "must be in (0, 1]"
        )
        check(
            0 <= self.fraction_evaluate <= 1,
            "fraction-evaluate",
            self.fraction_evaluate,
            "must be in [0, 1]",
        )


@dataclass(frozen=True)
class DataConfig:
    """Which data, and how it is split among clients and the server."""

    task: str = setting(
        "task",
        "genomic",
        "genomic (DNA; the default data ships in the package) or tweeteval (text).",
    )
    data_dir: str = setting(
        "data-dir",
        "",
        "Where the rows come from: '' = the task's default (genomic: the sequences shipped in "
        "the package; tweeteval: the hub), 'hub' = the network loaders, or a local directory.",
    )
    tweeteval_task: str = setting(
        "tweeteval-task",
        "sentiment",
        "tweeteval from the hub: the cardiffnlp/tweet_eval config (sentiment, emotion, hate, "
        "irony, offensive, emoji, stance_*).",
    )
    partitioner: str = setting("partitioner", "iid", "Client partitioning: iid or dirichlet.")
    dirichlet_alpha: float = setting(
        "dirichlet-alpha", 0.5, "Concentration of the Dirichlet label split (> 0)."
    )
    max_train_rows: int = setting(
        "max-train-rows", 1200, "Rows of the train split shared among clients (0 = all)."
    )
    val_fraction: float = setting(
        "val-fraction", 0.2, "Share of each client's partition kept for local validation."
    )
    server_val_rows: int = setting(
        "server-val-rows",
        500,
        "Rows of the validation split the server steers and plots by (0 = all); without a "
        "validation split, rows carved from train before partitioning (0 = 10%).",
    )
    test_rows: int = setting(
        "test-rows", 0, "Rows of the test split, scored once at the end (0 = all)."
    )
    test_every_round: bool = setting(
        "test-every-round",
        False,
        "Also score the test rows every round, for the plots only (no decision reads them).",
    )
    kmer: int = setting("kmer", 6, "Genomic task: k-mer length.")
    kmer_stride: int = setting(
        "kmer-stride",
        6,
        "Genomic task: step between k-mers (= kmer: non-overlapping, the most bases per token).",
    )

    def __post_init__(self) -> None:
        positive(self, "dirichlet_alpha")
        at_least(self, 0, "max_train_rows", "server_val_rows", "test_rows")
        at_least(self, 1, "kmer", "kmer_stride")
        check(0 < self.val_fraction < 1, "val-fraction", self.val_fraction, "must be in (0, 1)")


#: Where per-round scalars go besides rounds.jsonl (server_app/metrics_log.py).
METRICS_LOGGERS = ("none", "tensorboard")


@dataclass(frozen=True)
class OutputConfig:
    """Where results go."""

    results_dir: str = setting("results-dir", "results", "Directory under which each run writes.")
    metrics_logger: str = setting(
        "metrics-logger",
        "none",
        "Per-round scalars also to: none, tensorboard (the run's tensorboard/ folder).",
    )

    def __post_init__(self) -> None:
        check_choice("metrics-logger", self.metrics_logger, METRICS_LOGGERS)


_SECTIONS = {
    "federation": FederationConfig,
    "data": DataConfig,
    "teacher": TeacherConfig,
    "student": StudentConfig,
    "policy": PolicyConfig,
    "output": OutputConfig,
}


@dataclass(frozen=True)
class RunConfig:
    """All settings of a run, typed, each section checked by itself."""

    federation: FederationConfig = field(default_factory=FederationConfig)
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    @classmethod
    def from_flat(cls, run_config: Mapping[str, Any]) -> RunConfig:
        """Build a config from Flower's flat ``run_config``; absent keys take their defaults.

        Raises
        ------
        ConfigError
            One line naming the first unknown key, wrongly typed value or bad value.
        """
        known = {f.metadata["key"] for section in _SECTIONS.values() for f in _fields(section)}
        unknown = sorted(set(run_config) - known)
        if unknown:
            raise ConfigError(
                f"unknown run-config key {unknown[0]!r}: see README 'Run-config keys' "
                "for the valid keys"
            )
        sections = {
            name: section(
                **{
                    f.name: _coerce(f, run_config[f.metadata["key"]])
                    for f in _fields(section)
                    if f.metadata["key"] in run_config
                }
            )
            for name, section in _SECTIONS.items()
        }
        return cls(**sections)

    @property
    def final_model(self) -> str:
        """``final-model`` with ``auto`` resolved: average for llm-guided, else last."""
        if self.policy.final_model != "auto":
            return self.policy.final_model
        return "average" if self.federation.strategy == "llm-guided" else "last"

    def to_flat(self) -> dict[str, Any]:
        """The inverse of :meth:`from_flat`: ``{run-config key: value}``."""
        return {
            f.metadata["key"]: getattr(getattr(self, name), f.name)
            for name, section in _SECTIONS.items()
            for f in _fields(section)
        }


def markdown_table() -> str:
    """The README's table of run-config keys (``python -m config.run_config``)."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for section in _SECTIONS.values():
        for f in _fields(section):
            default = str(f.default).lower() if isinstance(f.default, bool) else repr(f.default)
            rows.append(f"| `{f.metadata['key']}` | `{default}` | {f.metadata['help']} |")
    return "\n".join(rows)


def _fields(section: type) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(section)


def _coerce(f: dataclasses.Field[Any], value: Any) -> Any:
    """Accept what TOML gives (no silent bool/str/float->int conversion)."""
    key, kind = f.metadata["key"], f.type
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected true or false")
        return value
    expected = {"int": int, "float": float, "str": str}[str(kind)]
    if isinstance(value, bool) or not isinstance(value, expected):
        raise ConfigError(
            f"{key}={value!r}: expected {str(kind)}, got {type(value).__name__} "
            f"(strings need quotes: {key}='...')"
        )
    return value


if __name__ == "__main__":
    print(markdown_table())
