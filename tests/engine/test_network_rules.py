"""A network's own host rules: masquerade and FORWARD accept, once per network, for real.

A container in a bridge network talks to an "upstream" host (a namespace behind a veth
pair of its own): the upstream sees the host's address (masquerade), and the connection
still passes with the host's FORWARD policy at DROP (forward accept). The same network
without the rules shows the difference: the container's own address, and a dropped
connection.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flatstack.network import netns, rules
from flatstack.network.attach import Networks
from tests.engine._network_support import (  # noqa: F401 - fixtures
    NetEnv,
    iptables_rules,
    net_env_fixture,
    ns_run,
)

UPSTREAM_NET = "172.31.251"
PEER_SERVER = """
import socket, sys
srv = socket.create_server(("0.0.0.0", 8099))
print("ready", flush=True)
srv.settimeout(20)
while True:
    conn, peer = srv.accept()
    conn.sendall(peer[0].encode())
    conn.close()
"""
ASK_PEER = """
import socket, sys
with socket.create_connection((sys.argv[1], 8099), timeout=2) as s:
    print(s.recv(64).decode())
"""


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[str]:
    """A namespace at UPSTREAM_NET.2 behind a veth from the host (UPSTREAM_NET.1)."""
    name = f"up{uuid.uuid4().hex[:8]}"
    path = netns.create(name, str(tmp_path / "uprun"))
    host_if, peer_if = f"vu{name[2:10]}", f"vp{name[2:10]}"
    subprocess.run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if],
                   check=True)
    server = None
    try:
        subprocess.run(["ip", "link", "set", peer_if, "netns", path], check=True)
        subprocess.run(["ip", "addr", "add", f"{UPSTREAM_NET}.1/30", "dev", host_if], check=True)
        subprocess.run(["ip", "link", "set", host_if, "up"], check=True)
        ns_run(path, "ip", "addr", "add", f"{UPSTREAM_NET}.2/30", "dev", peer_if)
        ns_run(path, "ip", "link", "set", peer_if, "up")
        server = subprocess.Popen(["nsenter", f"--net={path}", "python3", "-c", PEER_SERVER],
                                  stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        yield path
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, check=False)
        netns.delete(name, str(tmp_path / "uprun"))
        netns.release_dir(str(tmp_path / "uprun"))


def _peer_seen_upstream(netns_path: str) -> str:
    """Connect from the container's namespace; the address the upstream saw, or the error."""
    done = subprocess.run(["nsenter", f"--net={netns_path}", "python3", "-c", ASK_PEER,
                           f"{UPSTREAM_NET}.2"], capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else "failed: " + done.stderr[-200:]


@pytest.fixture
def forward_drop() -> Iterator[None]:
    """The host's FORWARD policy at DROP (a firewalled host), restored afterwards."""
    listing = subprocess.run(["iptables", "-w", "-S", "FORWARD"], capture_output=True,
                             text=True, check=True).stdout.splitlines()
    policy = listing[0].split()[-1] if listing and listing[0].startswith("-P") else "ACCEPT"
    subprocess.run(["iptables", "-w", "-P", "FORWARD", "DROP"], check=True)
    try:
        yield
    finally:
        subprocess.run(["iptables", "-w", "-P", "FORWARD", policy], check=True)


def _hook_count(table: str, chain: str, target: str) -> int:
    out = subprocess.run(["iptables", "-w", "-t", table, "-S", chain], capture_output=True,
                         text=True, check=True).stdout
    return out.split().count(target)


def test_rules_are_per_network_and_never_per_container(env: NetEnv) -> None:
    nat, fwd = rules.chains(env.bridge)
    first, second = env.new_id(), env.new_id()
    a = env.networks.attach(first, "bridge")
    b = env.networks.attach(second, "bridge", ports=["18991:80"])
    try:
        listing = "\n".join(iptables_rules())
        assert f"-A {nat} -s {env.subnet} ! -o {env.bridge}" in listing
        assert "-j MASQUERADE" in listing.split(f"-A {nat} ", 1)[1].splitlines()[0]
        assert f"-A {fwd} -i {env.bridge}" in listing
        assert f"-A {fwd} -o {env.bridge} -m conntrack --ctstate RELATED,ESTABLISHED" in listing
        assert f"-A {fwd} -o {env.bridge} -m conntrack --ctstate DNAT" in listing
        # Hooked once however many containers attach, and again after a "restart".
        Networks(run_dir=env.networks.run_dir, store=env.networks.store).attach(
            env.new_id(), "bridge")
        assert _hook_count("nat", "POSTROUTING", nat) == 1
        assert _hook_count("filter", "FORWARD", fwd) == 1
        # No container has a chain of its own: no CNI-<hash> masquerade or firewall rules.
        assert not any(a.ip in r or b.ip in r for r in iptables_rules()
                       if "--dport 18991" not in r and "DNAT" not in r)
    finally:
        for cid in env.networks.attached():
            env.networks.detach(cid)
    # Detaching the last container keeps the network's rules; removing the network drops
    # them and its bridge.
    assert _hook_count("nat", "POSTROUTING", nat) == 1
    env.networks.store.create("extra", "10.89.251.0/24", bridge=f"{env.bridge}x")
    extra = env.new_id()
    env.networks.detach(env.networks.attach(extra, network="extra").container_id)
    assert _hook_count("filter", "FORWARD", rules.chains(f"{env.bridge}x")[1]) == 1
    env.networks.remove_network("extra")
    assert not any(f"{env.bridge}x" in r for r in iptables_rules())
    assert subprocess.run(["ip", "link", "show", f"{env.bridge}x"], capture_output=True,
                          check=False).returncode != 0


def test_outbound_traffic_is_masqueraded_and_forwarded_past_a_drop_policy(
        env: NetEnv, upstream: str, forward_drop: None) -> None:
    cid = env.new_id()
    info = env.networks.attach(cid, "bridge")
    try:
        # The upstream host sees the host's own address, not the container's.
        assert _peer_seen_upstream(info.netns_path) == f"{UPSTREAM_NET}.1"
    finally:
        env.networks.detach(cid)


def test_without_the_rules_the_container_is_exposed_and_dropped(
        env: NetEnv, upstream: str, forward_drop: None) -> None:
    store = env.networks.store
    store.create("bare", "10.89.252.0/24", bridge=f"{env.bridge}n", ip_masq=False,
                 firewall=False)
    # The upstream can route replies to the subnet directly: only the rules differ.
    ns_run(upstream, "ip", "route", "add", "10.89.252.0/24", "via", f"{UPSTREAM_NET}.1")
    cid = env.new_id()
    info = env.networks.attach(cid, network="bare")
    try:
        assert _peer_seen_upstream(info.netns_path).startswith("failed")  # FORWARD DROP
        subprocess.run(["iptables", "-w", "-P", "FORWARD", "ACCEPT"], check=True)
        assert _peer_seen_upstream(info.netns_path) == info.ip  # not masqueraded
    finally:
        env.networks.detach(cid)
        env.networks.remove_network("bare")
