"""Quantum devices by name: the one place where devices and backends are made.

=====================  =========================================================
name                   what runs the circuit
=====================  =========================================================
``default.qubit``      PennyLane statevector, backpropagation (the fast default)
``lightning.qubit``    PennyLane Lightning, adjoint gradients (``expval`` only)
``qiskit.aer``         Qiskit Aer with shots; ``noise-model`` may name a fake
                       IBM backend whose noise model it applies
``fake:<Name>``        an IBM replica (``FakeBackendV2`` from
                       ``qiskit_ibm_runtime.fake_provider``, e.g.
                       ``fake:FakeManilaV2``) with its noise model and coupling
                       map, offline, through qiskit-ibm-runtime's local mode
``ibm:<backend>``      IBM Quantum hardware through qiskit-ibm-runtime
``ibm:least-busy``     the least busy operational IBM backend with enough qubits
``classical``          no circuit: a classical network with the circuit's exact
                       parameter count, a baseline for the quantum student
=====================  =========================================================

:func:`parse_device` is the one place a device name is read: it returns a
:class:`DeviceSpec` (the name, the shot count, the noise model, batched or
per-sample jobs), and :func:`make_executor` builds from it the one object that
runs batches and meters their cost (:class:`quantum.executor.Executor`): a
PennyLane QNode for the first two, a :class:`quantum.sampler.SamplerExecutor`
(one job per batch) for the Qiskit backends. IBM credentials are read only
from ``QISKIT_IBM_TOKEN``, ``QISKIT_IBM_INSTANCE``, ``QISKIT_IBM_CHANNEL`` or a
saved account, by qiskit-ibm-runtime itself; this module never logs or stores
them.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pennylane as qml

from config.errors import ConfigError
from quantum.circuits import CircuitSpec
from quantum.executor import EXECUTION_MODES, ClassicalExecutor, Executor, PennyLaneExecutor

logger = logging.getLogger(__name__)

#: PennyLane devices and the differentiation method each one uses.
STATEVECTOR = {"default.qubit": "backprop", "lightning.qubit": "adjoint"}
#: Device names, for messages and the README.
DEVICE_NAMES = (
    "default.qubit",
    "lightning.qubit",
    "qiskit.aer",
    "fake:<Name>",
    "ibm:<backend>",
    "classical",
)
IBM_VARIABLES = ("QISKIT_IBM_TOKEN", "QISKIT_IBM_INSTANCE", "QISKIT_IBM_CHANNEL")
_SAVED_ACCOUNT = Path.home() / ".qiskit" / "qiskit-ibm.json"


@dataclass(frozen=True)
class DeviceSpec:
    """A parsed device name and its execution options.

    Attributes
    ----------
    name : str
        As given.
    family : {"pennylane", "qiskit", "classical"}
        Who runs the circuit (``classical``: no circuit, a same-size baseline).
    diff_method : str or None
        PennyLane's differentiation method; None for Qiskit backends, which
        train with gradient-free optimizers.
    backend : str
        ``aer``, the fake backend's class name, or the IBM backend name
        (``least-busy`` included); empty for PennyLane devices.
    shots : int
        Shots per circuit execution (Qiskit backends).
    noise_model : str
        ``qiskit.aer`` only: a fake backend whose noise model Aer applies.
    batched : bool
        Qiskit backends: one job per batch (True) or one job per row (False).
    mode : {"job", "batch", "session"}
        Qiskit Runtime execution mode of a message's jobs (``auto`` resolved:
        ``batch`` on ``ibm:``, ``job`` elsewhere).
    """

    name: str
    family: str
    diff_method: str | None
    backend: str = ""
    shots: int = 1024
    noise_model: str = ""
    batched: bool = True
    mode: str = "job"

    @property
    def shots_based(self) -> bool:
        """True when results are sampled with shots (no analytic gradients)."""
        return self.family == "qiskit"

    @property
    def bills_qpu(self) -> bool:
        """True for ``ibm:`` devices and their ``fake:`` replicas, priced as the hardware."""
        return self.name.startswith(("ibm:", "fake:"))

    @property
    def is_hardware(self) -> bool:
        """True for ``ibm:`` devices (jobs cost QPU time)."""
        return self.name.startswith("ibm:")

    @property
    def exact(self) -> DeviceSpec:
        """Where the server evaluates this device's student exactly: ``default.qubit``
        (no shots, no QPU), or the classical baseline itself."""
        return self if self.family == "classical" else parse_device("default.qubit")

    def check_access(self) -> None:
        """Fail fast, in one line, when an ``ibm:`` device has no credentials (else nothing)."""
        if self.is_hardware:
            check_ibm_credentials()


def parse_device(
    name: str,
    *,
    shots: int = 1024,
    noise_model: str = "",
    batched: bool = True,
    mode: str = "auto",
) -> DeviceSpec:
    """Parse and check a device name without touching any backend or network.

    ``mode`` is ``qiskit-execution-mode``: ``auto`` (``batch`` on ``ibm:``,
    ``job`` elsewhere), ``job``, ``batch`` or ``session``.

    Raises
    ------
    ConfigError
        One line naming the ``device`` (or ``noise-model``, ``qiskit-execution-mode``)
        key and the accepted values.
    """
    if mode not in ("auto", *EXECUTION_MODES):
        raise ConfigError(
            f"qiskit-execution-mode={mode!r}: must be one of auto, {', '.join(EXECUTION_MODES)}"
        )
    if noise_model:
        fake_backend_class(noise_model, key="noise-model")
    prefix, _, rest = name.partition(":")
    if name in STATEVECTOR:
        family, diff_method, backend = "pennylane", STATEVECTOR[name], ""
    elif name == "qiskit.aer":
        family, diff_method, backend = "qiskit", None, "aer"
    elif name == "classical":
        family, diff_method, backend = "classical", "backprop", ""
    elif prefix in ("fake", "ibm") and rest:
        if prefix == "fake":
            fake_backend_class(rest, key="device")
        family, diff_method, backend = "qiskit", None, rest
    else:
        raise ConfigError(f"device={name!r}: must be one of {', '.join(DEVICE_NAMES)}")
    if mode == "auto":
        mode = "batch" if prefix == "ibm" else "job"
    return DeviceSpec(name, family, diff_method, backend, shots, noise_model, batched, mode)


def make_executor(spec: DeviceSpec, circuit: CircuitSpec, *, seed: int = 0) -> Executor:
    """The one object that runs ``circuit`` on the device ``spec`` names and meters its cost.

    Builds the device or backend (an ``ibm:`` backend is resolved here, once);
    build it once per node and run and reuse it for every message.

    Raises
    ------
    ConfigError
        A readout the device cannot differentiate, too few qubits, or missing or
        refused IBM credentials (one line).
    """
    if spec.family == "classical":
        return ClassicalExecutor(circuit)
    if spec.family == "pennylane":
        if circuit.readout == "probs" and spec.diff_method == "adjoint":
            raise ConfigError(
                f"readout='probs': {spec.name} differentiates with the adjoint method, "
                "which supports only expectation values; use readout='expval' or "
                "device='default.qubit'"
            )
        device = qml.device(spec.name, wires=circuit.n_qubits)
        return PennyLaneExecutor(circuit, device, str(spec.diff_method))
    from quantum.sampler import SamplerExecutor

    backend = make_qiskit_backend(spec, circuit.n_qubits, seed=seed)
    return SamplerExecutor(
        circuit,
        backend,
        shots=spec.shots,
        batched=spec.batched,
        seed=seed,
        simulator=not spec.is_hardware,
        mode=spec.mode,
        billed=spec.bills_qpu,
    )


def fake_backend_class(name: str, *, key: str) -> type:
    """The ``FakeBackendV2`` class called ``name`` (e.g. ``FakeManilaV2``).

    Raises
    ------
    ConfigError
        Naming ``key`` and a few of the available fakes.
    """
    from qiskit_ibm_runtime import fake_provider

    cls = getattr(fake_provider, name, None)
    if not (isinstance(cls, type) and name.startswith("Fake") and hasattr(cls, "num_qubits")):
        examples = "FakeManilaV2, FakeLimaV2, FakeNairobiV2, FakeGuadalupeV2, FakeBrisbane"
        raise ConfigError(
            f"{key}={name!r}: no such fake IBM backend in qiskit_ibm_runtime.fake_provider; "
            f"try one of {examples}"
        )
    return cls


def make_qiskit_backend(spec: DeviceSpec, wires: int, *, seed: int = 0) -> Any:
    """The Qiskit ``BackendV2`` a Qiskit device stands for.

    Parameters
    ----------
    spec : DeviceSpec
        A ``qiskit`` family device; ``qiskit.aer`` applies ``spec.noise_model``.
    wires : int
        Qubits the circuit needs (the backend must have at least as many).
    seed : int
        Seeds Aer's sampling (simulators only).

    Raises
    ------
    ConfigError
        Bad names, too few qubits, or missing IBM credentials (one line).
    """
    if spec.backend == "aer":
        from qiskit_aer import AerSimulator

        if spec.noise_model:
            from qiskit_aer.noise import NoiseModel

            fake = fake_backend_class(spec.noise_model, key="noise-model")()
            return AerSimulator(noise_model=NoiseModel.from_backend(fake), seed_simulator=seed)
        return AerSimulator(seed_simulator=seed)
    if spec.name.startswith("fake:"):
        backend = fake_backend_class(spec.backend, key="device")()
        backend.set_options(seed_simulator=seed)
    else:
        backend = ibm_backend(spec.backend, wires)
    if backend.num_qubits < wires:
        raise ConfigError(
            f"device={spec.name!r}: has {backend.num_qubits} qubits, the circuit needs {wires}; "
            "lower n-qubits or pick a larger backend"
        )
    return backend


def check_ibm_credentials() -> None:
    """Fail fast, in one line, when no IBM Quantum credentials can be found.

    Raises
    ------
    ConfigError
        When neither ``QISKIT_IBM_TOKEN`` is set nor a saved account exists.
    """
    if os.environ.get("QISKIT_IBM_TOKEN") or _SAVED_ACCOUNT.is_file():
        return
    raise ConfigError(
        "device='ibm:...': no IBM Quantum credentials; set QISKIT_IBM_TOKEN (and "
        "QISKIT_IBM_INSTANCE, optionally QISKIT_IBM_CHANNEL) or save an account with "
        "QiskitRuntimeService.save_account(...)"
    )


def ibm_backend(name: str, wires: int) -> Any:
    """An IBM Quantum backend; ``least-busy`` picks among operational devices.

    The service reads the credentials itself; an error from it is re-raised as
    one line that never contains the token.
    """
    check_ibm_credentials()
    from qiskit_ibm_runtime import QiskitRuntimeService

    try:
        service = QiskitRuntimeService()
        if name == "least-busy":
            backend = service.least_busy(min_num_qubits=wires, operational=True, simulator=False)
        else:
            backend = service.backend(name)
    except Exception as err:  # the service raises many types; the message is what matters
        message = redact(f"{type(err).__name__}: {err}".splitlines()[0])
        raise ConfigError(
            f"device='ibm:{name}': IBM Quantum refused or unreachable ({message})"
        ) from None
    logger.info("IBM backend %s (%d qubits)", backend.name, backend.num_qubits)
    return backend


def ibm_tokens() -> list[str]:
    """Every IBM Quantum token this process could use.

    ``QISKIT_IBM_TOKEN`` and the token of every account saved with
    ``QiskitRuntimeService.save_account``; an unreadable account file gives none.
    """
    tokens = [os.environ.get("QISKIT_IBM_TOKEN", "")]
    try:
        accounts = json.loads(_SAVED_ACCOUNT.read_text())
    except (OSError, ValueError):
        accounts = {}
    if isinstance(accounts, dict):
        tokens += [str(a.get("token", "")) for a in accounts.values() if isinstance(a, dict)]
    return sorted({t for t in tokens if t}, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with every IBM token (environment or saved account) replaced by ``***``."""
    for token in ibm_tokens():
        text = text.replace(token, "***")
    return text
