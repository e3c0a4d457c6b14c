"""The policy section of a run's configuration: the guided strategies' levers and aggregation."""

from __future__ import annotations

from dataclasses import dataclass

from config.fields import at_least, check, check_choice, is_seconds, positive, setting

AGGREGATIONS = ("fedavg", "fednova", "median", "trimmed-mean", "krum")
TEACHER_POLICIES = ("once", "steered", "validated")
FINAL_MODELS = ("auto", "last", "best-val", "average")


@dataclass(frozen=True)
class PolicyConfig:
    """The guided strategies' policies (llm-guided, llmqfl-reference) and aggregation."""

    steps_policy: str = setting(
        "steps-policy",
        "fixed",
        "Step budgets: fixed, incremental, dynamic-weighted, logarithmic, adaptive, hybrid, "
        "bandit. llmqfl-reference takes a ratio rule (incremental, dynamic-weighted, "
        "logarithmic, adaptive, hybrid); with fixed it keeps the published adaptive rule.",
    )
    min_steps: int = setting("min-steps", 5, "Smallest step budget a policy may set (>= 1).")
    max_steps: int = setting("max-steps", 100, "Largest step budget a policy may set.")
    max_increment: int = setting(
        "max-increment", 100, "hybrid: largest change of a budget in one round."
    )
    bandit_arms: str = setting(
        "bandit-arms",
        "",
        "bandit: comma-separated budgets to choose from; empty = min-steps doubling to max-steps.",
    )
    bandit_epsilon: float = setting(
        "bandit-epsilon", 0.1, "bandit: probability of trying a random budget, in [0, 1]."
    )
    selection: str = setting(
        "selection",
        "all",
        "Which nodes train: all, random-k, closest, gap, power-of-choice, utility "
        "(k = fraction-train of the connected nodes).",
    )
    selection_explore: float = setting(
        "selection-explore",
        0.25,
        "utility: share of the k places given to nodes drawn at random, in [0, 1].",
    )
    selection_floor: int = setting(
        "selection-floor",
        3,
        "utility: a node not selected for this many rounds is selected next (>= 1).",
    )
    selection_speed_exponent: float = setting(
        "selection-speed-exponent",
        2.0,
        "utility: a node slower than the median round counts (median / its seconds) to this "
        "power (>= 0; 0 = speed ignored).",
    )
    poc_candidates: float = setting(
        "poc-candidates", 2.0, "power-of-choice: candidates sampled, as a multiple of k (>= 1)."
    )
    skip_epsilon: float = setting(
        "skip-epsilon",
        -1.0,
        "llm-guided: a client whose student is within this of its teacher (val loss, nats) "
        "sits out up to skip-rounds rounds; < 0 = never skip.",
    )
    skip_rounds: int = setting(
        "skip-rounds",
        2,
        "llm-guided: rounds a matched client sits out before it is measured again.",
    )
    student_max_epochs: float = setting(
        "student-max-epochs",
        0.0,
        "llm-guided: cap each client's student steps at this many passes over its train rows "
        "(ceil(epochs x rows / student-batch-size), at least min-steps); 0 = no cap.",
    )
    teacher_policy: str = setting(
        "teacher-policy",
        "validated",
        "llm-guided: once (teacher-epochs in a client's first round), steered (chunks of "
        "teacher-chunk-epochs while its validation loss keeps falling, up to teacher-epochs) "
        "or validated (teacher-federation=fedavg: a chunk per federated round while the "
        "average lowers the server's validation loss below the best teacher yet, the pooled "
        "probe included; the best is final).",
    )
    teacher_max_steps: int = setting(
        "teacher-max-steps",
        48,
        "llm-guided: no client fine-tunes its teacher for more than this many steps in all "
        "(its epochs are cut to fit); 0 = no cap.",
    )
    teacher_chunk_epochs: float = setting(
        "teacher-chunk-epochs", 1.0, "steered, validated: epochs of one teacher chunk (> 0)."
    )
    teacher_min_delta: float = setting(
        "teacher-min-delta",
        0.01,
        "steered: a chunk must lower the teacher's val loss by this (nats) to earn another; "
        "else the teacher has converged. validated: the same for the global teacher's loss "
        "on the server's validation rows.",
    )
    deadline: str = setting(
        "deadline",
        "off",
        "llm-guided time-aware budgets: off, median (each round's participants finish by the "
        "median's estimated time), or a number of seconds.",
    )
    termination: str = setting(
        "termination",
        "max-rounds",
        "Comma-separated stop rules: teacher-gap, teacher-noise, plateau, noise-plateau, distance, "
        "max-rounds.",
    )
    stop_noise_factor: float = setting(
        "stop-noise-factor",
        1.0,
        "noise-plateau: stop when the last stop-patience rounds improved the validation loss "
        "by less than this many times its round-to-round noise; teacher-noise: the same for "
        "the global student's gap to the teachers, or when that gap is within it.",
    )
    stop_epsilon: float = setting(
        "stop-epsilon", 0.05, "teacher-gap: stop when student - teacher val loss <= this (nats)."
    )
    stop_patience: int = setting(
        "stop-patience",
        3,
        "plateau, distance, noise-plateau, teacher-noise: rounds without progress before stopping.",
    )
    stop_min_delta: float = setting(
        "stop-min-delta", 0.005, "plateau: smallest drop of the global loss that counts (nats)."
    )
    stop_distance_delta: float = setting(
        "stop-distance-delta",
        0.01,
        "distance: smallest change of the mean client-server loss distance that counts.",
    )
    stop_min_rounds: int = setting(
        "stop-min-rounds", 3, "No termination rule may stop the run before this round."
    )
    final_model: str = setting(
        "final-model",
        "auto",
        "The global student the run ends with and scores on the test rows: last (the last "
        "round's), best-val (the round's with the highest validation accuracy, ties: lower "
        "validation loss), average (the mean of the last final-average-rounds rounds') or "
        "auto (average for llm-guided, last for the other strategies).",
    )
    final_average_rounds: int = setting(
        "final-average-rounds",
        3,
        "final-model=average: how many of the last rounds' global students to average (>= 1).",
    )
    aggregation: str = setting(
        "aggregation",
        "fedavg",
        "fedavg (example-weighted), fednova (normalised by steps), or robust to bad replies: "
        "median, trimmed-mean (trim-fraction) or krum (krum-byzantine).",
    )
    max_update_norm: float = setting(
        "max-update-norm",
        0.0,
        "Clip each client's update to this L2 norm before combining; 0 = off.",
    )
    trim_fraction: float = setting(
        "trim-fraction", 0.2, "trimmed-mean: share of values cut at each end, per coordinate."
    )
    krum_byzantine: int = setting(
        "krum-byzantine", 1, "krum: bad clients assumed; needs at least 2 x this + 3 replies."
    )
    proximal_mu: float = setting(
        "proximal-mu", 0.01, "fedprox: weight of the proximal term mu/2 ||w - w_global||^2."
    )

    def __post_init__(self) -> None:
        at_least(self, 1, "min_steps", "max_increment", "stop_patience", "stop_min_rounds")
        at_least(self, 1, "poc_candidates", "selection_floor")
        at_least(self, 0, "selection_speed_exponent")
        check(
            0 <= self.selection_explore <= 1,
            "selection-explore",
            self.selection_explore,
            "must be in [0, 1]",
        )
        at_least(self, 0, "stop_epsilon", "stop_min_delta", "stop_distance_delta", "proximal_mu")
        at_least(self, 0, "teacher_min_delta", "stop_noise_factor", "student_max_epochs")
        at_least(self, 0, "teacher_max_steps")
        at_least(self, 1, "final_average_rounds")
        at_least(self, 1, "skip_rounds")
        positive(self, "teacher_chunk_epochs")
        check_choice("teacher-policy", self.teacher_policy, TEACHER_POLICIES)
        check_choice("final-model", self.final_model, FINAL_MODELS)
        check(
            self.deadline in ("off", "median") or is_seconds(self.deadline),
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
        at_least(self, 0, "max_update_norm", "krum_byzantine")
        check(
            0 <= self.trim_fraction < 0.5,
            "trim-fraction",
            self.trim_fraction,
            "must be in [0, 0.5)",
        )
