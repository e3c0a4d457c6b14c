"""The model sections of a run's configuration: the LLM teacher and the quantum student."""

from __future__ import annotations

from dataclasses import dataclass

from config.fields import at_least, check, check_choice, positive, setting

PEFT_METHODS = ("lora", "qlora", "none")
TEACHER_FEDERATIONS = ("local", "fedavg")
TEACHER_HEADS = ("cls", "probe")
TEACHER_PROBES = ("pooled", "local")
PROJECTIONS = ("pca", "linear")
QISKIT_EXECUTIONS = ("batched", "per-sample")
SHOT_POLICIES = ("fixed", "ramp")


@dataclass(frozen=True)
class TeacherConfig:
    """The local LLM teacher and its LoRA fine-tuning."""

    model: str = setting(
        "model", "minilm", "minilm (embedded), a Hugging Face id (org/name) or a local path."
    )
    max_length: int = setting("max-length", 64, "Tokens per text.")
    lora_r: int = setting("lora-r", 8, "LoRA rank.")
    lora_alpha: int = setting("lora-alpha", 16, "LoRA scaling alpha.")
    lora_dropout: float = setting("lora-dropout", 0.05, "LoRA dropout.")
    epochs: float = setting(
        "teacher-epochs",
        1.0,
        "Fine-tuning epochs over the client's train rows (with teacher-federation=fedavg: in "
        "each of the teacher-fedavg-rounds).",
    )
    lr: float = setting("teacher-lr", 2e-3, "Fine-tuning learning rate (AdamW).")
    batch_size: int = setting("teacher-batch-size", 16, "Fine-tuning batch size.")
    embed_batch_size: int = setting("embed-batch-size", 64, "Batch size for logits and embeddings.")
    peft_method: str = setting(
        "peft-method",
        "lora",
        "lora, qlora (4-bit NF4 base, double quantisation) or none (train the head only).",
    )
    lora_target_modules: str = setting(
        "lora-target-modules",
        "",
        "Comma-separated module names LoRA adapts; empty = the preset's or the architecture's.",
    )
    federation: str = setting(
        "teacher-federation",
        "fedavg",
        "fedavg (adapters and head averaged, so each teacher learns from every client's rows) "
        "or local (each client keeps its adapter, the paper's setting).",
    )
    fedavg_rounds: int = setting(
        "teacher-fedavg-rounds", 2, "fedavg: rounds in which the teacher adapters are federated."
    )
    fedavg_early_end: bool = setting(
        "teacher-fedavg-early-end",
        True,
        "fedavg: end the federated rounds early, the average then final, after a round in "
        "which fine-tuning lowered no client's validation loss.",
    )
    head: str = setting(
        "teacher-head",
        "probe",
        "probe (a linear head on the mean-pooled, L2-normalised encoder, started from a "
        "logistic-regression probe) or cls (the model's own fresh classification head).",
    )
    probe: str = setting(
        "teacher-probe",
        "pooled",
        "With teacher-head=probe and teacher-federation=fedavg: pooled (the server fits the "
        "probe from every client's class moments of its embeddings) or local (each client "
        "fits its own; local teachers always do).",
    )
    keep_best: bool = setting(
        "teacher-keep-best",
        True,
        "Keep the teacher of the epoch (the start included) with the lowest local validation "
        "loss, not the last.",
    )
    class_weights: bool = setting(
        "teacher-class-weights",
        False,
        "Weigh the teacher's cross-entropy by the inverse class frequency of the client's "
        "train rows (for imbalanced tasks).",
    )
    warmup: float = setting(
        "teacher-warmup",
        0.0,
        "Share of each fine-tuning call's steps over which the learning rate rises linearly "
        "from 0 (0 = none).",
    )
    cache: bool = setting(
        "teacher-cache",
        True,
        "Keep fine-tuned teachers and embeddings on disk (node config cache-dir, "
        "else LLMQFL_CACHE_DIR, else ~/.cache/llmqfl) and reuse them.",
    )

    def __post_init__(self) -> None:
        at_least(
            self,
            1,
            "max_length",
            "lora_r",
            "lora_alpha",
            "batch_size",
            "embed_batch_size",
            "fedavg_rounds",
        )
        positive(self, "epochs", "lr")
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

    n_qubits: int = setting("n-qubits", 4, "Qubits of the circuit.")
    n_layers: int = setting("n-layers", 3, "Entangling layers.")
    readout: str = setting("readout", "expval", "expval (scaled expectation values) or probs.")
    circuit: str = setting("circuit", "vqc", "Student circuit: vqc or qcnn.")
    embedding: str = setting("embedding", "angle", "Input embedding: angle (RY) or iqp (ZZ map).")
    ansatz: str = setting(
        "ansatz", "strong", "vqc layers: strong (strongly entangling) or real-amplitudes."
    )
    device: str = setting(
        "device",
        "default.qubit",
        "Quantum device: default.qubit, lightning.qubit, qiskit.aer, fake:<FakeBackendV2>, "
        "ibm:<backend> or ibm:least-busy; a node's node config may set its own.",
    )
    shots: int = setting("shots", 1024, "Shots per circuit execution on Qiskit devices.")
    noise_model: str = setting(
        "noise-model", "", "qiskit.aer: a FakeBackendV2 name whose noise model to apply."
    )
    qiskit_execution: str = setting(
        "qiskit-execution",
        "batched",
        "Qiskit devices: batched (one job per batch) or per-sample (one job per row).",
    )
    qiskit_execution_mode: str = setting(
        "qiskit-execution-mode",
        "auto",
        "Qiskit Runtime mode of a client's jobs in a round: job, batch (queued together), "
        "session (dedicated, billed by wall time), or auto (batch on ibm:, job elsewhere).",
    )
    shots_policy: str = setting(
        "shots-policy",
        "fixed",
        "Shots per row each round: fixed (shots) or ramp (min-shots in round 1 rising "
        "linearly to shots in the last round).",
    )
    min_shots: int = setting("min-shots", 256, "shots-policy=ramp: the first round's shots.")
    max_qpu_seconds: float = setting(
        "max-qpu-seconds",
        0.0,
        "Cap on the run's QPU seconds on ibm: and fake: devices (billed, or estimated where "
        "none is billed); a run estimated above it is refused, a round whose planned budgets "
        "would pass it is not sent. 0: off.",
    )
    optimizer: str = setting(
        "optimizer",
        "auto",
        "Student optimizer: adam, cobyla, spsa, or auto (adam on PennyLane devices, spsa on "
        "Qiskit ones); for cobyla and spsa local-steps is maxiter.",
    )
    projection: str = setting(
        "projection", "linear", "linear (trainable, starts at the federated PCA) or pca (fixed)."
    )
    local_steps: int = setting("local-steps", 20, "Student optimizer steps per round.")
    lr: float = setting("student-lr", 0.05, "Student learning rate (Adam).")
    projection_lr: float = setting(
        "projection-lr", 0.02, "Learning rate of the trainable projection (projection=linear)."
    )
    batch_size: int = setting("student-batch-size", 64, "Student minibatch size.")
    temperature: float = setting("temperature", 2.0, "Distillation temperature T (> 0).")
    alpha: float = setting("alpha", 0.5, "Weight of the KL term in [0, 1]; 0 = cross-entropy only.")

    def __post_init__(self) -> None:
        at_least(self, 1, "n_qubits", "n_layers", "shots", "batch_size", "min_shots")
        at_least(self, 0, "max_qpu_seconds")
        check_choice("shots-policy", self.shots_policy, SHOT_POLICIES)
        check(
            self.shots_policy != "ramp" or self.min_shots <= self.shots,
            "min-shots",
            self.min_shots,
            f"must be <= shots ({self.shots}) with shots-policy=ramp",
        )
        at_least(self, 0, "local_steps")
        positive(self, "lr", "projection_lr", "temperature")
        check(0 <= self.alpha <= 1, "alpha", self.alpha, "must be in [0, 1]")
        check_choice("qiskit-execution", self.qiskit_execution, QISKIT_EXECUTIONS)
        check_choice("projection", self.projection, PROJECTIONS)
