"""Typed, validated run configuration: the one place that reads run-config keys.

Flower hands the apps a flat ``context.run_config`` (``{"num-server-rounds": 5,
...}``). :func:`RunConfig.from_flat` turns it into frozen dataclasses and checks
every value, so a bad setting stops the run at start-up with one line that names
the key and the fix. No other module reads raw run-config keys.

Every field's ``metadata["key"]`` is its run-config key and ``metadata["help"]``
its meaning; ``pyproject.toml`` carries the same defaults (a test keeps the two
in step).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from config.errors import ConfigError

MODEL_PRESETS = ("minilm", "gpt2", "llama-3.2-1b", "deepseek-7b")  # llm/presets.py
PEFT_METHODS = ("lora", "qlora", "none")
TEACHER_FEDERATIONS = ("local", "fedavg")
PROJECTIONS = ("pca", "linear")
AGGREGATIONS = ("fedavg", "fednova")
QISKIT_EXECUTIONS = ("batched", "per-sample")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _key(key: str, default: Any, help: str) -> Any:  # noqa: A002 - mirrors dataclass field(help=)
    return field(default=default, metadata={"key": key, "help": help})


@dataclass(frozen=True)
class FederationConfig:
    """How the federation runs."""

    num_rounds: int = _key("num-server-rounds", 5, "Rounds of federated training (>= 1).")
    fraction_train: float = _key(
        "fraction-train", 1.0, "Fraction of connected nodes that train each round, in (0, 1]."
    )
    min_nodes: int = _key(
        "min-nodes", 2, "Nodes to wait for before starting (never longer than node-wait-seconds)."
    )
    min_train_nodes: int = _key(
        "min-train-nodes",
        2,
        "Fewest nodes a round trains (or all connected nodes, if fewer are connected).",
    )
    node_wait_seconds: float = _key(
        "node-wait-seconds", 60.0, "Longest wait for min-nodes nodes to connect, seconds."
    )
    round_timeout: float = _key(
        "round-timeout", 1800.0, "Seconds the server waits for one round's replies."
    )
    strategy: str = _key(
        "strategy",
        "fedavg",
        "fedavg, fedprox, llm-guided, llmqfl-reference, or package.module:Class.",
    )
    seed: int = _key("seed", 42, "Seed of partitioning, initialisation and sampling.")
    resume_from: str = _key(
        "resume-from",
        "",
        "Results directory of an earlier run whose last checkpoint to continue from; "
        "empty starts afresh.",
    )


@dataclass(frozen=True)
class DataConfig:
    """Which data, and how it is split among clients and the server."""

    task: str = _key("task", "tweeteval", "Task: tweeteval or genomic.")
    data_dir: str = _key(
        "data-dir", "", "Local copy of the task's data; empty means the hub or package loader."
    )
    partitioner: str = _key("partitioner", "iid", "Client partitioning: iid or dirichlet.")
    dirichlet_alpha: float = _key(
        "dirichlet-alpha", 0.5, "Concentration of the Dirichlet label split (> 0)."
    )
    max_train_rows: int = _key(
        "max-train-rows", 2000, "Rows of the train split shared among clients (0 = all)."
    )
    val_fraction: float = _key(
        "val-fraction", 0.2, "Share of each client's partition kept for local validation."
    )
    server_eval_rows: int = _key(
        "server-eval-rows", 500, "Rows of the test split kept by the server (0 = all)."
    )
    kmer: int = _key("kmer", 6, "Genomic task: k-mer length.")
    kmer_stride: int = _key("kmer-stride", 1, "Genomic task: step between k-mers.")


@dataclass(frozen=True)
class TeacherConfig:
    """The local LLM teacher and its LoRA fine-tuning."""

    model: str = _key(
        "model", "minilm", "minilm (embedded), a Hugging Face id (org/name) or a local path."
    )
    max_length: int = _key("max-length", 64, "Tokens per text.")
    lora_r: int = _key("lora-r", 8, "LoRA rank.")
    lora_alpha: int = _key("lora-alpha", 16, "LoRA scaling alpha.")
    lora_dropout: float = _key("lora-dropout", 0.05, "LoRA dropout.")
    epochs: float = _key("teacher-epochs", 3.0, "Fine-tuning epochs over the client's train rows.")
    lr: float = _key("teacher-lr", 2e-3, "Fine-tuning learning rate (AdamW).")
    batch_size: int = _key("teacher-batch-size", 16, "Fine-tuning batch size.")
    embed_batch_size: int = _key("embed-batch-size", 64, "Batch size for logits and embeddings.")
    peft_method: str = _key(
        "peft-method",
        "lora",
        "lora, qlora (4-bit NF4 base, double quantisation) or none (train the head only).",
    )
    lora_target_modules: str = _key(
        "lora-target-modules",
        "",
        "Comma-separated module names LoRA adapts; empty = the preset's or the architecture's.",
    )
    federation: str = _key(
        "teacher-federation",
        "local",
        "local (each client keeps its adapter) or fedavg (adapters and head averaged).",
    )
    fedavg_rounds: int = _key(
        "teacher-fedavg-rounds", 2, "fedavg: rounds in which the teacher adapters are federated."
    )
    cache: bool = _key(
        "teacher-cache",
        True,
        "Keep fine-tuned teachers and embeddings on disk (node config cache-dir, "
        "else LLMQFL_CACHE_DIR, else ~/.cache/llmqfl) and reuse them.",
    )

    @property
    def target_modules(self) -> tuple[str, ...]:
        """``lora-target-modules`` as a tuple (empty: choose automatically)."""
        return tuple(m.strip() for m in self.lora_target_modules.split(",") if m.strip())


@dataclass(frozen=True)
class StudentConfig:
    """The quantum student and its distillation."""

    n_qubits: int = _key("n-qubits", 4, "Qubits of the circuit.")
    n_layers: int = _key("n-layers", 3, "Entangling layers.")
    readout: str = _key("readout", "expval", "expval (scaled expectation values) or probs.")
    circuit: str = _key("circuit", "vqc", "Student circuit: vqc or qcnn.")
    embedding: str = _key("embedding", "angle", "Input embedding: angle (RY) or iqp (ZZ map).")
    ansatz: str = _key(
        "ansatz", "strong", "vqc layers: strong (strongly entangling) or real-amplitudes."
    )
    device: str = _key(
        "device",
        "default.qubit",
        "Quantum device: default.qubit, lightning.qubit, qiskit.aer, fake:<FakeBackendV2>, "
        "ibm:<backend> or ibm:least-busy; a node's node config may set its own.",
    )
    shots: int = _key("shots", 1024, "Shots per circuit execution on Qiskit devices.")
    noise_model: str = _key(
        "noise-model", "", "qiskit.aer: a FakeBackendV2 name whose noise model to apply."
    )
    qiskit_execution: str = _key(
        "qiskit-execution",
        "batched",
        "Qiskit devices: batched (one job per batch) or per-sample (one job per row).",
    )
    optimizer: str = _key(
        "optimizer",
        "auto",
        "Student optimizer: adam, cobyla, spsa, or auto (adam on PennyLane devices, spsa on "
        "Qiskit ones); for cobyla and spsa local-steps is maxiter.",
    )
    projection: str = _key(
        "projection", "linear", "linear (trainable, starts at the federated PCA) or pca (fixed)."
    )
    local_steps: int = _key("local-steps", 20, "Student optimizer steps per round.")
    lr: float = _key("student-lr", 0.05, "Student learning rate (Adam).")
    projection_lr: float = _key(
        "projection-lr", 0.02, "Learning rate of the trainable projection (projection=linear)."
    )
    batch_size: int = _key("student-batch-size", 64, "Student minibatch size.")
    temperature: float = _key("temperature", 2.0, "Distillation temperature T (> 0).")
    alpha: float = _key("alpha", 0.5, "Weight of the KL term in [0, 1]; 0 = cross-entropy only.")


@dataclass(frozen=True)
class PolicyConfig:
    """The guided strategies' policies (llm-guided, llmqfl-reference) and aggregation."""

    steps_policy: str = _key(
        "steps-policy",
        "adaptive",
        "Step budgets: fixed, incremental, dynamic-weighted, logarithmic, adaptive, hybrid, "
        "bandit.",
    )
    min_steps: int = _key("min-steps", 5, "Smallest step budget a policy may set (>= 1).")
    max_steps: int = _key("max-steps", 100, "Largest step budget a policy may set.")
    max_increment: int = _key(
        "max-increment", 100, "hybrid: largest change of a budget in one round."
    )
    bandit_arms: str = _key(
        "bandit-arms",
        "",
        "bandit: comma-separated budgets to choose from; empty = min-steps doubling to max-steps.",
    )
    bandit_epsilon: float = _key(
        "bandit-epsilon", 0.1, "bandit: probability of trying a random budget, in [0, 1]."
    )
    selection: str = _key(
        "selection",
        "gap",
        "Which nodes train: all, random-k, closest, gap, power-of-choice "
        "(k = fraction-train of the connected nodes).",
    )
    poc_candidates: float = _key(
        "poc-candidates", 2.0, "power-of-choice: candidates sampled, as a multiple of k (>= 1)."
    )
    termination: str = _key(
        "termination",
        "plateau",
        "Comma-separated stop rules: teacher-gap, plateau, distance, max-rounds.",
    )
    stop_epsilon: float = _key(
        "stop-epsilon", 0.05, "teacher-gap: stop when student - teacher val loss <= this (nats)."
    )
    stop_patience: int = _key(
        "stop-patience", 3, "plateau, distance: rounds without progress before stopping."
    )
    stop_min_delta: float = _key(
        "stop-min-delta", 0.005, "plateau: smallest drop of the global loss that counts (nats)."
    )
    stop_distance_delta: float = _key(
        "stop-distance-delta",
        0.01,
        "distance: smallest change of the mean client-server loss distance that counts.",
    )
    stop_min_rounds: int = _key(
        "stop-min-rounds", 3, "No termination rule may stop the run before this round."
    )
    aggregation: str = _key(
        "aggregation", "fedavg", "fedavg (example-weighted) or fednova (normalised by steps)."
    )
    proximal_mu: float = _key(
        "proximal-mu", 0.01, "fedprox: weight of the proximal term mu/2 ||w - w_global||^2."
    )


@dataclass(frozen=True)
class OutputConfig:
    """Where results go."""

    results_dir: str = _key("results-dir", "results", "Directory under which each run writes.")


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
    """All settings of a run, typed and validated."""

    federation: FederationConfig = field(default_factory=FederationConfig)
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    @classmethod
    def from_flat(cls, run_config: Mapping[str, Any], *, check_files: bool = True) -> RunConfig:
        """Build and validate a config from Flower's flat ``run_config``.

        Keys that are absent take their defaults. ``check_files`` also checks
        the data directory's files (fast; no model is loaded).

        Raises
        ------
        ConfigError
            One line naming the first bad key and how to fix it.
        """
        known = {f.metadata["key"]: f for section in _SECTIONS.values() for f in _fields(section)}
        unknown = sorted(set(run_config) - set(known))
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
        config = cls(**sections)
        config.validate(check_files=check_files)
        return config

    def to_flat(self) -> dict[str, Any]:
        """The inverse of :meth:`from_flat`: ``{run-config key: value}``."""
        return {
            f.metadata["key"]: getattr(getattr(self, name), f.name)
            for name, section in _SECTIONS.items()
            for f in _fields(section)
        }

    def validate(self, *, check_files: bool = True) -> None:
        """Check every value; raise :class:`ConfigError` on the first bad one."""
        fed, data, teacher, student = self.federation, self.data, self.teacher, self.student
        _check(fed.num_rounds >= 1, "num-server-rounds", fed.num_rounds, "must be >= 1")
        _check(
            0 < fed.fraction_train <= 1, "fraction-train", fed.fraction_train, "must be in (0, 1]"
        )
        _check(fed.min_nodes >= 1, "min-nodes", fed.min_nodes, "must be >= 1")
        _check(fed.min_train_nodes >= 1, "min-train-nodes", fed.min_train_nodes, "must be >= 1")
        _check(fed.node_wait_seconds > 0, "node-wait-seconds", fed.node_wait_seconds, "must be > 0")
        _check(fed.round_timeout > 0, "round-timeout", fed.round_timeout, "must be > 0")
        if fed.resume_from and check_files:
            from server_app.checkpoint import check_resume  # late import: it imports config

            check_resume(fed.resume_from, fed.num_rounds, self.to_flat())
        # The packages that implement each choice own its list (late imports: they import config).
        from quantum.circuits import CircuitSpec
        from quantum.devices import fake_backend_class, parse_device
        from tasks.datasets import TASKS
        from tasks.partition import SCHEMES

        _check_choice("task", data.task, TASKS)
        _check_choice("partitioner", data.partitioner, SCHEMES)
        _check(data.dirichlet_alpha > 0, "dirichlet-alpha", data.dirichlet_alpha, "must be > 0")
        _check(data.max_train_rows >= 0, "max-train-rows", data.max_train_rows, "must be >= 0")
        _check(0 < data.val_fraction < 1, "val-fraction", data.val_fraction, "must be in (0, 1)")
        _check(
            data.server_eval_rows >= 0, "server-eval-rows", data.server_eval_rows, "must be >= 0"
        )
        _check(data.kmer >= 1, "kmer", data.kmer, "must be >= 1")
        _check(data.kmer_stride >= 1, "kmer-stride", data.kmer_stride, "must be >= 1")
        if data.data_dir and check_files:
            from tasks.datasets import validate_data_dir  # late import: tasks imports config

            validate_data_dir(data.task, data.data_dir)
        _check_model(teacher.model)
        for key, value in (
            ("max-length", teacher.max_length),
            ("lora-r", teacher.lora_r),
            ("lora-alpha", teacher.lora_alpha),
            ("teacher-batch-size", teacher.batch_size),
            ("embed-batch-size", teacher.embed_batch_size),
            ("n-qubits", student.n_qubits),
            ("n-layers", student.n_layers),
            ("student-batch-size", student.batch_size),
        ):
            _check(value >= 1, key, value, "must be >= 1")
        _check(
            0 <= teacher.lora_dropout < 1, "lora-dropout", teacher.lora_dropout, "must be in [0, 1)"
        )
        _check(teacher.epochs > 0, "teacher-epochs", teacher.epochs, "must be > 0")
        _check_choice("peft-method", teacher.peft_method, PEFT_METHODS)
        _check_choice("teacher-federation", teacher.federation, TEACHER_FEDERATIONS)
        _check(
            teacher.fedavg_rounds >= 1,
            "teacher-fedavg-rounds",
            teacher.fedavg_rounds,
            "must be >= 1",
        )
        _check(teacher.lr > 0, "teacher-lr", teacher.lr, "must be > 0")
        from quantum.optimizers import resolve_optimizer
        from tasks.datasets import NUM_CLASSES

        _check(student.shots >= 1, "shots", student.shots, "must be >= 1")
        _check_choice("qiskit-execution", student.qiskit_execution, QISKIT_EXECUTIONS)
        if student.noise_model:
            fake_backend_class(student.noise_model, key="noise-model")
        CircuitSpec(
            student.n_qubits,
            student.n_layers,
            NUM_CLASSES[data.task],
            student.readout,
            student.circuit,
            student.embedding,
            student.ansatz,
        )
        resolve_optimizer(student.optimizer, parse_device(student.device))
        _check_choice("projection", student.projection, PROJECTIONS)
        _check(student.local_steps >= 0, "local-steps", student.local_steps, "must be >= 0")
        _check(student.lr > 0, "student-lr", student.lr, "must be > 0")
        _check(student.projection_lr > 0, "projection-lr", student.projection_lr, "must be > 0")
        _check(student.temperature > 0, "temperature", student.temperature, "must be > 0")
        _check(0 <= student.alpha <= 1, "alpha", student.alpha, "must be in [0, 1]")
        from strategies.registry import check_strategy_name  # late import: avoids a cycle

        check_strategy_name(fed.strategy)
        self._validate_policy()

    def _validate_policy(self) -> None:
        policy, strategy, local_steps = (
            self.policy,
            self.federation.strategy,
            self.student.local_steps,
        )
        from strategies.policies import (
            RATIO_RULES,
            SELECTIONS,
            STEP_POLICIES,
            parse_arms,
            parse_rules,
        )

        _check_choice("steps-policy", policy.steps_policy, STEP_POLICIES)
        _check(policy.min_steps >= 1, "min-steps", policy.min_steps, "must be >= 1")
        _check(
            policy.max_steps >= policy.min_steps,
            "max-steps",
            policy.max_steps,
            f"must be >= min-steps ({policy.min_steps})",
        )
        _check(policy.max_increment >= 1, "max-increment", policy.max_increment, "must be >= 1")
        bounds = f"[min-steps, max-steps] = [{policy.min_steps}, {policy.max_steps}]"
        if policy.bandit_arms:
            arms = parse_arms(policy.bandit_arms)
            _check(
                all(policy.min_steps <= a <= policy.max_steps for a in arms),
                "bandit-arms",
                policy.bandit_arms,
                f"every budget must be in {bounds}",
            )
        _check(
            0 <= policy.bandit_epsilon <= 1,
            "bandit-epsilon",
            policy.bandit_epsilon,
            "must be in [0, 1]",
        )
        _check_choice("selection", policy.selection, tuple(SELECTIONS))
        _check(policy.poc_candidates >= 1, "poc-candidates", policy.poc_candidates, "must be >= 1")
        parse_rules(policy.termination)
        for key, value in (
            ("stop-epsilon", policy.stop_epsilon),
            ("stop-min-delta", policy.stop_min_delta),
            ("stop-distance-delta", policy.stop_distance_delta),
            ("proximal-mu", policy.proximal_mu),
        ):
            _check(value >= 0, key, value, "must be >= 0")
        _check(policy.stop_patience >= 1, "stop-patience", policy.stop_patience, "must be >= 1")
        _check(
            policy.stop_min_rounds >= 1, "stop-min-rounds", policy.stop_min_rounds, "must be >= 1"
        )
        _check_choice("aggregation", policy.aggregation, AGGREGATIONS)
        if strategy in ("llm-guided", "llmqfl-reference") and policy.steps_policy in RATIO_RULES:
            _check(
                policy.min_steps <= local_steps <= policy.max_steps,
                "local-steps",
                local_steps,
                f"the starting budget must be in {bounds}",
            )
        if strategy == "llmqfl-reference":
            _check_choice("steps-policy", policy.steps_policy, tuple(RATIO_RULES))


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


def _check(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {rule}")


def _check_choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    _check(value in allowed, key, value, f"must be one of {', '.join(allowed)}")


def _check_model(model: str) -> None:
    if model in MODEL_PRESETS or os.path.isdir(model) or _HUB_ID.match(model):
        return
    raise ConfigError(
        f"model={model!r}: not a preset ({', '.join(MODEL_PRESETS)}), an existing local "
        "directory, or a Hugging Face id of the form org/name"
    )


if __name__ == "__main__":
    print(markdown_table())
