"""Container stats from cgroup counters (v1 here) and the container's network namespace.

This machine has no pure cgroup v2 hierarchy for containers (the cgroup2 mount holds
only hugetlb), so the v2 reader is checked on a directory of files in the kernel's
format instead of a live cgroup.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from flatstack.engine.stats import collect, cpu_percent, parse_net_dev, v2_counters
from flatstack.errors import FlatstackError
from tests.engine.test_supervisor import (  # noqa: F401 - fixtures
    Node,
    UniqueBundles,
    supervisor_node_fixture,
    unique_bundles_fixture,
)

MiB = 1 << 20


def _limits(memory: int) -> Any:
    def edit(config: dict[str, Any]) -> None:
        config["linux"]["resources"]["memory"] = {"limit": memory, "swap": memory}
        config["linux"]["resources"]["pids"] = {"limit": 64}

    return edit


def test_cpu_memory_and_pids_of_a_busy_container(node: Node, make_bundle: UniqueBundles) -> None:
    node.spawn()
    # The shell holds a 48 MiB string (anonymous memory) and then spins.
    script = "x=$(head -c 50331648 /dev/zero | tr '\\0' a); sleep 30 & while :; do :; done"
    node.start("hog", make_bundle(["sh", "-c", script], edit=_limits(256 * MiB)))
    deadline = time.monotonic() + 20
    first = collect(node.runtime_root, "hog")
    while first["memory_bytes"] < 48 * MiB and time.monotonic() < deadline:
        time.sleep(0.1)
        first = collect(node.runtime_root, "hog")
    time.sleep(1.0)
    second = collect(node.runtime_root, "hog")
    assert second["memory_bytes"] >= 48 * MiB, second
    assert second["memory_limit"] == 256 * MiB
    assert second["memory_percent"] == pytest.approx(100 * second["memory_bytes"] / (256 * MiB),
                                                     abs=0.01)
    assert second["pids"] == 2, "the shell and its sleep"
    assert second["cpu_ns"] > first["cpu_ns"]
    busy = cpu_percent(first, second)
    assert 30 < busy < 110, f"one spinning shell on a shared 2-core machine: {busy}%"
    assert second["net_rx_bytes"] == 0 and second["net_tx_bytes"] == 0, "only lo in its netns"


def test_block_io_is_counted(node: Node, make_bundle: UniqueBundles, tmp_path: Path) -> None:
    node.spawn()
    data = tmp_path / "data"  # on the host's disk, not tmpfs: direct I/O reaches the device
    data.mkdir()

    def edit(config: dict[str, Any]) -> None:
        config["mounts"].append({"destination": "/data", "type": "bind",
                                 "source": str(data), "options": ["rbind", "rw"]})
        # v1 blkio.throttle counters count only once throttling is active on the
        # device's queue (kernel 6.x): a limit far above the disk's speed turns it on.
        dev = os.stat(data).st_dev
        rule = [{"major": os.major(dev), "minor": os.minor(dev), "rate": 1 << 40}]
        config["linux"]["resources"]["blockIO"] = {"throttleReadBpsDevice": rule,
                                                   "throttleWriteBpsDevice": rule}

    node.start("io", make_bundle(["sh", "-c", "dd if=/dev/zero of=/data/f bs=1M count=8 "
                                  "oflag=direct 2>/dev/null; dd if=/data/f of=/dev/null bs=1M "
                                  "iflag=direct 2>/dev/null; sleep 30"], edit=edit))
    deadline = time.monotonic() + 20
    sample = collect(node.runtime_root, "io")
    while sample["block_read_bytes"] < 8 * MiB and time.monotonic() < deadline:
        time.sleep(0.1)
        sample = collect(node.runtime_root, "io")
    assert sample["block_write_bytes"] >= 8 * MiB
    assert sample["block_read_bytes"] >= 8 * MiB


def test_network_counters_from_the_container_netns(node: Node, make_bundle: UniqueBundles) -> None:
    node.spawn()
    pid = node.start("net", make_bundle(["sleep", "30"]))["pid"]
    host, inside = f"fsh{uuid.uuid4().hex[:8]}", f"fsc{uuid.uuid4().hex[:8]}"
    octet = 100 + os.getpid() % 100

    def ip(*args: str, netns: bool = False) -> None:
        prefix = ["nsenter", "-t", str(pid), "-n"] if netns else []
        subprocess.run([*prefix, "ip", *args], check=True, capture_output=True)

    ip("link", "add", host, "type", "veth", "peer", "name", inside)
    try:
        ip("link", "set", inside, "netns", str(pid))
        ip("addr", "add", f"10.213.{octet}.1/30", "dev", host)
        ip("link", "set", host, "up")
        ip("addr", "add", f"10.213.{octet}.2/30", "dev", inside, netns=True)
        ip("link", "set", inside, "up", netns=True)
        before = collect(node.runtime_root, "net")
        subprocess.run(["busybox", "ping", "-c", "5", "-A", "-s", "1000", "-W", "2",
                        f"10.213.{octet}.2"], check=True, capture_output=True)
        after = collect(node.runtime_root, "net")
    finally:
        subprocess.run(["ip", "link", "del", host], check=False, capture_output=True)
    assert after["net_rx_bytes"] - before["net_rx_bytes"] >= 5 * 1000
    assert after["net_tx_bytes"] - before["net_tx_bytes"] >= 5 * 1000


def test_stats_of_a_missing_container(node: Node) -> None:
    with pytest.raises(FlatstackError, match="ghost"):
        collect(node.runtime_root, "ghost")


def test_v2_reader_on_kernel_format_files(tmp_path: Path) -> None:
    files = {
        "cpu.stat": "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n"
                    "nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n",
        "memory.current": "104857600\n",
        "memory.max": "max\n",
        "memory.stat": "anon 73400320\nfile 31457280\nkernel 0\nactive_anon 73400320\n"
                       "inactive_anon 0\nactive_file 10485760\ninactive_file 20971520\n",
        "pids.current": "7\n",
        "io.stat": "8:0 rbytes=1048576 wbytes=4194304 rios=16 wios=64 dbytes=0 dios=0\n"
                   "253:1 rbytes=512 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert v2_counters(str(tmp_path)) == {
        "cpu_ns": 2_500_000_000, "memory_bytes": 104857600 - 20971520, "memory_limit": 0,
        "pids": 7, "block_read_bytes": 1048576 + 512, "block_write_bytes": 4194304}
    (tmp_path / "memory.max").write_text("268435456\n")
    assert v2_counters(str(tmp_path))["memory_limit"] == 268435456


def test_cpu_percent_and_net_dev_parsing() -> None:
    a = {"time_ns": 1_000_000_000, "cpu_ns": 0}
    b = {"time_ns": 3_000_000_000, "cpu_ns": 3_000_000_000}
    assert cpu_percent(a, b) == 150.0
    assert cpu_percent(b, a) == 0.0
    text = ("Inter-|   Receive                            |  Transmit\n"
            " face |bytes    packets errs drop fifo frame compressed multicast|bytes ...\n"
            "    lo:    1000      10    0    0    0     0          0         0     1000"
            "      10    0    0    0     0       0          0\n"
            "  eth0:    5000      40    0    0    0     0          0         0     7000"
            "      50    0    0    0     0       0          0\n")
    assert parse_net_dev(text) == (5000, 7000)
