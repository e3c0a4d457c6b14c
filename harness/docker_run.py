"""docker-compose, run for real: a private Docker engine, the offline image, the federation.

:class:`DockerEngine` starts a ``dockerd`` of its own, installing Debian's
``docker.io``, ``docker-compose`` and ``debootstrap`` first when they are
missing. It has private data and exec roots, its own socket and containerd
namespace, and ``--iptables=false --ip-masq=false --bridge=none``, so it
leaves the machine's firewall rules and network links as they are; containers
on one compose bridge still reach each other, and a port published on
127.0.0.1 is forwarded by Docker's userland proxy. :meth:`DockerEngine.stop`
stops it by its PID. :func:`firewall_rules` and :func:`network_links` are what
a caller compares before and after.

:func:`build_offline_image` builds the app image with no network: a local base
image (``deploy/local-base.sh``) and the wheels fetched on this host
(``deploy/build-offline.sh``). :class:`ComposeFederation` copies the project's
compose files (``docker-compose.yml``, ``with-tls.yml``, ``deploy/offline.yml``)
into a folder of its own, makes certificates and SuperNode keys there, starts
the SuperLink, registers the keys, starts the rest and submits runs with
``flwr run``. Used by ``tests/deploy/test_compose_run.py``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.deployment import BIN, REPO, add_profile, flwr_cli
from harness.launch import RunOutcome, flwr_run
from harness.network import free_port, free_subnet, healthy

#: Debian's binaries (a docker CLI elsewhere on the PATH is not used), and their packages.
DOCKERD, DOCKER, COMPOSE = "/usr/sbin/dockerd", "/usr/bin/docker", "/usr/bin/docker-compose"
DEBOOTSTRAP = "/usr/sbin/debootstrap"
IPTABLES = "/usr/sbin/iptables"
#: The host's Python picks the image's wheels (:func:`matching_python`), so it needs pip.
HOST_PIP = "/usr/lib/python3/dist-packages/pip/__init__.py"
PACKAGES = {
    DOCKERD: "docker.io",
    COMPOSE: "docker-compose",
    DEBOOTSTRAP: "debootstrap",
    IPTABLES: "iptables",
    HOST_PIP: "python3-pip",
}
BASE_IMAGE, APP_IMAGE = "llmqfl-base:bookworm", "llmqfl:latest"
COMPOSE_FILES = ("docker-compose.yml", "with-tls.yml", "deploy/offline.yml")


def _run(args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run ``args``; its output, or RuntimeError with the command and the end of its output."""
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-2000:]
        raise RuntimeError(f"{' '.join(args[:4])} ... exited {done.returncode}:\n{tail}")
    return done.stdout


#: The tables whose chains a run could change, for IPv4 and IPv6 alike.
FIREWALL_TABLES = ("filter", "nat", "mangle", "raw", "security")


def firewall_rules(netns: str | None = None) -> str:
    """The firewall as ``iptables -S`` and ``ip6tables -S`` print it, table by table.

    Never empty where iptables is installed: ``-S`` lists each built-in chain's
    policy even where no table exists yet (a fresh nf_tables machine, on which
    ``iptables-save`` prints nothing) and creates none. A table the kernel lacks
    shows as its error line. With ``netns`` the rules are read in that network
    namespace (``ip netns exec``).
    """
    prefix = ["ip", "netns", "exec", netns] if netns else []
    lines: list[str] = []
    for tool in ("iptables", "ip6tables"):
        path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
        if path is None:
            lines.append(f"{tool}: not installed")
            continue
        for table in FIREWALL_TABLES:
            done = subprocess.run(
                [*prefix, path, "-w", "-t", table, "-S"], capture_output=True, text=True
            )
            listed = done.stdout if done.returncode == 0 else f"error: {done.stderr.strip()}"
            lines += [f"{tool} {table}: {line}" for line in listed.splitlines()]
    return "\n".join(lines)


def iptables_save(netns: str | None = None) -> str:
    """What ``iptables-save`` prints (nothing where no table exists yet, e.g. a fresh machine)."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return subprocess.run([*prefix, "iptables-save"], capture_output=True, text=True).stdout


def network_links() -> set[str]:
    """The names of the machine's network links (``ip -o link``)."""
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=False).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


def ensure_packages(packages: dict[str, str] | None = None) -> list[str]:
    """Install the Debian packages of ``packages`` (binary path -> package, by default
    :data:`PACKAGES`) whose binary is missing (needs root); return them."""
    packages = PACKAGES if packages is None else packages
    missing = sorted({package for binary, package in packages.items() if not Path(binary).exists()})
    if not missing:
        return []
    if os.geteuid() != 0:
        raise RuntimeError(
            f"{', '.join(missing)} are missing and installing them needs root: run as root, "
            f"or install them first (apt-get install {' '.join(missing)})"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if subprocess.run(install, capture_output=True, env=env, check=False).returncode != 0:
        _run(["apt-get", "update", "-q"], env=env)  # a fresh machine has no package lists yet
        _run(install, env=env)
    return missing


#: Free disk the compose test needs: the wheels, the base and app images, a build's layers.
COMPOSE_DISK_BYTES = 12 * 2**30


def compose_host_problem() -> str | None:
    """Why the compose test cannot run on this host, or None if it can.

    It needs: Linux as root (it starts a Docker engine of its own); a Debian 12
    (bookworm) host, because the base image is debootstrapped bookworm and the
    wheels are fetched by the host's Python 3.11 for it; ``apt-get`` and the
    Debian mirror for the packages of :data:`PACKAGES` it installs when missing,
    and for ``debootstrap``; and about 12 GiB of free disk. Everything else it
    establishes itself: a free port, a free subnet, its own engine and data root.
    """
    if not sys.platform.startswith("linux"):
        return f"runs Docker on Linux, not {sys.platform}"
    if os.geteuid() != 0:
        return "needs root: it installs Debian's docker.io and starts a Docker engine of its own"
    release = Path("/etc/os-release")
    text = release.read_text() if release.exists() else ""
    codename = re.search(r"^VERSION_CODENAME=(\S+)", text, re.M)
    if codename is None or codename[1] != "bookworm":
        found = codename[1] if codename else "no codename in /etc/os-release"
        return f"needs a Debian 12 (bookworm) host for the image's base and wheels, found {found}"
    if shutil.which("apt-get") is None:
        return "needs apt-get to install docker.io, docker-compose and debootstrap"
    folder = tempfile.gettempdir()
    free = shutil.disk_usage(folder).free
    if free < COMPOSE_DISK_BYTES:
        need = COMPOSE_DISK_BYTES / 2**30
        return f"needs {need:.0f} GiB free in {folder}, has {free / 2**30:.1f}"
    return None


@dataclass
class DockerEngine:
    """A ``dockerd`` of this process's own under ``root`` (see the module docstring)."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="llmqfl-docker-")))
    process: subprocess.Popen[bytes] | None = field(init=False, default=None)

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def env(self) -> dict[str, str]:
        """The environment that points ``docker`` and ``docker-compose`` at this engine."""
        return {**os.environ, "DOCKER_HOST": f"unix://{self.socket}"}

    def start(self, timeout: float = 90.0) -> DockerEngine:
        if os.geteuid() != 0:
            raise RuntimeError(
                "a Docker engine of this test's own needs root: run as root, or deselect "
                "the Docker test with -m 'not docker'"
            )
        ensure_packages()
        args = [
            DOCKERD,
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--host=unix://{self.socket}",
            f"--pidfile={self.root / 'dockerd.pid'}",
            "--iptables=false",
            "--ip-masq=false",
            "--bridge=none",
            "--containerd-namespace=llmqfl",
            "--containerd-plugins-namespace=llmqfl-plugins",
        ]
        with (self.root / "dockerd.log").open("wb") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            probe = subprocess.run([DOCKER, "version"], capture_output=True, env=self.env)
            if probe.returncode == 0:
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.5)
        raise RuntimeError(f"dockerd did not start:\n{self.log()[-2000:]}")

    def log(self) -> str:
        path = self.root / "dockerd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def docker(self, *args: str) -> str:
        return _run([DOCKER, *args], env=self.env)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the daemon by its PID (SIGTERM, then SIGKILL) and remove its files."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        for pid in self.leftover_processes():  # e.g. a containerd shim of a killed daemon
            os.kill(pid, signal.SIGKILL)
        mounts = Path("/proc/mounts").read_text().splitlines()
        for target in sorted((m.split()[1] for m in mounts if str(self.root) in m), reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def leftover_processes(self) -> list[int]:
        """PIDs of processes whose command line names this engine's root (none once stopped)."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                if str(self.root) in command:
                    found.append(int(entry.name))
        return found


def build_offline_image(engine: DockerEngine) -> dict[str, Any]:
    """The local base image and the app image, built with no network; what it took.

    The wheels are picked by a Python of the base image's version
    (:func:`matching_python`). Returns the seconds of each step and the image sizes.
    """
    started = time.perf_counter()
    _run(["bash", str(REPO / "deploy" / "local-base.sh"), BASE_IMAGE], env=engine.env)
    base_done = time.perf_counter()
    env = {**engine.env, "PYTHON": matching_python(engine), "DOCKER": DOCKER}
    _run(["bash", str(REPO / "deploy" / "build-offline.sh"), "--base", BASE_IMAGE], env=env)
    sizes = {
        image: int(engine.docker("image", "inspect", "-f", "{{.Size}}", image))
        for image in (BASE_IMAGE, APP_IMAGE)
    }
    return {
        "base-seconds": base_done - started,
        "app-seconds": time.perf_counter() - base_done,
        "base-bytes": sizes[BASE_IMAGE],
        "app-bytes": sizes[APP_IMAGE],
    }


@dataclass
class ComposeFederation:
    """The project's compose federation (TLS, node auth, no registry) on ``engine``."""

    engine: DockerEngine
    root: Path
    data_dir: Path
    port: int = field(default_factory=lambda: free_port("127.0.0.1"))
    subnet: str = field(default_factory=lambda: str(free_subnet("172.31.{}.0/24", start=250)))
    project: str = field(default_factory=lambda: f"llmqfl{secrets.token_hex(3)}")

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for name in COMPOSE_FILES:
            (self.root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / name, self.root / name)
        _run(["bash", str(REPO / "deploy" / "certs.sh"), "--out", str(self.root / "deploy")])
        self.env = {
            **self.engine.env,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_HOME": str(self.root / "flwr-home"),
            "LLMQFL_DATA_DIR": str(self.data_dir),
            "LLMQFL_LINK_PORT": str(self.port),
            "LLMQFL_SUBNET": self.subnet,
        }

    def compose(self, *args: str) -> str:
        files = [arg for name in COMPOSE_FILES for arg in ("-f", name)]
        return _run([COMPOSE, "-p", self.project, *files, *args], env=self.env, cwd=self.root)

    def flwr(self, *args: str) -> str:
        return flwr_cli(self.env, self.root, *args)

    def up(self, timeout: float = 180.0) -> None:
        """SuperLink, the connection profile, the SuperNodes' keys, then every service."""
        self.compose("up", "-d", "--no-build", "superlink")
        certs = self.root / "deploy" / "certs"
        url = f"https://127.0.0.1:{self.port}/health"
        self._wait(lambda: healthy(url, certs / "ca.crt"), timeout, "the SuperLink to be healthy")
        add_profile(self.env, self.root, "compose", f"127.0.0.1:{self.port}", certs)
        for i in (1, 2, 3):
            key = self.root / "deploy" / "keys" / f"supernode-{i}.pub"
            self.flwr("supernode", "register", str(key), "compose")
        self.compose("up", "-d", "--no-build")
        self._wait(lambda: self.online_nodes() == 3, timeout, "3 SuperNodes online")

    def _wait(self, ready: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(1.0)
        raise RuntimeError(f"timed out waiting for {what}:\n{self.logs()[-4000:]}")

    def online_nodes(self) -> int:
        listed = json.loads(self.flwr("supernode", "list", "compose", "--format", "json"))
        return sum(str(n.get("status", "")).lower() == "online" for n in listed.get("nodes", []))

    def run(self, run_config: dict[str, Any], timeout: float = 900.0) -> RunOutcome:
        """Submit the app from the repository to the compose SuperLink and wait for its end."""
        return flwr_run(
            str(REPO), run_config=run_config, connection="compose", timeout=timeout, env=self.env
        )

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).strip()

    def kill(self, service: str) -> None:
        """SIGKILL the service's container (a crash: compose does not restart it)."""
        self.engine.docker("kill", self.container(service))

    def volume(self, name: str) -> Path:
        """Where the compose volume ``name`` (e.g. ``results``) lies on this machine."""
        volume = f"{self.project}_{name}"
        return Path(
            self.engine.docker("volume", "inspect", "-f", "{{.Mountpoint}}", volume).strip()
        )

    def logs(self) -> str:
        done = subprocess.run(
            [COMPOSE, "-p", self.project, *[a for n in COMPOSE_FILES for a in ("-f", n)],
             "logs", "--no-color", "--tail", "60"],
            capture_output=True, text=True, env=self.env, cwd=self.root, check=False,
        )  # fmt: skip
        return done.stdout + done.stderr

    def down(self) -> None:
        """Stop and remove the containers, the network and the volumes."""
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "20")


def matching_python(engine: DockerEngine) -> str:
    """An interpreter with pip whose version is the base image's Python (for the wheels)."""
    wanted = engine.docker(
        "run", "--rm", "--network", "none", "--entrypoint", "python3", BASE_IMAGE,
        "-c", "import platform; print(platform.python_version())",
    ).strip()  # fmt: skip
    for candidate in (sys.executable, "/usr/bin/python3"):
        probe = subprocess.run(
            [candidate, "-c", "import platform, pip; print(platform.python_version())"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if probe.returncode == 0 and probe.stdout.strip() == wanted:
            return candidate
    raise RuntimeError(
        f"no Python {wanted} with pip here (tried {sys.executable}, /usr/bin/python3)"
    )
