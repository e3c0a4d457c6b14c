"""What a client's message will cost on a shot-based device, before it runs.

A train message evaluates the received student on the client's validation
rows, runs its optimizer steps and evaluates the trained student again
(``client_app.app.train``); an evaluate message (Flower's evaluate phase,
``fraction-evaluate``) evaluates the received student once and runs no step
(``client_app.app.evaluate``). On a batched Qiskit executor each forward pass
is one job, and SPSA's two perturbations share one job, so the jobs, rows
and shots of a message follow from its budget alone:

=====================  ===========================================  ==========================
work                   jobs                                         rows per job
=====================  ===========================================  ==========================
validation, x2 (x1)    ``ceil(val_rows / 512)`` each                up to 512
SPSA step              1 (2 with ``stack=False``)                   2 x the step's minibatch
COBYLA step            1                                            every train row
Adam (PennyLane)       0: nothing is sampled or billed              --
=====================  ===========================================  ==========================

``qiskit-execution=per-sample`` makes every row its own job. A step's
minibatch is ``student-batch-size`` rows, or an epoch's remainder
(:func:`quantum.distill.minibatches`). :func:`message_cost` counts these
exactly; the QPU seconds are the cost model's
(:func:`quantum.sampler.job_qpu_seconds`), an estimate.
"""

from __future__ import annotations

from quantum.distill import EVAL_BATCH
from quantum.metering import CostMeter
from quantum.sampler import job_qpu_seconds


def epoch_batches(rows: int, batch_size: int) -> list[int]:
    """The minibatch sizes of one epoch over ``rows`` rows, in order."""
    full, rest = divmod(rows, batch_size)
    return [batch_size] * full + ([rest] if rest else [])


def message_cost(
    *,
    optimizer: str,
    steps: int,
    shots: int,
    train_rows: int,
    val_rows: int,
    batch_size: int,
    seconds_per_shot: float,
    batched: bool = True,
    stack: bool = True,
    validations: int = 2,
) -> CostMeter:
    """Jobs, shots, executions and estimated QPU seconds of one message.

    Parameters
    ----------
    optimizer : {"spsa", "cobyla", "adam"}
        The client's resolved optimizer; ``adam`` runs on a PennyLane device and
        costs no jobs.
    steps, shots : int
        The message's step and shot budgets.
    train_rows, val_rows, batch_size : int
        The client's rows and ``student-batch-size``.
    seconds_per_shot : float
        The node's estimate (:attr:`quantum.executor.Executor.seconds_per_shot`).
    batched, stack : bool
        As the node's :class:`~quantum.sampler.SamplerExecutor`.
    validations : int
        Passes over the validation rows: 2 for a train message, 1 for an
        evaluate message (``steps=0``).
    """
    cost = CostMeter()
    if optimizer not in ("spsa", "cobyla") or shots <= 0:
        return cost
    calls: list[tuple[int, int]] = []  # (rows, weight sets) of each executor call
    val_chunks = [min(EVAL_BATCH, val_rows - i) for i in range(0, val_rows, EVAL_BATCH)]
    calls += [(rows, 1) for rows in val_chunks] * validations
    if optimizer == "spsa" and steps > 0 and train_rows > 0:
        sizes = epoch_batches(train_rows, batch_size)
        calls += [(sizes[k % len(sizes)], 2) for k in range(steps)]
    elif optimizer == "cobyla":
        calls += [(train_rows, 1)] * steps
    for rows, sets in calls:
        if not batched:
            jobs = [1] * (rows * sets)
        elif stack:
            jobs = [rows * sets]
        else:
            jobs = [rows] * sets
        for job_rows in jobs:
            estimate = job_qpu_seconds(job_rows, shots, seconds_per_shot)
            cost.add_job(None, estimated_qpu_seconds=estimate)
        cost.shots += rows * sets * shots
        cost.executions += rows * sets
    return cost


def describe(cost: CostMeter) -> str:
    """``"12 jobs, 3.1M shots, ~42 QPU s"``: a cost in a few words, for log lines."""
    return f"{cost.jobs} jobs, {_count(cost.shots)} shots, ~{cost.estimated_qpu_seconds:.0f} QPU s"


def _count(value: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:.1f}{suffix}"
    return f"{value:.0f}"
