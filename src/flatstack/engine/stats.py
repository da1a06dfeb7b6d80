"""Container resource counters for ``flatstack stats``, read from cgroup files.

``collect`` returns one sample (a JSON-ready dict)::

    time_ns            monotonic clock when sampled (for cpu_percent)
    cpu_ns             CPU time used, all processes (v1 cpuacct.usage; v2 cpu.stat usage_usec)
    memory_bytes       usage without the inactive page cache, as docker computes it
                       (v1 memory.usage_in_bytes - total_inactive_file;
                       v2 memory.current - inactive_file)
    memory_limit       the cgroup's limit, or the host's memory when unlimited
    memory_percent     memory_bytes / memory_limit * 100
    pids               pids.current (the cgroup's task count without a pids controller)
    block_read_bytes, block_write_bytes
                       v1 blkio.throttle.io_service_bytes(_recursive) Read/Write,
                       v2 io.stat rbytes/wbytes, summed over devices
    net_rx_bytes, net_tx_bytes
                       every interface but lo in the container's network namespace,
                       from /proc/<init>/net/dev (no setns, no fork); None when the
                       container shares the host's network namespace

``cpu_percent(a, b)`` is the CPU use between two samples, 100 = one full core
(docker's and podman's scale).  Only files are read, so it is safe to call from
the threaded API daemon.
"""

from __future__ import annotations

import os
import time
from typing import Any

from flatstack.errors import FlatstackError

UNLIMITED_V1 = 1 << 62  # v1 reports "no limit" as a page-rounded 2^63 - 1


def collect(runtime_root: str, container_id: str,
            netns_path: str | None = None) -> dict[str, Any]:
    """One sample of a container's counters (see the module docstring)."""
    from flatstack.runtime.state import Container

    container = Container.load(runtime_root, container_id)
    cgroup = container.data.get("cgroup")
    if cgroup and cgroup.get("kind") == "v2":
        counters = v2_counters(cgroup.get("dir") or "")
    elif cgroup:
        paths = cgroup.get("paths") or {}
        counters = v1_counters({name: paths[key] for name, key in
                                (cgroup.get("controllers") or {}).items() if key in paths})
    else:
        counters = v1_counters({})
    pid = int(container.data.get("pid") or 0)
    rx_tx = net_counters(pid, netns_path)
    host_mem = host_memory()
    limit = counters["memory_limit"]
    if not limit or limit >= min(host_mem, UNLIMITED_V1):
        limit = host_mem
    return {
        "id": container_id,
        "time_ns": time.monotonic_ns(),
        "cpu_ns": counters["cpu_ns"],
        "memory_bytes": counters["memory_bytes"],
        "memory_limit": limit,
        "memory_percent": round(100.0 * counters["memory_bytes"] / limit, 2) if limit else 0.0,
        "pids": counters["pids"],
        "block_read_bytes": counters["block_read_bytes"],
        "block_write_bytes": counters["block_write_bytes"],
        "net_rx_bytes": rx_tx[0] if rx_tx else None,
        "net_tx_bytes": rx_tx[1] if rx_tx else None,
    }


def cpu_percent(a: dict[str, Any], b: dict[str, Any]) -> float:
    """CPU use between samples ``a`` and ``b`` (b later), 100.0 = one core."""
    wall = b["time_ns"] - a["time_ns"]
    used = b["cpu_ns"] - a["cpu_ns"]
    if wall <= 0 or used < 0:
        return 0.0
    return round(100.0 * used / wall, 2)


def v1_counters(dirs: dict[str, str]) -> dict[str, int]:
    """Counters from cgroup v1 directories, keyed by controller (``cpuacct``, ...)."""
    out = {"cpu_ns": 0, "memory_bytes": 0, "memory_limit": 0, "pids": 0,
           "block_read_bytes": 0, "block_write_bytes": 0}
    if "cpuacct" in dirs:
        out["cpu_ns"] = _int(dirs["cpuacct"], "cpuacct.usage")
    if "memory" in dirs:
        mem = dirs["memory"]
        usage = _int(mem, "memory.usage_in_bytes")
        inactive = _keyed(mem, "memory.stat").get("total_inactive_file", 0)
        out["memory_bytes"] = usage - inactive if inactive < usage else usage
        out["memory_limit"] = _int(mem, "memory.limit_in_bytes")
    if "pids" in dirs:
        out["pids"] = _int(dirs["pids"], "pids.current")
    else:
        out["pids"] = _task_count(next(iter(dirs.values()), ""))
    if "blkio" in dirs:
        blkio = dirs["blkio"]
        name = "blkio.throttle.io_service_bytes_recursive"
        if not os.path.exists(os.path.join(blkio, name)):
            name = "blkio.throttle.io_service_bytes"
        for line in _read(blkio, name).splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in ("Read", "Write"):
                key = "block_read_bytes" if parts[1] == "Read" else "block_write_bytes"
                out[key] += int(parts[2])
    return out


def v2_counters(directory: str) -> dict[str, int]:
    """Counters from a cgroup v2 directory."""
    out = {"cpu_ns": 0, "memory_bytes": 0, "memory_limit": 0, "pids": 0,
           "block_read_bytes": 0, "block_write_bytes": 0}
    if not directory or not os.path.isdir(directory):
        return out
    out["cpu_ns"] = _keyed(directory, "cpu.stat").get("usage_usec", 0) * 1000
    usage = _int(directory, "memory.current")
    inactive = _keyed(directory, "memory.stat").get("inactive_file", 0)
    out["memory_bytes"] = usage - inactive if inactive < usage else usage
    out["memory_limit"] = _int(directory, "memory.max")
    if os.path.exists(os.path.join(directory, "pids.current")):
        out["pids"] = _int(directory, "pids.current")
    else:
        out["pids"] = _task_count(directory)
    for line in _read(directory, "io.stat").splitlines():
        for item in line.split()[1:]:
            key, _, value = item.partition("=")
            if key in ("rbytes", "wbytes") and value.isdigit():
                out["block_read_bytes" if key == "rbytes" else "block_write_bytes"] += int(value)
    return out


def net_counters(pid: int, netns_path: str | None = None) -> tuple[int, int] | None:
    """(rx, tx) bytes over the interfaces but lo of the init's network namespace.

    None when it is the caller's (the host's) namespace.  ``netns_path`` is read instead (through
    ``nsenter``, a short-lived program) only when the init is gone."""
    text = ""
    if pid > 0:
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino:
                return None
            with open(f"/proc/{pid}/net/dev") as f:
                text = f.read()
        except OSError:
            text = ""
    if not text and netns_path:
        import subprocess

        proc = subprocess.run(["nsenter", f"--net={netns_path}", "cat", "/proc/net/dev"],
                              capture_output=True, text=True, check=False)
        text = proc.stdout if proc.returncode == 0 else ""
    if not text:
        return (0, 0)
    return parse_net_dev(text)


def parse_net_dev(text: str) -> tuple[int, int]:
    """Sum rx/tx bytes of /proc/net/dev, without lo."""
    rx = tx = 0
    for line in text.splitlines()[2:]:
        name, _, fields = line.partition(":")
        values = fields.split()
        if name.strip() == "lo" or len(values) < 9:
            continue
        rx += int(values[0])
        tx += int(values[8])
    return rx, tx


def host_memory() -> int:
    """MemTotal of the host, in bytes."""
    for line in _read("/proc", "meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise FlatstackError("cannot read MemTotal from /proc/meminfo")


def _read(directory: str, name: str) -> str:
    try:
        with open(os.path.join(directory, name)) as f:
            return f.read()
    except OSError:
        return ""


def _int(directory: str, name: str) -> int:
    text = _read(directory, name).strip()
    return int(text) if text.isdigit() else 0


def _keyed(directory: str, name: str) -> dict[str, int]:
    out = {}
    for line in _read(directory, name).splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def _task_count(directory: str) -> int:
    return len(_read(directory, "cgroup.procs").split()) if directory else 0
