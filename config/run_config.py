"""Typed, validated run configuration: the one place that reads run-config keys.

Flower hands the apps a flat ``context.run_config`` (``{"num-server-rounds": 5,
...}``). :func:`RunConfig.from_flat` turns it into frozen dataclasses, one per
section. Like PEFT's configs, each section checks its own values in
``__post_init__`` (types, ranges, and the choices this module defines), so a
bad setting stops the run at start-up with one line that names the key and
the fix. No other module reads raw run-config keys.

Checks that need another package's list (tasks, partitioners, devices,
circuits, optimizers, model presets, strategies and their policies, the
checkpoint to resume from) run at the server's start-up, in
``server_app.preflight``: this module imports nothing of the project above it.

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

PEFT_METHODS = ("lora", "qlora", "none")
TEACHER_FEDERATIONS = ("local", "fedavg")
TEACHER_HEADS = ("cls", "probe")
TEACHER_PROBES = ("pooled", "local")
PROJECTIONS = ("pca", "linear")
AGGREGATIONS = ("fedavg", "fednova", "median", "trimmed-mean", "krum")
QISKIT_EXECUTIONS = ("batched", "per-sample")
SHOT_POLICIES = ("fixed", "ramp")
TEACHER_POLICIES = ("once", "steered")
FINAL_MODELS = ("last", "best-val", "average")


def _is_seconds(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False


def _key(key: str, default: Any, help: str) -> Any:  # noqa: A002 - mirrors dataclass field(help=)
    return field(default=default, metadata={"key": key, "help": help})


def check(ok: bool, key: str, value: Any, rule: str) -> None:
    """Raise ``ConfigError("<key>=<value>: <rule>")`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}={value!r}: {rule}")


def check_choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    """Raise a one-line ``ConfigError`` unless ``value`` is one of ``allowed``."""
    check(value in allowed, key, value, f"must be one of {', '.join(allowed)}")


def _at_least(section: Any, minimum: float, *names: str) -> None:
    """Each named field of ``section`` must be >= ``minimum``."""
    for f in dataclasses.fields(section):
        if f.name in names:
            value = getattr(section, f.name)
            check(value >= minimum, f.metadata["key"], value, f"must be >= {minimum:g}")


def _positive(section: Any, *names: str) -> None:
    """Each named field of ``section`` must be > 0."""
    for f in dataclasses.fields(section):
        if f.name in names:
            value = getattr(section, f.name)
            check(value > 0, f.metadata["key"], value, "must be > 0")


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

    def __post_init__(self) -> None:
        _at_least(self, 1, "num_rounds", "min_nodes", "min_train_nodes")
        _positive(self, "node_wait_seconds", "round_timeout")
        check(
            0 < self.fraction_train <= 1, "fraction-train", self.fraction_train, "must be in (0, 1]"
        )


@dataclass(frozen=True)
class DataConfig:
    """Which data, and how it is split among clients and the server."""

    task: str = _key(
        "task",
        "genomic",
        "genomic (DNA; the default data ships in the package) or tweeteval (text).",
    )
    data_dir: str = _key(
        "data-dir",
        "",
        "Where the rows come from: '' = the task's default (genomic: the sequences shipped in "
        "the package; tweeteval: the hub), 'hub' = the network loaders, or a local directory.",
    )
    tweeteval_task: str = _key(
        "tweeteval-task",
        "sentiment",
        "tweeteval from the hub: the cardiffnlp/tweet_eval config (sentiment, emotion, hate, "
        "irony, offensive, emoji, stance_*).",
    )
    partitioner: str = _key("partitioner", "iid", "Client partitioning: iid or dirichlet.")
    dirichlet_alpha: float = _key(
        "dirichlet-alpha", 0.5, "Concentration of the Dirichlet label split (> 0)."
    )
    max_train_rows: int = _key(
        "max-train-rows", 1200, "Rows of the train split shared among clients (0 = all)."
    )
    val_fraction: float = _key(
        "val-fraction", 0.2, "Share of each client's partition kept for local validation."
    )
    server_val_rows: int = _key(
        "server-val-rows",
        500,
        "Rows of the validation split the server steers and plots by (0 = all); without a "
        "validation split, rows carved from train before partitioning (0 = 10%).",
    )
    test_rows: int = _key(
        "test-rows", 0, "Rows of the test split, scored once at the end (0 = all)."
    )
    test_every_round: bool = _key(
        "test-every-round",
        False,
        "Also score the test rows every round, for the plots only (no decision reads them).",
    )
    kmer: int = _key("kmer", 6, "Genomic task: k-mer length.")
    kmer_stride: int = _key(
        "kmer-stride",
        6,
        "Genomic task: step between k-mers (= kmer: non-overlapping, the most bases per token).",
    )

    def __post_init__(self) -> None:
        _positive(self, "dirichlet_alpha")
        _at_least(self, 0, "max_train_rows", "server_val_rows", "test_rows")
        _at_least(self, 1, "kmer", "kmer_stride")
        check(0 < self.val_fraction < 1, "val-fraction", self.val_fraction, "must be in (0, 1)")


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
    epochs: float = _key(
        "teacher-epochs",
        1.0,
        "Fine-tuning epochs over the client's train rows (with teacher-federation=fedavg: in "
        "each of the teacher-fedavg-rounds).",
    )
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
        "fedavg",
        "fedavg (adapters and head averaged, so each teacher learns from every client's rows) "
        "or local (each client keeps its adapter, the paper's setting).",
    )
    fedavg_rounds: int = _key(
        "teacher-fedavg-rounds", 2, "fedavg: rounds in which the teacher adapters are federated."
    )
    fedavg_early_end: bool = _key(
        "teacher-fedavg-early-end",
        True,
        "fedavg: end the federated rounds early, the average then final, after a round in "
        "which fine-tuning lowered no client's validation loss.",
    )
    head: str = _key(
        "teacher-head",
        "probe",
        "probe (a linear head on the mean-pooled, L2-normalised encoder, started from a "
        "logistic-regression probe) or cls (the model's own fresh classification head).",
    )
    probe: str = _key(
        "teacher-probe",
        "pooled",
        "With teacher-head=probe and teacher-federation=fedavg: pooled (the server fits the "
        "probe from every client's class moments of its embeddings) or local (each client "
        "fits its own; local teachers always do).",
    )
    keep_best: bool = _key(
        "teacher-keep-best",
        True,
        "Keep the teacher of the epoch (the start included) with the lowest local validation "
        "loss, not the last.",
    )
    class_weights: bool = _key(
        "teacher-class-weights",
        False,
        "Weigh the teacher's cross-entropy by the inverse class frequency of the client's "
        "train rows (for imbalanced tasks).",
    )
    warmup: float = _key(
        "teacher-warmup",
        0.0,
        "Share of each fine-tuning call's steps over which the learning rate rises linearly "
        "from 0 (0 = none).",
    )
    cache: bool = _key(
        "teacher-cache",
        True,
        "Keep fine-tuned teachers and embeddings on disk (node config cache-dir, "
        "else LLMQFL_CACHE_DIR, else ~/.cache/llmqfl) and reuse them.",
    )

    def __post_init__(self) -> None:
        _at_least(
            self,
            1,
            "max_length",
            "lora_r",
            "lora_alpha",
            "batch_size",
            "embed_batch_size",
            "fedavg_rounds",
        )
        _positive(self, "epochs", "lr")
        check(0 <= self.lora_dropout < 1, "lora-dropout", self.lora_dropout, "must be in [0, 1)")
        check(0 <= self.warmup < 1, "teacher-warmup", self.warmup, "must be in [0, 1)")
        check_choice("peft-method", self.peft_method, PEFT_METHODS)
        check_choice("teacher-federation", self.federation, TEACHER_FEDERATIONS)
        check_choice("teacher-head", self.head, TEACHER_HEADS)
        check_choice("teacher-probe", self.probe, TEACHER_PROBES)

    @property
    def pooled_probe(self) -> bool:
        """Whether the server fits the teachers' starting head from pooled class moments."""
        return self.head == "probe" and self.federation == "fedavg" and self.probe == "pooled"

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
    qiskit_execution_mode: str = _key(
        "qiskit-execution-mode",
        "auto",
        "Qiskit Runtime mode of a client's jobs in a round: job, batch (queued together), "
        "session (dedicated, billed by wall time), or auto (batch on ibm:, job elsewhere).",
    )
    shots_policy: str = _key(
        "shots-policy",
        "fixed",
        "Shots per row each round: fixed (shots) or ramp (min-shots in round 1 rising "
        "linearly to shots in the last round).",
    )
    min_shots: int = _key("min-shots", 256, "shots-policy=ramp: the first round's shots.")
    max_qpu_seconds: float = _key(
        "max-qpu-seconds",
        0.0,
        "Cap on the run's QPU seconds on ibm: and fake: devices (billed, or estimated where "
        "none is billed); a run estimated above it is refused, a round whose planned budgets "
        "would pass it is not sent. 0: off.",
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

    def __post_init__(self) -> None:
        _at_least(self, 1, "n_qubits", "n_layers", "shots", "batch_size", "min_shots")
        _at_least(self, 0, "max_qpu_seconds")
        check_choice("shots-policy", self.shots_policy, SHOT_POLICIES)
        check(
            self.shots_policy != "ramp" or self.min_shots <= self.shots,
            "min-shots",
            self.min_shots,
            f"must be <= shots ({self.shots}) with shots-policy=ramp",
        )
        _at_least(self, 0, "local_steps")
        _positive(self, "lr", "projection_lr", "temperature")
        check(0 <= self.alpha <= 1, "alpha", self.alpha, "must be in [0, 1]")
        check_choice("qiskit-execution", self.qiskit_execution, QISKIT_EXECUTIONS)
        check_choice("projection", self.projection, PROJECTIONS)


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
    skip_epsilon: float = _key(
        "skip-epsilon",
        -1.0,
        "llm-guided: a client whose student is within this of its teacher (val loss, nats) "
        "sits out up to skip-rounds rounds; < 0 = never skip.",
    )
    skip_rounds: int = _key(
        "skip-rounds",
        2,
        "llm-guided: rounds a matched client sits out before it is measured again.",
    )
    student_max_epochs: float = _key(
        "student-max-epochs",
        0.0,
        "llm-guided: cap each client's student steps at this many passes over its train rows "
        "(ceil(epochs x rows / student-batch-size), at least min-steps); 0 = no cap.",
    )
    teacher_policy: str = _key(
        "teacher-policy",
        "once",
        "llm-guided: once (teacher-epochs in a client's first round) or steered (chunks of "
        "teacher-chunk-epochs while its validation loss keeps falling, up to teacher-epochs).",
    )
    teacher_max_steps: int = _key(
        "teacher-max-steps",
        0,
        "llm-guided: no client fine-tunes its teacher for more than this many steps in all "
        "(its epochs are cut to fit); 0 = no cap.",
    )
    teacher_chunk_epochs: float = _key(
        "teacher-chunk-epochs", 1.0, "steered: epochs of one teacher chunk (> 0)."
    )
    teacher_min_delta: float = _key(
        "teacher-min-delta",
        0.01,
        "steered: a chunk must lower the teacher's val loss by this (nats) to earn another; "
        "else the teacher has converged.",
    )
    deadline: str = _key(
        "deadline",
        "off",
        "llm-guided time-aware budgets: off, median (each round's participants finish by the "
        "median's estimated time), or a number of seconds.",
    )
    termination: str = _key(
        "termination",
        "plateau",
        "Comma-separated stop rules: teacher-gap, plateau, noise-plateau, distance, max-rounds.",
    )
    stop_noise_factor: float = _key(
        "stop-noise-factor",
        1.0,
        "noise-plateau: stop when the last stop-patience rounds improved the validation loss "
        "by less than this many times its round-to-round noise.",
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
    final_model: str = _key(
        "final-model",
        "last",
        "The global student the run ends with and scores on the test rows: last (the last "
        "round's), best-val (the round's with the highest validation accuracy, ties: lower "
        "validation loss) or average (the mean of the last final-average-rounds rounds').",
    )
    final_average_rounds: int = _key(
        "final-average-rounds",
        3,
        "final-model=average: how many of the last rounds' global students to average (>= 1).",
    )
    aggregation: str = _key(
        "aggregation",
        "fedavg",
        "fedavg (example-weighted), fednova (normalised by steps), or robust to bad replies: "
        "median, trimmed-mean (trim-fraction) or krum (krum-byzantine).",
    )
    max_update_norm: float = _key(
        "max-update-norm",
        0.0,
        "Clip each client's update to this L2 norm before combining; 0 = off.",
    )
    trim_fraction: float = _key(
        "trim-fraction", 0.2, "trimmed-mean: share of values cut at each end, per coordinate."
    )
    krum_byzantine: int = _key(
        "krum-byzantine", 1, "krum: bad clients assumed; needs at least 2 x this + 3 replies."
    )
    proximal_mu: float = _key(
        "proximal-mu", 0.01, "fedprox: weight of the proximal term mu/2 ||w - w_global||^2."
    )

    def __post_init__(self) -> None:
        _at_least(self, 1, "min_steps", "max_increment", "stop_patience", "stop_min_rounds")
        _at_least(self, 1, "poc_candidates")
        _at_least(self, 0, "stop_epsilon", "stop_min_delta", "stop_distance_delta", "proximal_mu")
        _at_least(self, 0, "teacher_min_delta", "stop_noise_factor", "student_max_epochs")
        _at_least(self, 0, "teacher_max_steps")
        _at_least(self, 1, "final_average_rounds")
        _at_least(self, 1, "skip_rounds")
        _positive(self, "teacher_chunk_epochs")
        check_choice("teacher-policy", self.teacher_policy, TEACHER_POLICIES)
        check_choice("final-model", self.final_model, FINAL_MODELS)
        check(
            self.deadline in ("off", "median") or _is_seconds(self.deadline),
            "deadline",
            self.deadline,
            "must be off, median or a number of seconds > 0",
        )
        check(
            self.max_steps >= self.min_steps,
            "max-steps",
            self.max_steps,
            f"must be >= min-steps ({self.min_steps})",
        )
        check(
            0 <= self.bandit_epsilon <= 1,
            "bandit-epsilon",
            self.bandit_epsilon,
            "must be in [0, 1]",
        )
        check_choice("aggregation", self.aggregation, AGGREGATIONS)
        _at_least(self, 0, "max_update_norm", "krum_byzantine")
        check(
            0 <= self.trim_fraction < 0.5,
            "trim-fraction",
            self.trim_fraction,
            "must be in [0, 0.5)",
        )


#: Where per-round scalars go besides rounds.jsonl (server_app/metrics_log.py).
METRICS_LOGGERS = ("none", "tensorboard")


@dataclass(frozen=True)
class OutputConfig:
    """Where results go."""

    results_dir: str = _key("results-dir", "results", "Directory under which each run writes.")
    metrics_logger: str = _key(
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
