"""docker-compose.yml and with-tls.yml parse, merge and say what the deployment needs.

The files are read as Compose reads them (anchors, merge keys, variables,
overlays) by ``harness.compose``, so these checks need no Docker; the real
run of the same files is ``test_compose_run.py``.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from harness.compose import load_compose, substitute

REPO = Path(__file__).resolve().parents[2]
NODES = 3
# What a user exports as LLMQFL_DATA_DIR; compose only interpolates it, so it need not exist.
DATA_DIR = str(Path(tempfile.gettempdir()) / "llmqfl-data")


def compose_config(*files: str) -> dict[str, Any]:
    """The merged configuration of the project's compose ``files``."""
    return load_compose(*(REPO / name for name in files), env={"LLMQFL_DATA_DIR": DATA_DIR})


def test_variables_and_overlays_follow_compose_rules() -> None:
    assert substitute("${A:-x}/${B:-y}/${C}/$$", {"A": "1", "B": ""}) == "1/y//$"
    services = compose_config("docker-compose.yml", "with-tls.yml")["services"]
    # The overlay replaced the SuperLink's command but kept its image and added a volume.
    superlink = services["superlink"]
    assert "--insecure" not in _flags(superlink) and superlink.get("image")
    assert any("certs" in v for v in _volumes(services, "superlink"))


def _flags(service: dict[str, Any]) -> str:
    command = service.get("command", [])
    return " ".join(command) if isinstance(command, list) else str(command)


def test_plain_compose_validates_and_wires_every_node() -> None:
    services = compose_config("docker-compose.yml")["services"]
    expected = {"superlink", "superexec-serverapp"}
    expected |= {f"supernode-{i}" for i in range(1, NODES + 1)}
    expected |= {f"superexec-clientapp-{i}" for i in range(1, NODES + 1)}
    assert set(services) == expected

    superlink = _flags(services["superlink"])
    assert "--isolation=process" in superlink
    assert "--disable-runtime-dependency-installation" in superlink
    assert "--port=8000" in superlink and "--database=" in superlink
    assert services["superlink"]["image"] == "flwr/superlink:1.42.0"
    assert "superlink:8000" in _flags(services["superexec-serverapp"])
    assert any(v.startswith("results:/results") for v in _volumes(services, "superexec-serverapp"))

    partitions = []
    for i in range(1, NODES + 1):
        node = services[f"supernode-{i}"]
        flags = _flags(node)
        assert node["image"] == "flwr/supernode:1.42.0"
        assert "--superlink=superlink:8000" in flags and "--isolation=process" in flags
        found = re.search(r"--node-config=partition-id=(\d+) num-partitions=(\d+)", flags)
        assert found, flags
        partitions.append(int(found[1]))
        assert int(found[2]) == NODES
        executor = services[f"superexec-clientapp-{i}"]
        assert f"supernode-{i}:9094" in _flags(executor)
        volumes = _volumes(services, f"superexec-clientapp-{i}")
        assert any(v.startswith(f"cache-{i}:/cache") for v in volumes)
        assert f"{DATA_DIR}:/data:ro" in volumes
    assert sorted(partitions) == list(range(NODES))


def test_tls_overlay_leaves_no_insecure_channel_and_authenticates_nodes() -> None:
    services = compose_config("docker-compose.yml", "with-tls.yml")["services"]
    for name, service in services.items():
        assert "--insecure" not in _flags(service), name
    superlink = _flags(services["superlink"])
    for flag in (
        "--ssl-ca-certfile=",
        "--ssl-certfile=",
        "--ssl-keyfile=",
        "--enable-supernode-auth",
    ):
        assert flag in superlink
    for i in range(1, NODES + 1):
        node = _flags(services[f"supernode-{i}"])
        assert f"--auth-supernode-private-key=keys/supernode-{i}" in node
        assert "--root-certificates=certs/ca.crt" in node
        assert "--ssl-certfile=certs/server.pem" in node  # its Runtime API is TLS too
        assert f"partition-id={i - 1} num-partitions={NODES}" in node
        assert "--root-certificates" in _flags(services[f"superexec-clientapp-{i}"])
    assert "--root-certificates" in _flags(services["superexec-serverapp"])


def test_dockerfile_installs_the_pinned_app() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    torch_pin = next(d for d in project["project"]["dependencies"] if d.startswith("torch=="))
    assert f"ARG TORCH_VERSION={torch_pin.split('==')[1]}" in dockerfile
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in dockerfile
    for package in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        folder = package.rstrip("*")
        assert f"COPY {folder}/ {folder}/" in dockerfile, folder
    assert 'ENTRYPOINT ["flower-superexec"]' in dockerfile


def test_certs_script_makes_a_chain_the_tls_overlay_can_use(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(REPO / "deploy" / "certs.sh"), "--out", str(tmp_path), "--supernodes", "2"],
        check=True,
        capture_output=True,
    )
    certs = tmp_path / "certs"
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", certs / "ca.crt", certs / "server.pem"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr
    names = subprocess.run(
        ["openssl", "x509", "-in", certs / "server.pem", "-noout", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in ("DNS:superlink", "DNS:supernode-1", "DNS:supernode-2", "IP Address:127.0.0.1"):
        assert name in names
    for i in (1, 2):
        assert (
            (tmp_path / "keys" / f"supernode-{i}.pub")
            .read_text()
            .startswith("ecdsa-sha2-nistp384 ")
        )
    assert (certs / "ca.key").stat().st_mode & 0o077 == 0  # the CA key stays private


def _volumes(services: dict[str, Any], name: str) -> list[str]:
    out = []
    for volume in services[name].get("volumes", []):
        if isinstance(volume, dict):  # long syntax in newer compose versions
            mode = ":ro" if volume.get("read_only") else ""
            out.append(f"{volume['source']}:{volume['target']}{mode}")
        else:
            out.append(str(volume))
    return out
