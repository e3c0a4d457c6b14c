"""The compose test's "machine left as found" check can see a change, whatever the start.

It runs in a network namespace of its own: a fresh one has no firewall tables,
so ``iptables-save`` prints nothing there, as on a fresh machine. No Docker.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator

import pytest

from harness.docker_run import IPTABLES, ensure_packages, firewall_rules, iptables_save

pytestmark = pytest.mark.netns


@pytest.fixture()
def namespace() -> Iterator[str]:
    """A fresh network namespace, with iptables installed on the host if it was missing."""
    ensure_packages({IPTABLES: "iptables"})
    name = f"lqfw{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def _in(netns: str, *args: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns, *args], check=True, capture_output=True)


def test_the_snapshot_is_never_empty_and_reading_it_changes_nothing(namespace: str) -> None:
    assert iptables_save(namespace) == ""  # what the old check read, and failed on
    before = firewall_rules(namespace)
    for tool in ("iptables", "ip6tables"):
        for chain in ("INPUT", "FORWARD", "OUTPUT"):
            assert f"{tool} filter: -P {chain} ACCEPT" in before
        assert f"{tool} nat: -P POSTROUTING ACCEPT" in before
    assert firewall_rules(namespace) == before
    assert iptables_save(namespace) == ""  # listing made no table


@pytest.mark.parametrize(
    "change",
    [
        ("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "9", "-j", "DROP"),
        ("iptables", "-P", "FORWARD", "DROP"),
        ("iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.9.0.0/24", "-j", "MASQUERADE"),
        ("ip6tables", "-N", "LLMQFL-TEST"),
    ],
    ids=["rule", "policy", "nat-rule", "ipv6-chain"],
)
def test_a_change_between_two_snapshots_fails_the_comparison(
    namespace: str, change: tuple[str, ...]
) -> None:
    before = firewall_rules(namespace)
    _in(namespace, *change)
    after = firewall_rules(namespace)
    assert after != before
    added = set(after.splitlines()) - set(before.splitlines())
    assert added and all(line.startswith(f"{change[0]} ") for line in added), added
