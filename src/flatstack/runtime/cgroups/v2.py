"""cgroup v2 (the unified hierarchy)."""

from __future__ import annotations

import os

from flatstack.errors import CgroupError
from flatstack.runtime.cgroups.base import (
    CgroupManager,
    mkdir_p,
    parse_memory_stat,
    read_file,
    read_int,
    read_pids,
    remove_tree,
    wait_until,
    write_file,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

R = "linux.resources"


def shares_to_weight(shares: int) -> int:
    """cpu.shares (2..262144) to cpu.weight (1..10000), as runc converts."""
    if shares == 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_weight_to_io(weight: int) -> int:
    """blkio.weight (10..1000) to io.weight (1..10000)."""
    return 1 + (weight - 10) * 9999 // 990


class V2Manager(CgroupManager):
    """A single directory in the unified hierarchy."""

    def __init__(self, root: str, path: str, created: list[str] | None = None) -> None:
        self.root = root
        self.path = path
        self.dir = os.path.join(root, path.lstrip("/"))
        self.paths = {"": self.dir}
        self.created = created or []

    def writable(self) -> bool:
        probe = self.dir
        while not os.path.isdir(probe):
            probe = os.path.dirname(probe)
        return os.access(probe, os.W_OK)

    def create(self) -> None:
        mkdir_p(self.dir, self.created)
        self._enable_controllers()

    def _enable_controllers(self) -> None:
        """Enable every available controller from the root down to our parent."""
        available = read_file(self.root, "cgroup.controllers").split()
        rel = self.dir[len(self.root):].strip("/").split("/")
        current = self.root
        for part in rel:
            enabled = set(read_file(current, "cgroup.subtree_control").split())
            wanted = [c for c in available if c not in enabled]
            if wanted:
                try:
                    write_file(current, "cgroup.subtree_control",
                               " ".join(f"+{c}" for c in wanted), "linux.cgroupsPath")
                except CgroupError:
                    for c in wanted:  # one at a time: some may be refused (threaded, busy)
                        try:
                            write_file(current, "cgroup.subtree_control", f"+{c}",
                                       "linux.cgroupsPath")
                        except CgroupError:
                            pass
            available = read_file(current, "cgroup.subtree_control").split()
            current = os.path.join(current, part)

    def add_pid(self, pid: int) -> None:
        write_file(self.dir, "cgroup.procs", pid, "cgroup")

    def pids(self) -> list[int]:
        result = []
        for dirpath, _dirs, _files in os.walk(self.dir):
            result.extend(read_pids(dirpath))
        return result

    def exists(self) -> bool:
        return os.path.isdir(self.dir)

    def freeze(self) -> None:
        write_file(self.dir, "cgroup.freeze", 1, "pause")
        if not wait_until(self.is_frozen, 5):
            write_file(self.dir, "cgroup.freeze", 0, "pause")
            raise CgroupError(f"pause: {self.dir} did not freeze in time")

    def thaw(self) -> None:
        write_file(self.dir, "cgroup.freeze", 0, "resume")
        wait_until(lambda: not self.is_frozen(), 5)

    def is_frozen(self) -> bool:
        for line in read_file(self.dir, "cgroup.events").splitlines():
            if line.startswith("frozen "):
                return line.split()[1] == "1"
        return False

    def kill_all(self, signal: int) -> None:
        if signal == 9 and os.path.exists(os.path.join(self.dir, "cgroup.kill")):
            write_file(self.dir, "cgroup.kill", 1, "kill")
            return
        self.freeze()
        try:
            for pid in self.pids():
                try:
                    os.kill(pid, signal)
                except ProcessLookupError:
                    pass
        finally:
            self.thaw()

    def destroy(self) -> None:
        if self.exists() and self.pids():
            try:
                self.kill_all(9)
            except CgroupError:
                pass
        remove_tree({self.dir}, self.created)

    def update(self, resources: dict[str, Any]) -> None:
        self.apply(resources)

    def apply(self, resources: dict[str, Any]) -> None:
        if not resources:
            return
        d = self.dir
        mem = resources.get("memory") or {}
        limit, swap = mem.get("limit"), mem.get("swap")
        if limit is not None and limit != 0:
            write_file(d, "memory.max", "max" if limit == -1 else limit, f"{R}.memory.limit")
        if swap is not None and swap != 0:
            if swap == -1:
                value: Any = "max"
            elif limit is not None and limit > 0:
                if swap < limit:
                    raise CgroupError(f"{R}.memory.swap: must be at least the memory limit")
                value = swap - limit
            else:
                value = swap
            write_file(d, "memory.swap.max", value, f"{R}.memory.swap")
        if mem.get("reservation") is not None:
            write_file(d, "memory.low", mem["reservation"], f"{R}.memory.reservation")
        if mem.get("disableOOMKiller"):
            raise CgroupError(f"{R}.memory.disableOOMKiller: not available on cgroup v2")
        cpu = resources.get("cpu") or {}
        if cpu.get("shares"):
            write_file(d, "cpu.weight", shares_to_weight(cpu["shares"]), f"{R}.cpu.shares")
        if cpu.get("quota") is not None or cpu.get("period"):
            quota = cpu.get("quota")
            period = cpu.get("period") or 100000
            text = "max" if quota is None or quota <= 0 else str(quota)
            write_file(d, "cpu.max", f"{text} {period}", f"{R}.cpu.quota")
        if cpu.get("burst") is not None:
            write_file(d, "cpu.max.burst", cpu["burst"], f"{R}.cpu.burst")
        if cpu.get("idle") is not None:
            write_file(d, "cpu.idle", cpu["idle"], f"{R}.cpu.idle")
        if cpu.get("realtimeRuntime") or cpu.get("realtimePeriod"):
            raise CgroupError(f"{R}.cpu.realtimeRuntime: realtime scheduling limits are not "
                              "available on cgroup v2")
        for key in ("cpus", "mems"):
            if cpu.get(key):
                write_file(d, f"cpuset.{key}", cpu[key], f"{R}.cpu.{key}")
        pids = resources.get("pids") or {}
        if pids.get("limit") is not None:
            limit = pids["limit"]
            write_file(d, "pids.max", "max" if limit <= 0 else limit, f"{R}.pids.limit")
        blk = resources.get("blockIO") or {}
        if blk.get("weight"):
            write_file(d, "io.weight", f"default {blkio_weight_to_io(blk['weight'])}",
                       f"{R}.blockIO.weight")
        for key, name in (("throttleReadBpsDevice", "rbps"), ("throttleWriteBpsDevice", "wbps"),
                          ("throttleReadIOPSDevice", "riops"),
                          ("throttleWriteIOPSDevice", "wiops")):
            for i, dev in enumerate(blk.get(key) or []):
                write_file(d, "io.max", f"{dev['major']}:{dev['minor']} {name}={dev['rate']}",
                           f"{R}.blockIO.{key}[{i}]")
        for i, item in enumerate(resources.get("hugepageLimits") or []):
            write_file(d, f"hugetlb.{item['pageSize']}.max", item["limit"],
                       f"{R}.hugepageLimits[{i}]")
        if (resources.get("network") or {}).get("classID") is not None:
            raise CgroupError(f"{R}.network.classID: net_cls is not available on cgroup v2")
        # linux.resources.devices: enforcing device rules on v2 needs an eBPF program
        # (BPF_CGROUP_DEVICE), not implemented yet; the container's /dev holds only the
        # default nodes.  See docs/architecture.md.
        for key, value in (resources.get("unified") or {}).items():
            if "/" in key or key.startswith("."):
                raise CgroupError(f"{R}.unified.{key}: invalid file name")
            write_file(d, key, value, f"{R}.unified.{key}")

    def stats(self) -> dict[str, Any]:
        d = self.dir
        cpu = dict(line.split() for line in read_file(d, "cpu.stat").splitlines()
                   if len(line.split()) == 2)
        raw = parse_memory_stat(read_file(d, "memory.stat"))
        return {
            "cpu": {"usage": {"total": int(cpu.get("usage_usec", 0)) * 1000, "percpu": [],
                              "kernel": int(cpu.get("system_usec", 0)) * 1000,
                              "user": int(cpu.get("user_usec", 0)) * 1000},
                    "throttling": {"periods": int(cpu.get("nr_periods", 0)),
                                   "throttledPeriods": int(cpu.get("nr_throttled", 0)),
                                   "throttledTime": int(cpu.get("throttled_usec", 0)) * 1000}},
            "memory": {"usage": {"usage": read_int(d, "memory.current"),
                                 "limit": read_int(d, "memory.max"),
                                 "max": read_int(d, "memory.peak"), "failcnt": 0},
                       "swap": {"usage": read_int(d, "memory.swap.current"),
                                "limit": read_int(d, "memory.swap.max")},
                       "cache": raw.get("file", 0), "raw": raw},
            "pids": {"current": read_int(d, "pids.current"), "limit": read_int(d, "pids.max")},
        }

    def oom_kill_count(self) -> int:
        for line in read_file(self.dir, "memory.events").splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def to_state(self) -> dict[str, Any]:
        return {"kind": "v2", "root": self.root, "path": self.path, "created": self.created}

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> V2Manager:
        return cls(data["root"], data["path"], created=list(data.get("created") or []))
