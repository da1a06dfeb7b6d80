"""Helpers for the network tests: a private network environment and a tiny HTTP probe."""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from flatstack.network import rules
from flatstack.network.attach import Networks
from flatstack.network.config import NetworkStore


@dataclass
class NetEnv:
    """A private state dir, run dir, bridge and subnet (never podman's 10.88/podman0)."""

    networks: Networks
    bridge: str
    subnet: str
    ipam_dir: Path
    ids: list[str] = field(default_factory=list)

    def new_id(self) -> str:
        cid = f"n{uuid.uuid4().hex[:10]}"
        self.ids.append(cid)
        return cid


def make_env(tmp: Path) -> NetEnv:
    bridge = f"fst{uuid.uuid4().hex[:8]}"
    subnet = f"10.89.{random.randint(100, 250)}.0/24"
    store = NetworkStore(str(tmp / "state"), default_subnet=subnet, default_bridge=bridge)
    return NetEnv(Networks(run_dir=str(tmp / "run"), store=store), bridge, subnet,
                  Path(store.ipam_dir))


def drop_env(env: NetEnv) -> None:
    for cid in env.networks.attached():
        env.networks.detach(cid)
    for net in env.networks.store.list():
        rules.remove_bridge(net.bridge)


def iptables_rules() -> list[str]:
    """Every iptables rule and chain (filter and nat), without counters or timestamps."""
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return sorted(re.sub(r"\[\d+:\d+\]", "", line) for line in out.splitlines()
                  if line and not line.startswith("#"))


def links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                         check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def http_get(host: str, port: int, path: str = "/", timeout: float = 5.0) -> str:
    """GET over a plain socket, retrying until the server answers or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1) as sock:
                sock.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
                chunks = []
                while data := sock.recv(4096):
                    chunks.append(data)
                return b"".join(chunks).decode(errors="replace")
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def serve_in_netns(netns_path: str, www: Path, port: int = 80) -> subprocess.Popen[bytes]:
    """busybox httpd in the namespace, like a container process that joined it."""
    return subprocess.Popen(["nsenter", f"--net={netns_path}", "busybox", "httpd", "-f",
                             "-p", str(port), "-h", str(www)], stdin=subprocess.DEVNULL)


def ns_run(netns_path: str, *args: str) -> str:
    return subprocess.run(["nsenter", f"--net={netns_path}", *args], capture_output=True,
                          text=True, check=True).stdout


def ipam_allocations(env: NetEnv, network: str = "flatstack") -> list[str]:
    """IP files host-local holds for the network (one per allocated address)."""
    directory = env.ipam_dir / network
    if not directory.is_dir():
        return []
    return sorted(n for n in os.listdir(directory) if re.match(r"^\d+\.\d+\.\d+\.\d+$", n))


def release(env: NetEnv) -> None:
    from flatstack.network import netns

    drop_env(env)
    assert netns.release_dir(env.networks.run_dir)
    leaked = [r for r in iptables_rules() for cid in env.ids if f'id: \\"{cid}\\"' in r]
    assert leaked == [], "iptables rules left behind"


@pytest.fixture(name="env")
def net_env_fixture(tmp_path: Path) -> Iterator[NetEnv]:
    """A private network environment, released (and checked for leaks) afterwards."""
    made = make_env(tmp_path / "net")
    yield made
    release(made)
