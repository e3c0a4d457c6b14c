"""A real Flower deployment on one machine: for the deployment tests and benchmarks.

``Cluster`` starts ``flower-superlink`` and ``flower-supernode`` processes as a
user would on separate machines, with process isolation (a ``flower-superexec``
beside the SuperLink for the ServerApp and one beside each SuperNode for its
ClientApps), the same flags as ``docker-compose.yml`` and ``with-tls.yml``.

Network: when this process may create network namespaces (root with
``ip netns``), every SuperNode and its SuperExec live in a namespace of their
own with their own address on a private bridge and reach the SuperLink at the
bridge's address, as separate hosts would. Otherwise they share loopback.
``Cluster.network`` says which. Nothing about the host is assumed: the
SuperLink's port and the Runtime API ports are free ones (:func:`free_port`),
and the bridge's /24 is one that no route or address here covers
(:func:`free_subnet`).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.launch import RunOutcome, flwr_run
from harness.network import free_port, free_subnet, healthy, ip_command, namespaces_problem

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@dataclass
class Proc:
    """A started process, its log and its process group."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=30)

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def flwr_cli(env: dict[str, str], cwd: Path, *args: str) -> str:
    """``flwr *args`` with ``env`` (its ``FLWR_HOME``): the output, or RuntimeError with its end."""
    done = subprocess.run(
        [str(BIN / "flwr"), *args], capture_output=True, text=True, env=env, cwd=cwd, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"flwr {' '.join(args)}: {(done.stdout + done.stderr)[-1500:]}")
    return done.stdout


def add_profile(
    env: dict[str, str], cwd: Path, name: str, address: str, certs: Path | None
) -> None:
    """Add the SuperLink connection ``name`` to ``$FLWR_HOME/config.toml`` (TLS with ``certs``)."""
    flwr_cli(env, cwd, "config", "list")  # writes the default config.toml
    lines = ["", f"[superlink.{name}]", f'address = "{address}"']
    if certs is not None:
        lines.append(f'root-certificates = "{certs / "ca.crt"}"')
    else:
        lines.append("insecure = true")
    with (Path(env["FLWR_HOME"]) / "config.toml").open("a") as config:
        config.write("\n".join(lines) + "\n")


@dataclass
class Cluster:
    """SuperLink, SuperExecs and SuperNodes as separate processes; see the module doc."""

    root: Path
    tls: bool = False
    nodes: int = 3
    # ClientApps forked from a warm process (client_app.forkserver), SuperNode waits capped
    # (client_app.supernode); False runs Flower's stock processes.
    warm: bool = True
    network: str = field(init=False, default="")
    host: str = field(init=False, default="127.0.0.1")
    procs: dict[str, Proc] = field(init=False, default_factory=dict)
    _tag: str = field(init=False, default_factory=lambda: secrets.token_hex(2))
    _namespaces: list[str] = field(init=False, default_factory=list)
    _node_ports: dict[int, int] = field(init=False, default_factory=dict)
    #: The SuperLink's one port (Fleet, Control, Runtime), chosen free at start.
    port: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.home = self.root / "flwr-home"
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_HOME": str(self.home),
            "PYTHONUNBUFFERED": "1",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        }

    # ------------------------------------------------------------ network
    def _setup_network(self) -> None:
        if namespaces_problem() is not None:
            self.network = "loopback"
            return
        free = free_subnet(start=int(self._tag, 16) % 250 + 1)
        subnet = str(free.network_address).rsplit(".", 1)[0] + "."
        bridge = f"lq{self._tag}br"
        ip_command("link", "add", bridge, "type", "bridge")
        self._namespaces.append(f"@bridge:{bridge}")
        ip_command("addr", "add", f"{subnet}1/24", "dev", bridge)
        ip_command("link", "set", bridge, "up")
        self.host = f"{subnet}1"
        for i in range(self.nodes + 1):  # one spare for a rogue SuperNode
            ns, outer, inner = f"lq{self._tag}n{i}", f"lq{self._tag}h{i}", f"lq{self._tag}c{i}"
            ip_command("netns", "add", ns)
            self._namespaces.append(ns)
            ip_command("link", "add", outer, "type", "veth", "peer", "name", inner)
            self._namespaces.append(f"@link:{outer}")  # deleted now, not when its netns goes
            ip_command("link", "set", inner, "netns", ns)
            ip_command("link", "set", outer, "master", bridge)
            ip_command("link", "set", outer, "up")
            ip_command("addr", "add", f"{subnet}{10 + i}/24", "dev", inner, netns=ns)
            ip_command("link", "set", inner, "up", netns=ns)
            ip_command("link", "set", "lo", "up", netns=ns)
        self.network = f"namespaces: SuperLink {self.host}, SuperNodes {subnet}10-{10 + self.nodes}"

    @property
    def address(self) -> str:
        """The SuperLink's ``host:port``."""
        return f"{self.host}:{self.port}"

    def node_address(self, i: int) -> str:
        """Where SuperNode ``i`` is, as the SuperLink sees it."""
        if self.network.startswith("namespaces"):
            return self.host.rsplit(".", 1)[0] + f".{10 + i}"
        return "127.0.0.1"

    def _in_node(self, i: int, args: list[str]) -> list[str]:
        if self.network.startswith("namespaces"):
            return ["ip", "netns", "exec", f"lq{self._tag}n{i}", *args]
        return args

    def _runtime_port(self, i: int) -> int:
        if self.network.startswith("namespaces"):
            return 9094  # each node has its own namespace, and so its own ports
        return self._node_ports.setdefault(i, free_port("127.0.0.1"))

    # ------------------------------------------------------------ processes
    def _start(self, name: str, args: list[str]) -> Proc:
        log = self.root / f"{name}.log"
        handle = log.open("wb")
        popen = subprocess.Popen(
            args,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.root,
            start_new_session=True,
        )
        proc = Proc(name, popen, log)
        self.procs[name] = proc
        return proc

    def _wait_healthy(self, timeout: float = 60.0) -> None:
        scheme = "https" if self.tls else "http"
        ca = self.certs / "ca.crt" if self.tls else None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if healthy(f"{scheme}://{self.address}/health", ca):
                return
            if self.procs["superlink"].popen.poll() is not None:
                break
            time.sleep(0.3)
        raise RuntimeError(f"SuperLink not healthy:\n{self.procs['superlink'].text()[-2000:]}")

    def _client_security(self) -> list[str]:
        return ["--root-certificates", str(self.certs / "ca.crt")] if self.tls else ["--insecure"]

    def start(self) -> Cluster:
        """Network, certificates and keys, SuperLink, ServerApp SuperExec, profile, SuperNodes."""
        self._setup_network()
        self.port = free_port()
        self.certs = self.root / "certs"
        self.keys = self.root / "keys"
        if self.tls:
            sans = [f"IP:{self.host}", "IP:127.0.0.1", "DNS:localhost"]
            subprocess.run(
                [
                    "bash",
                    str(REPO / "deploy" / "certs.sh"),
                    "--out",
                    str(self.root),
                    "--supernodes",
                    str(self.nodes + 1),  # the last key is never registered
                    *sans,
                ],
                check=True,
                capture_output=True,
            )
            security = [
                f"--ssl-ca-certfile={self.certs / 'ca.crt'}",
                f"--ssl-certfile={self.certs / 'server.pem'}",
                f"--ssl-keyfile={self.certs / 'server.key'}",
                "--enable-supernode-auth",
            ]
        else:
            security = ["--insecure"]
        self._start(
            "superlink",
            [
                str(BIN / "flower-superlink"),
                *security,
                "--isolation=process",
                f"--host={self.host}",
                f"--port={self.port}",
                f"--database={self.root / 'state.db'}",
                "--disable-runtime-dependency-installation",
            ],
        )
        self._wait_healthy()
        self._start(
            "superexec-serverapp",
            [
                str(BIN / "flower-superexec"),
                *self._client_security(),
                "--runtime-api-address",
                self.address,
            ],
        )
        self._write_profile()
        for i in range(self.nodes):
            if self.tls:
                self.flwr("supernode", "register", str(self.keys / f"supernode-{i + 1}.pub"), "dep")
            self.start_node(i)
        return self

    def _write_profile(self) -> None:
        add_profile(self.env, self.root, "dep", self.address, self.certs if self.tls else None)

    def start_node(self, i: int, *, key: int | None = None) -> Proc:
        """SuperNode ``i`` (partition ``i``) and its SuperExec; ``key`` picks another key pair."""
        port = self._runtime_port(i)
        supernode = (
            [sys.executable, "-m", "client_app.supernode"]
            if self.warm
            else [str(BIN / "flower-supernode")]
        )
        args = [
            *supernode,
            "--superlink",
            self.address,
            "--isolation=process",
            "--host=127.0.0.1",
            f"--port={port}",
            "--node-config",
            f"partition-id={i} num-partitions={self.nodes}",
        ]
        if self.tls:
            args += [
                "--root-certificates",
                str(self.certs / "ca.crt"),
                "--auth-supernode-private-key",
                str(self.keys / f"supernode-{(i if key is None else key) + 1}"),
                f"--ssl-ca-certfile={self.certs / 'ca.crt'}",
                f"--ssl-certfile={self.certs / 'server.pem'}",
                f"--ssl-keyfile={self.certs / 'server.key'}",
            ]
        else:
            args.append("--insecure")
        node = self._start(f"supernode-{i}", self._in_node(i, args))
        superexec = (
            [sys.executable, "-m", "client_app.forkserver"]
            if self.warm
            else [str(BIN / "flower-superexec")]
        )
        self._start(
            f"superexec-{i}",
            self._in_node(
                i,
                [
                    *superexec,
                    *self._client_security(),
                    "--runtime-api-address",
                    f"127.0.0.1:{port}",
                ],
            ),
        )
        return node

    def kill_node(self, i: int) -> None:
        """SIGKILL SuperNode ``i`` and its SuperExec (and their ClientApp processes)."""
        self.procs[f"supernode-{i}"].kill()
        self.procs[f"superexec-{i}"].kill()

    def flwr(self, *args: str) -> str:
        return flwr_cli(self.env, self.root, *args)

    def run(self, run_config: dict[str, Any], timeout: float = 900.0) -> RunOutcome:
        """Submit the app from the repository and wait for the run's end state."""
        return flwr_run(
            str(REPO), run_config=run_config, connection="dep", timeout=timeout, env=self.env
        )

    def connected_nodes(self) -> int:
        """SuperNodes the SuperLink lists as online."""
        listed = json.loads(self.flwr("supernode", "list", "dep", "--format", "json"))
        nodes = listed.get("nodes", [])
        return sum(1 for n in nodes if str(n.get("status", "")).lower() == "online")

    def logs(self) -> str:
        return "\n".join(f"===== {n}\n{p.text()[-3000:]}" for n, p in self.procs.items())

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()
        for name in reversed(self._namespaces):
            if name.startswith(("@bridge:", "@link:")):
                subprocess.run(
                    ["ip", "link", "del", name.split(":", 1)[1]], capture_output=True, check=False
                )
            else:
                subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
