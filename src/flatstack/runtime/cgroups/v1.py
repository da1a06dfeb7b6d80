"""cgroup v1 (and the hybrid layout: v1 controllers plus a cgroup2 mount)."""

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

CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
               "hugetlb", "net_cls", "net_prio", "perf_event", "rdma", "misc")
R = "linux.resources"


class V1Manager(CgroupManager):
    """One directory per mounted v1 hierarchy (plus ``unified`` on hybrid hosts)."""

    def __init__(self, root: str, path: str, *, hybrid: bool = False,
                 paths: dict[str, str] | None = None, created: list[str] | None = None) -> None:
        self.root = root
        self.path = path
        self.hybrid = hybrid
        self.paths = paths if paths is not None else self._discover()
        self.created = created or []

    def _discover(self) -> dict[str, str]:
        paths = {}
        rel = self.path.lstrip("/")
        for name in CONTROLLERS:
            mount = os.path.join(self.root, name)
            if os.path.isdir(mount) and not os.path.islink(mount) and os.path.ismount(mount):
                paths[name] = os.path.join(mount, rel)
        if self.hybrid:
            paths[""] = os.path.join(self.root, "unified", rel)
        return paths

    # -- lifecycle -----------------------------------------------------------
    def writable(self) -> bool:
        mount = os.path.join(self.root, "pids")
        return os.access(mount, os.W_OK)

    def create(self) -> None:
        for name, path in self.paths.items():
            mkdir_p(path, self.created)
            if name == "cpuset":
                self._init_cpuset(path)

    def _init_cpuset(self, path: str) -> None:
        """A new v1 cpuset is empty; copy cpus and mems down from the nearest parent."""
        chain = []
        probe = path
        while probe.startswith(os.path.join(self.root, "cpuset")):
            chain.append(probe)
            if read_file(probe, "cpuset.cpus") and read_file(probe, "cpuset.mems"):
                break
            probe = os.path.dirname(probe)
        for directory in reversed(chain[:-1]):
            parent = os.path.dirname(directory)
            for key in ("cpuset.cpus", "cpuset.mems"):
                if not read_file(directory, key):
                    write_file(directory, key, read_file(parent, key), "linux.resources.cpu")

    def add_pid(self, pid: int) -> None:
        # Back to back: the first write in a fresh cgroup waits for an RCU grace
        # period; the others then take the fast path.
        for name, path in self.paths.items():
            write_file(path, "cgroup.procs", pid, f"cgroup {name or 'unified'}")

    def pids(self) -> list[int]:
        for name in ("pids", "freezer", "memory", "cpu"):
            if name in self.paths:
                return read_pids(self.paths[name])
        return read_pids(next(iter(self.paths.values())))

    def exists(self) -> bool:
        return any(os.path.isdir(p) for p in self.paths.values())

    def freeze(self) -> None:
        path = self._need("freezer")
        write_file(path, "freezer.state", "FROZEN", "pause")
        if not wait_until(lambda: read_file(path, "freezer.state") == "FROZEN", 5):
            write_file(path, "freezer.state", "THAWED", "pause")
            raise CgroupError(f"pause: {path} did not freeze in time")

    def thaw(self) -> None:
        path = self._need("freezer")
        write_file(path, "freezer.state", "THAWED", "resume")
        wait_until(lambda: read_file(path, "freezer.state") == "THAWED", 5)

    def is_frozen(self) -> bool:
        return "freezer" in self.paths and read_file(self.paths["freezer"],
                                                     "freezer.state") == "FROZEN"

    def kill_all(self, signal: int) -> None:
        frozen = "freezer" in self.paths
        if frozen:
            self.freeze()
        try:
            for pid in self.pids():
                try:
                    os.kill(pid, signal)
                except ProcessLookupError:
                    pass
        finally:
            if frozen:
                self.thaw()

    def destroy(self) -> None:
        if self.exists() and self.pids():
            if "freezer" in self.paths and self.is_frozen():
                self.thaw()
            for pid in self.pids():
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
        remove_tree(set(self.paths.values()), self.created)

    def _need(self, name: str) -> str:
        if name not in self.paths:
            raise CgroupError(f"the {name} cgroup controller is not mounted")
        return self.paths[name]

    # -- resources -----------------------------------------------------------
    def update(self, resources: dict[str, Any]) -> None:
        self.apply(resources)

    def apply(self, resources: dict[str, Any]) -> None:
        if not resources:
            return
        self._memory(resources.get("memory") or {})
        self._cpu(resources.get("cpu") or {})
        pids = resources.get("pids") or {}
        if pids.get("limit") is not None:
            limit = pids["limit"]
            write_file(self._need("pids"), "pids.max", "max" if limit <= 0 else limit,
                       f"{R}.pids.limit")
        self._blkio(resources.get("blockIO") or {})
        self._hugetlb(resources.get("hugepageLimits") or [])
        self._network(resources.get("network") or {})
        if resources.get("devices"):
            self._devices(resources["devices"])
        unified = resources.get("unified") or {}
        if unified:
            if not self.hybrid:
                raise CgroupError(f"{R}.unified: needs cgroup v2, this host has only v1")
            for key, value in unified.items():
                if "/" in key or key.startswith("."):
                    raise CgroupError(f"{R}.unified.{key}: invalid file name")
                write_file(self.paths[""], key, value, f"{R}.unified.{key}")

    def _memory(self, mem: dict[str, Any]) -> None:
        if not mem:
            return
        path = self._need("memory")
        limit, swap = mem.get("limit"), mem.get("swap")
        has_memsw = os.path.exists(os.path.join(path, "memory.memsw.limit_in_bytes"))
        if limit is not None and 0 < limit < 6 * 1024 * 1024 and limit != -1:
            raise CgroupError(f"{R}.memory.limit: must be at least 6291456 bytes, got {limit}")
        if swap is not None and limit is not None and swap != -1 and limit != -1 \
                and 0 < swap < limit:
            raise CgroupError(f"{R}.memory.swap: must be at least the memory limit "
                              f"({swap} < {limit})")
        # memsw must always be >= the limit: order the two writes accordingly.
        writes = []
        if limit is not None:
            writes.append(("memory.limit_in_bytes", limit, f"{R}.memory.limit"))
        if swap is not None and has_memsw:
            swap_write = ("memory.memsw.limit_in_bytes", swap, f"{R}.memory.swap")
            current = read_int(path, "memory.memsw.limit_in_bytes")
            if swap == -1 or (current and swap > current):
                writes.insert(0, swap_write)
            else:
                writes.append(swap_write)
        elif swap is not None and swap not in (-1, 0) and limit != swap:
            raise CgroupError(f"{R}.memory.swap: swap accounting is not enabled on this host")
        for name, value, field in writes:
            write_file(path, name, value, field)
        if mem.get("reservation") is not None:
            write_file(path, "memory.soft_limit_in_bytes", mem["reservation"],
                       f"{R}.memory.reservation")
        if mem.get("swappiness") is not None:
            write_file(path, "memory.swappiness", mem["swappiness"], f"{R}.memory.swappiness")
        if mem.get("disableOOMKiller"):
            write_file(path, "memory.oom_control", 1, f"{R}.memory.disableOOMKiller")
        if mem.get("kernelTCP") is not None and os.path.exists(
                os.path.join(path, "memory.kmem.tcp.limit_in_bytes")):
            write_file(path, "memory.kmem.tcp.limit_in_bytes", mem["kernelTCP"],
                       f"{R}.memory.kernelTCP")

    def _cpu(self, cpu: dict[str, Any]) -> None:
        if not cpu:
            return
        if any(cpu.get(k) is not None for k in ("shares", "quota", "period", "realtimeRuntime",
                                               "realtimePeriod", "burst", "idle")):
            path = self._need("cpu")
            if cpu.get("shares"):
                write_file(path, "cpu.shares", cpu["shares"], f"{R}.cpu.shares")
            if cpu.get("period"):
                write_file(path, "cpu.cfs_period_us", cpu["period"], f"{R}.cpu.period")
            if cpu.get("quota") is not None and cpu["quota"] != 0:
                write_file(path, "cpu.cfs_quota_us", cpu["quota"], f"{R}.cpu.quota")
            if cpu.get("burst") is not None:
                write_file(path, "cpu.cfs_burst_us", cpu["burst"], f"{R}.cpu.burst")
            if cpu.get("realtimePeriod"):
                write_file(path, "cpu.rt_period_us", cpu["realtimePeriod"],
                           f"{R}.cpu.realtimePeriod")
            if cpu.get("realtimeRuntime"):
                write_file(path, "cpu.rt_runtime_us", cpu["realtimeRuntime"],
                           f"{R}.cpu.realtimeRuntime")
            if cpu.get("idle") is not None:
                write_file(path, "cpu.idle", cpu["idle"], f"{R}.cpu.idle")
        for key in ("cpus", "mems"):
            if cpu.get(key):
                write_file(self._need("cpuset"), f"cpuset.{key}", cpu[key], f"{R}.cpu.{key}")

    def _blkio(self, blk: dict[str, Any]) -> None:
        if not blk:
            return
        path = self._need("blkio")
        weight_file = "blkio.weight" if os.path.exists(os.path.join(path, "blkio.weight")) \
            else "blkio.bfq.weight"
        if blk.get("weight"):
            write_file(path, weight_file, blk["weight"], f"{R}.blockIO.weight")
        if blk.get("leafWeight") and os.path.exists(os.path.join(path, "blkio.leaf_weight")):
            write_file(path, "blkio.leaf_weight", blk["leafWeight"], f"{R}.blockIO.leafWeight")
        for i, dev in enumerate(blk.get("weightDevice") or []):
            if dev.get("weight"):
                write_file(path, weight_file.replace("weight", "weight_device")
                           if weight_file == "blkio.weight" else weight_file,
                           f"{dev['major']}:{dev['minor']} {dev['weight']}",
                           f"{R}.blockIO.weightDevice[{i}]")
        for key, name in (("throttleReadBpsDevice", "read_bps_device"),
                          ("throttleWriteBpsDevice", "write_bps_device"),
                          ("throttleReadIOPSDevice", "read_iops_device"),
                          ("throttleWriteIOPSDevice", "write_iops_device")):
            for i, dev in enumerate(blk.get(key) or []):
                write_file(path, f"blkio.throttle.{name}",
                           f"{dev['major']}:{dev['minor']} {dev['rate']}",
                           f"{R}.blockIO.{key}[{i}]")

    def _hugetlb(self, limits: list[dict[str, Any]]) -> None:
        for i, item in enumerate(limits):
            size = item["pageSize"]
            if "hugetlb" in self.paths:
                write_file(self.paths["hugetlb"], f"hugetlb.{size}.limit_in_bytes",
                           item["limit"], f"{R}.hugepageLimits[{i}]")
            elif (self.hybrid and os.path.exists(
                    os.path.join(os.path.dirname(self.paths[""]), f"hugetlb.{size}.max")
            )) or self.hybrid:
                self._enable_unified("hugetlb")
                write_file(self.paths[""], f"hugetlb.{size}.max", item["limit"],
                           f"{R}.hugepageLimits[{i}]")
            else:
                raise CgroupError(f"{R}.hugepageLimits[{i}]: the hugetlb controller is "
                                  "not available")

    def _enable_unified(self, controller: str) -> None:
        """Enable a controller on the cgroup2 side of a hybrid host, down to our dir."""
        base = os.path.join(self.root, "unified")
        rel = self.paths[""][len(base):].strip("/").split("/")
        current = base
        for part in rel:
            enabled = read_file(current, "cgroup.subtree_control").split()
            if controller not in enabled:
                write_file(current, "cgroup.subtree_control", f"+{controller}",
                           f"{R}.hugepageLimits")
            current = os.path.join(current, part)

    def _network(self, net: dict[str, Any]) -> None:
        if net.get("classID") is not None:
            if "net_cls" not in self.paths:
                raise CgroupError(f"{R}.network.classID: the net_cls controller is not mounted")
            write_file(self.paths["net_cls"], "net_cls.classid", net["classID"],
                       f"{R}.network.classID")
        for i, prio in enumerate(net.get("priorities") or []):
            if "net_prio" not in self.paths:
                raise CgroupError(f"{R}.network.priorities: the net_prio controller is "
                                  "not mounted")
            write_file(self.paths["net_prio"], "net_prio.ifpriomap",
                       f"{prio['name']} {prio['priority']}", f"{R}.network.priorities[{i}]")

    def _devices(self, rules: list[dict[str, Any]]) -> None:
        path = self._need("devices")
        for i, rule in enumerate(rules):
            kind = rule.get("type") or "a"
            major = rule.get("major")
            minor = rule.get("minor")
            access = rule.get("access") or "rwm"
            if kind == "a":
                entry = "a"
            else:
                entry = (f"{kind} {'*' if major is None or major < 0 else major}:"
                         f"{'*' if minor is None or minor < 0 else minor} {access}")
            name = "devices.allow" if rule.get("allow") else "devices.deny"
            write_file(path, name, entry, f"{R}.devices[{i}]")

    # -- statistics ----------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        acct = self.paths.get("cpuacct")
        if acct:
            percpu = [int(x) for x in read_file(acct, "cpuacct.usage_percpu").split()]
            ticks = dict(line.split() for line in read_file(acct, "cpuacct.stat").splitlines())
            hz_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
            result["cpu"] = {"usage": {
                "total": read_int(acct, "cpuacct.usage"), "percpu": percpu,
                "kernel": int(ticks.get("system", 0)) * hz_ns,
                "user": int(ticks.get("user", 0)) * hz_ns}}
        cpu = self.paths.get("cpu")
        if cpu:
            throttle = dict(line.split() for line in read_file(cpu, "cpu.stat").splitlines()
                            if len(line.split()) == 2)
            result.setdefault("cpu", {"usage": {}})["throttling"] = {
                "periods": int(throttle.get("nr_periods", 0)),
                "throttledPeriods": int(throttle.get("nr_throttled", 0)),
                "throttledTime": int(throttle.get("throttled_time", 0))}
        mem = self.paths.get("memory")
        if mem:
            def entry(prefix: str) -> dict[str, int]:
                return {"limit": read_int(mem, f"{prefix}.limit_in_bytes"),
                        "usage": read_int(mem, f"{prefix}.usage_in_bytes"),
                        "max": read_int(mem, f"{prefix}.max_usage_in_bytes"),
                        "failcnt": read_int(mem, f"{prefix}.failcnt")}
            raw = parse_memory_stat(read_file(mem, "memory.stat"))
            result["memory"] = {"usage": entry("memory"), "swap": entry("memory.memsw"),
                                "kernel": entry("memory.kmem"),
                                "kernelTCP": entry("memory.kmem.tcp"),
                                "cache": raw.get("cache", 0), "raw": raw}
        pids = self.paths.get("pids")
        if pids:
            result["pids"] = {"current": read_int(pids, "pids.current"),
                              "limit": read_int(pids, "pids.max")}
        blkio = self.paths.get("blkio")
        if blkio:
            result["blkio"] = {"ioServiceBytesRecursive": _blkio_entries(
                read_file(blkio, "blkio.throttle.io_service_bytes_recursive"))}
        return result

    def oom_kill_count(self) -> int:
        mem = self.paths.get("memory")
        if not mem:
            return 0
        for line in read_file(mem, "memory.oom_control").splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    # -- persistence ---------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {"kind": "v1", "root": self.root, "path": self.path, "hybrid": self.hybrid,
                "paths": self.paths, "created": self.created}

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> V1Manager:
        return cls(data["root"], data["path"], hybrid=data.get("hybrid", False),
                   paths=dict(data["paths"]), created=list(data.get("created") or []))


def _blkio_entries(text: str) -> list[dict[str, Any]]:
    entries = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and ":" in parts[0]:
            major, minor = parts[0].split(":")
            entries.append({"major": int(major), "minor": int(minor), "op": parts[1],
                            "value": int(parts[2])})
    return entries
