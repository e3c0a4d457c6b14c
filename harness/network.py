"""This machine's network as the deployment harness sees it: free ports and subnets, health.

Nothing about the host is assumed: a port is one nothing listens on now
(:func:`free_port`), a subnet a /24 that no route or address here covers
(:func:`free_subnet`), and network namespaces are used only where this
process may make them (:func:`namespaces_problem`).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

SUBNET = "10.231.{}.0/24"  # a private /24 per cluster, the first that is free here


def healthy(url: str, cafile: Path | None = None, timeout: float = 5.0) -> bool:
    """Whether ``url`` (a SuperLink's ``/health``) answers 2xx; HTTPS is verified by ``cafile``.

    Python's own HTTP client, so that no ``curl`` is needed on the host.
    """
    context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as answer:
            return 200 <= int(answer.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def free_port(host: str = "") -> int:
    """A TCP port that nothing listens on now (on ``host``; every address by default)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def used_networks() -> list[ipaddress.IPv4Network]:
    """The IPv4 networks of this machine's routes and addresses (``ip -4 route``/``addr``)."""
    found: list[ipaddress.IPv4Network] = []
    for args in (["route", "show", "table", "all"], ["-o", "addr"]):
        out = subprocess.run(["ip", "-4", *args], capture_output=True, text=True).stdout
        for word in out.split():
            try:
                network = ipaddress.ip_network(word, strict=False)
            except ValueError:
                continue
            if isinstance(network, ipaddress.IPv4Network) and network.prefixlen > 0:
                found.append(network)
    return found


def free_subnet(pattern: str = SUBNET, start: int = 1) -> ipaddress.IPv4Network:
    """The first ``pattern.format(k)`` /24 (k = start .. 254, then from 1) that overlaps no
    route or address of this machine."""
    used = used_networks()
    for k in [*range(start, 255), *range(1, start)]:
        subnet = ipaddress.IPv4Network(pattern.format(k))
        if not any(subnet.overlaps(network) for network in used):
            return subnet
    raise RuntimeError(f"every /24 of {pattern.format('k')} is in use on this machine")


def namespaces_problem() -> str | None:
    """Why this process cannot make network namespaces (root and ``ip netns``), or None."""
    if os.geteuid() != 0:
        return "needs root to make network namespaces (ip netns add)"
    if shutil.which("ip") is None:
        return "needs the ip command (Debian's iproute2)"
    name = f"lqprobe{secrets.token_hex(2)}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    return None


def ip_command(*args: str, netns: str | None = None) -> None:
    """Run ``ip ARGS`` (in network namespace ``netns`` when given); raise if it fails."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    subprocess.run([*prefix, "ip", *args], check=True, capture_output=True)
