"""cgroup v1, and the hybrid layout (v1 controllers plus a cgroup2 mount).

One directory per mounted hierarchy, named hierarchies (``name=systemd``) too,
as runc does; on a hybrid host also one on the cgroup2 side (key ``""``), where
controllers that live only there (hugetlb on this project's machines) are set.
"""

from __future__ import annotations

import errno
import os
import time

from flatstack.errors import CgroupError
from flatstack.runtime.cgroups import _devices, _fs
from flatstack.runtime.cgroups.base import (
    THROTTLE_KEYS,
    CgroupManager,
    R,
    check_resources,
    section,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

KNOWN = frozenset(("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls",
                   "net_prio", "blkio", "perf_event", "hugetlb", "pids", "rdma", "misc"))


class V1Manager(CgroupManager):
    """A container's cgroup on a v1 (or hybrid) host."""

    kind = "v1"

    def __init__(self, path: str, paths: dict[str, str], controllers: dict[str, str],
                 mounts: dict[str, str], *, created: list[str] | None = None,
                 rootless: bool = False) -> None:
        self.path = path
        self.paths = paths
        self.controllers = controllers  # controller (or name=x) -> key in paths
        self.mounts = mounts  # key -> mount point of that hierarchy
        self.created = created if created is not None else []
        self.rootless = rootless

    @classmethod
    def discover(cls, cgroups_path: str, *, rootless: bool = False,
                 mounts: list[tuple[str, str, str, str]] | None = None,
                 own: dict[str, str] | None = None) -> V1Manager:
        """Every cgroup hierarchy mounted here, with the container's directory in it."""
        mounts = _fs.cgroup_mounts() if mounts is None else mounts
        own = _fs.own_cgroups() if own is None else own
        paths: dict[str, str] = {}
        controllers: dict[str, str] = {}
        points: dict[str, str] = {}
        relative = not cgroups_path.startswith("/")
        for mountpoint, mount_root, fstype, options in mounts:
            if fstype == "cgroup2":
                if "" in paths:
                    continue
                key, names = "", [""]
            else:
                names = [o for o in options.split(",") if o in KNOWN or o.startswith("name=")]
                if not names:
                    continue
                key = os.path.basename(mountpoint.rstrip("/")) or ",".join(names)
                if key in paths:
                    key = ",".join(names)
            rel = cgroups_path
            if relative:
                base = own.get(names[0], "/")
                if mount_root != "/" and (base + "/").startswith(mount_root + "/"):
                    base = base[len(mount_root):] or "/"
                rel = os.path.join(base, cgroups_path)
            paths[key] = os.path.normpath(f"{mountpoint}/{rel.lstrip('/')}")
            points[key] = mountpoint
            for name in names:
                controllers.setdefault(name, key)
        return cls(cgroups_path, paths, controllers, points, rootless=rootless)

    # -- lifecycle -----------------------------------------------------------
    def create(self) -> None:
        for directory in self.paths.values():
            if os.path.isdir(directory):
                try:
                    self._check_leaf_empty(directory)
                except CgroupError:
                    self.paths = {}  # not ours: destroy must not touch it
                    raise
        for key, directory in list(self.paths.items()):
            try:
                _fs.mkdir_p(directory, self.created)
            except _fs.MkdirError as err:
                if self.rootless and err.errno in _fs.DENIED:
                    del self.paths[key]  # not delegated to us: run without it
                    continue
                raise
            if key == self.controllers.get("cpuset"):
                self._init_cpuset(key, directory)

    def _init_cpuset(self, key: str, directory: str) -> None:
        """A new v1 cpuset is empty (no task may join); copy cpus and mems down."""
        top = self.mounts[key]
        chain = []
        probe = directory
        while len(probe) > len(top):
            chain.append(probe)
            probe = os.path.dirname(probe)
        parent = top
        for current in reversed(chain):
            for name in ("cpuset.cpus", "cpuset.mems"):
                if not _fs.read(current, name):
                    _fs.write(current, name, _fs.read(parent, name) or "",
                              f"{R}.cpu.{name[7:]}")
            parent = current

    def add_pid(self, pid: int) -> None:
        # All hierarchies back to back: the first write may wait for an RCU grace
        # period (see docs/cgroups.md); the rest then take the fast path.
        data = str(pid).encode()
        for key, directory in self.paths.items():
            try:
                _fs.add_proc(directory, data)
            except OSError as err:
                if self.rootless and err.errno in _fs.DENIED:
                    continue
                raise CgroupError(f"cannot move process {pid} into {directory} "
                                  f"(cgroup {key or 'unified'}): {_fs.why(err)}") from None

    def birth_places(self) -> tuple[str | None, list[str]]:
        return self.paths.get(""), [d for key, d in self.paths.items() if key]

    def pids(self) -> list[int]:
        for name in ("pids", "freezer", "memory", "cpu", "devices"):
            key = self.controllers.get(name)
            if key is not None and key in self.paths:
                return _fs.procs(self.paths[key])
        for directory in self.paths.values():
            return _fs.procs(directory)
        return []

    def _freezer(self, field: str) -> str:
        key = self.controllers.get("freezer")
        if key is None or key not in self.paths:
            raise CgroupError(f"{field}: the freezer cgroup controller is not mounted")
        return self.paths[key]

    def freeze(self) -> None:
        path = self._freezer("pause")
        deadline = time.monotonic() + 5.0
        attempt = 0
        while True:
            _fs.write(path, "freezer.state", "FROZEN", "pause")
            state = _fs.read(path, "freezer.state")
            if state == "FROZEN":
                return
            if state is None or time.monotonic() > deadline:
                _fs.write(path, "freezer.state", "THAWED", "pause")
                raise CgroupError(f"pause: {path} did not freeze (state {state})")
            attempt += 1
            if attempt % 50 == 0:  # tasks keep forking: let them settle, try again
                _fs.write(path, "freezer.state", "THAWED", "pause")
                time.sleep(0.01)
            else:
                time.sleep(min(0.0001 * attempt, 0.005))

    def thaw(self) -> None:
        path = self._freezer("resume")
        _fs.write(path, "freezer.state", "THAWED", "resume")
        if not _fs.wait_until(lambda: _fs.read(path, "freezer.state") == "THAWED", 5.0):
            raise CgroupError(f"resume: {path} did not thaw")

    def is_frozen(self) -> bool:
        key = self.controllers.get("freezer")
        if key is None or key not in self.paths:
            return False
        return _fs.read(self.paths[key], "freezer.state") == "FROZEN"

    # -- resources -----------------------------------------------------------
    def _dir(self, controller: str, field: str) -> str:
        key = self.controllers.get(controller)
        if key is None or key not in self.paths:
            why = ("has not been delegated to this user" if self.rootless and key
                   else "is not mounted")
            raise CgroupError(f"{field}: the {controller} cgroup controller {why}")
        return self.paths[key]

    def apply(self, resources: dict[str, Any], *, update: bool = False) -> None:
        check_resources(resources)
        if not resources:
            return
        rules = resources.get("devices")
        # Like runc's update, device rules are only set at create: rewriting them
        # would deny everything for a moment in a running container.
        parsed = _devices.parse(rules) if rules and not update else []
        cpu = section(resources, "cpu")
        if cpu.get("cpus") or cpu.get("mems"):
            self._cpuset(cpu)
        if parsed:
            path = self._dir("devices", _devices.FIELD)
            for name, line, i in _devices.v1_writes(parsed):
                _fs.write(path, name, line, f"{_devices.FIELD}[{i}]" if i >= 0
                          else _devices.FIELD)
        self._memory(section(resources, "memory"), update)
        self._cpu(cpu)
        limit = section(resources, "pids").get("limit")
        if limit:
            _fs.write(self._dir("pids", f"{R}.pids.limit"), "pids.max",
                      limit if limit > 0 else "max", f"{R}.pids.limit")
        self._blkio(section(resources, "blockIO"))
        self._hugetlb(section(resources, "hugepageLimits", list))
        self._network(section(resources, "network"))
        unified = section(resources, "unified")
        if unified:
            self._unified(unified)

    def _cpuset(self, cpu: dict[str, Any]) -> None:
        path = self._dir("cpuset", f"{R}.cpu.cpus")
        for key in ("cpus", "mems"):
            if cpu.get(key):
                _fs.write(path, f"cpuset.{key}", cpu[key], f"{R}.cpu.{key}")

    def _memory(self, mem: dict[str, Any], update: bool) -> None:
        if not any(v is not None for v in mem.values()):
            return
        f = f"{R}.memory"
        path = self._dir("memory", f)
        limit = mem.get("limit") or 0
        swap = mem.get("swap") or 0
        has_memsw = _fs.exists(path, "memory.memsw.limit_in_bytes")
        if limit == -1 and swap == 0 and has_memsw:
            swap = -1  # unlimited memory: unlimited memory+swap too, as runc does
        if swap and not has_memsw:
            if swap != -1 and swap != limit:
                raise CgroupError(f"{f}.swap: swap accounting is not enabled on this "
                                  "host (no memory.memsw.limit_in_bytes)")
            swap = 0
        if limit > 0 and mem.get("checkBeforeUpdate") and update:
            usage = _fs.read_int(path, "memory.usage_in_bytes")
            if usage > limit:
                raise CgroupError(f"{f}.limit: {limit} is below the current usage "
                                  f"({usage} bytes)")
        # The kernel keeps memory+swap >= memory at every step: order the writes.
        swap_first = bool(limit and swap) and (
            swap == -1 or _fs.read_int(path, "memory.limit_in_bytes") < swap)
        if swap_first:
            _fs.write(path, "memory.memsw.limit_in_bytes", swap, f"{f}.swap")
        if limit:
            try:
                _fs.write(path, "memory.limit_in_bytes", limit, f"{f}.limit")
            except _fs.WriteError as err:
                if err.errno != errno.EBUSY:
                    raise
                raise CgroupError(
                    f"{f}.limit: cannot set {limit}: current usage is "
                    f"{_fs.read_int(path, 'memory.usage_in_bytes')} bytes") from None
        if swap and not swap_first:
            _fs.write(path, "memory.memsw.limit_in_bytes", swap, f"{f}.swap")
        if mem.get("reservation"):
            _fs.write(path, "memory.soft_limit_in_bytes", mem["reservation"],
                      f"{f}.reservation")
        # memory.kernel: kernel memory limits are gone since Linux 5.16; ignored as by
        # runc.  kernelTCP still exists on v1.
        if mem.get("kernelTCP"):
            _fs.write(path, "memory.kmem.tcp.limit_in_bytes", mem["kernelTCP"],
                      f"{f}.kernelTCP")
        if mem.get("swappiness") is not None:
            _fs.write(path, "memory.swappiness", mem["swappiness"], f"{f}.swappiness")
        if mem.get("disableOOMKiller"):
            _fs.write(path, "memory.oom_control", 1, f"{f}.disableOOMKiller")
        if mem.get("useHierarchy") is not None:
            try:
                _fs.write(path, "memory.use_hierarchy", int(mem["useHierarchy"]),
                          f"{f}.useHierarchy")
            except _fs.WriteError:
                if mem["useHierarchy"] is False:
                    raise CgroupError(f"{f}.useHierarchy: this kernel always accounts "
                                      "hierarchically; false is not possible") from None

    def _cpu(self, cpu: dict[str, Any]) -> None:
        f = f"{R}.cpu"
        keys = ("shares", "quota", "period", "burst", "realtimeRuntime", "realtimePeriod",
                "idle")
        if not any(cpu.get(k) is not None for k in keys):
            return
        path = self._dir("cpu", f)
        # Realtime first: a task with a realtime policy cannot join a group with no
        # realtime budget.
        if cpu.get("realtimePeriod"):
            _fs.write(path, "cpu.rt_period_us", cpu["realtimePeriod"], f"{f}.realtimePeriod")
        if cpu.get("realtimeRuntime"):
            _fs.write(path, "cpu.rt_runtime_us", cpu["realtimeRuntime"],
                      f"{f}.realtimeRuntime")
        shares = cpu.get("shares")
        if shares:
            _fs.write(path, "cpu.shares", shares, f"{f}.shares")
            got = _fs.read_int(path, "cpu.shares")
            if got != shares:
                raise CgroupError(f"{f}.shares: the kernel allows 2 to 262144, "
                                  f"{shares} became {got}")
        period, quota = cpu.get("period"), cpu.get("quota")
        retry_period = False
        if period:
            try:
                _fs.write(path, "cpu.cfs_period_us", period, f"{f}.period")
            except _fs.WriteError as err:
                # Shrinking the period can break the old quota/period ratio; the
                # quota write below fixes that, then the period is tried again.
                if err.errno != errno.EINVAL or not quota:
                    raise
                retry_period = True
        if quota:
            _fs.write(path, "cpu.cfs_quota_us", quota, f"{f}.quota")
            if retry_period:
                _fs.write(path, "cpu.cfs_period_us", period, f"{f}.period")
        if cpu.get("burst") is not None:
            _fs.write(path, "cpu.cfs_burst_us", cpu["burst"], f"{f}.burst")
        if cpu.get("idle") is not None:
            _fs.write(path, "cpu.idle", cpu["idle"], f"{f}.idle")

    def _blkio(self, blk: dict[str, Any]) -> None:
        f = f"{R}.blockIO"
        if not any(blk.get(k) for k in ("weight", "leafWeight", "weightDevice",
                                        *THROTTLE_KEYS)):
            return
        path = self._dir("blkio", f)
        if _fs.exists(path, "blkio.weight"):
            weight, weight_device = "blkio.weight", "blkio.weight_device"
        elif _fs.exists(path, "blkio.bfq.weight"):
            weight, weight_device = "blkio.bfq.weight", "blkio.bfq.weight_device"
        else:
            weight = weight_device = ""
        if (blk.get("weight") or any(d.get("weight") for d in blk.get("weightDevice") or [])
                ) and not weight:
            raise CgroupError(f"{f}.weight: no I/O scheduler here supports weights "
                              f"(no blkio.weight or blkio.bfq.weight in {path})")
        if blk.get("weight"):
            _fs.write(path, weight, blk["weight"], f"{f}.weight")
        if blk.get("leafWeight"):
            _fs.write(path, "blkio.leaf_weight", blk["leafWeight"], f"{f}.leafWeight")
        for i, dev in enumerate(blk.get("weightDevice") or []):
            where = f"{f}.weightDevice[{i}]"
            if dev.get("weight"):
                _fs.write(path, weight_device, f"{dev['major']}:{dev['minor']} "
                          f"{dev['weight']}", where)
            if dev.get("leafWeight"):
                _fs.write(path, "blkio.leaf_weight_device", f"{dev['major']}:{dev['minor']} "
                          f"{dev['leafWeight']}", where)
        for key, name in zip(THROTTLE_KEYS, ("read_bps_device", "write_bps_device",
                                             "read_iops_device", "write_iops_device"),
                             strict=True):
            for i, dev in enumerate(blk.get(key) or []):
                _fs.write(path, f"blkio.throttle.{name}",
                          f"{dev['major']}:{dev['minor']} {dev['rate']}", f"{f}.{key}[{i}]")

    def _hugetlb(self, limits: list[dict[str, Any]]) -> None:
        if not limits:
            return
        f = f"{R}.hugepageLimits"
        if "hugetlb" in self.controllers and self.controllers["hugetlb"] in self.paths:
            path = self.paths[self.controllers["hugetlb"]]
            for i, item in enumerate(limits):
                size, limit = item["pageSize"], item["limit"]
                _fs.write(path, f"hugetlb.{size}.limit_in_bytes", limit, f"{f}[{i}]")
                if _fs.exists(path, f"hugetlb.{size}.rsvd.limit_in_bytes"):
                    _fs.write(path, f"hugetlb.{size}.rsvd.limit_in_bytes", limit, f"{f}[{i}]")
            return
        path = self._unified_dir("hugetlb", f)
        for i, item in enumerate(limits):
            size, limit = item["pageSize"], item["limit"]
            value = "max" if limit == -1 else limit
            _fs.write(path, f"hugetlb.{size}.max", value, f"{f}[{i}]")
            if _fs.exists(path, f"hugetlb.{size}.rsvd.max"):
                _fs.write(path, f"hugetlb.{size}.rsvd.max", value, f"{f}[{i}]")

    def _unified_dir(self, controller: str, field: str) -> str:
        """The cgroup2 directory with ``controller`` enabled down to it (hybrid)."""
        if "" not in self.paths:
            raise CgroupError(f"{field}: the {controller} cgroup controller is not "
                              "available on this host")
        top = self.mounts[""]
        if controller not in (_fs.read(top, "cgroup.controllers") or "").split():
            raise CgroupError(f"{field}: the {controller} cgroup controller is not "
                              "available on this host")
        leaf = self.paths[""]
        parts = leaf[len(top):].strip("/").split("/")
        current = top
        for part in parts:
            if controller not in (_fs.read(current, "cgroup.subtree_control") or "").split():
                _fs.write(current, "cgroup.subtree_control", f"+{controller}", field)
            current = f"{current}/{part}"
        return leaf

    def _network(self, net: dict[str, Any]) -> None:
        f = f"{R}.network"
        if net.get("classID") is not None:
            _fs.write(self._dir("net_cls", f"{f}.classID"), "net_cls.classid",
                      net["classID"], f"{f}.classID")
        for i, prio in enumerate(net.get("priorities") or []):
            _fs.write(self._dir("net_prio", f"{f}.priorities"), "net_prio.ifpriomap",
                      f"{prio['name']} {prio['priority']}", f"{f}.priorities[{i}]")

    def _unified(self, unified: dict[str, str]) -> None:
        f = f"{R}.unified"
        if "" not in self.paths:
            raise CgroupError(f"{f}: needs cgroup v2; this host has only cgroup v1")
        top = self.mounts[""]
        available = (_fs.read(top, "cgroup.controllers") or "").split()
        for key, value in unified.items():
            controller = key.split(".", 1)[0]
            if controller != "cgroup" and controller not in available:
                raise CgroupError(f"{f}.{key}: the {controller} controller is bound to "
                                  "cgroup v1 on this hybrid host; use the linux.resources "
                                  "fields instead")
            path = self._unified_dir(controller, f"{f}.{key}") if controller != "cgroup" \
                else self.paths[""]
            _fs.write(path, key, value, f"{f}.{key}")

    # -- statistics ----------------------------------------------------------
    def _opt(self, controller: str) -> str | None:
        key = self.controllers.get(controller)
        if key is None or key not in self.paths or not os.path.isdir(self.paths[key]):
            return None
        return self.paths[key]

    def stats(self) -> dict[str, Any]:
        from flatstack.runtime.cgroups import _stats

        result = _stats.empty()
        acct = self._opt("cpuacct")
        if acct:
            ticks = _fs.read_keyed(acct, "cpuacct.stat")
            ns_per_tick = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
            pk, pu = [], []
            for line in (_fs.read(acct, "cpuacct.usage_all") or "").splitlines()[1:]:
                parts = line.split()
                if len(parts) == 3:
                    pu.append(int(parts[1]))
                    pk.append(int(parts[2]))
            result["cpu"]["usage"] = _stats.cpu_usage(
                _fs.read_int(acct, "cpuacct.usage"),
                [int(x) for x in (_fs.read(acct, "cpuacct.usage_percpu") or "").split()],
                ticks.get("system", 0) * ns_per_tick, ticks.get("user", 0) * ns_per_tick,
                pk, pu)
        cpu = self._opt("cpu")
        if cpu:
            stat = _fs.read_keyed(cpu, "cpu.stat")
            result["cpu"]["throttling"] = _stats.throttling(
                stat.get("nr_periods", 0), stat.get("nr_throttled", 0),
                stat.get("throttled_time", 0))
        cpuset = self._opt("cpuset")
        if cpuset:
            names = ("cpus", "cpu_exclusive", "mems", "mem_hardwall", "mem_exclusive",
                     "memory_migrate", "memory_spread_page", "memory_spread_slab",
                     "memory_pressure", "sched_load_balance", "sched_relax_domain_level")
            result["cpuset"] = _stats.cpuset_entry(
                {n: _fs.read(cpuset, f"cpuset.{n}") or "" for n in names})
        mem = self._opt("memory")
        if mem:
            def entry(prefix: str) -> dict[str, Any]:
                return _stats.memory_entry(
                    _fs.read_int(mem, f"{prefix}.limit_in_bytes"),
                    _fs.read_int(mem, f"{prefix}.usage_in_bytes"),
                    _fs.read_int(mem, f"{prefix}.max_usage_in_bytes"),
                    _fs.read_int(mem, f"{prefix}.failcnt"))
            raw = _fs.read_keyed(mem, "memory.stat")
            result["memory"] = _stats.omit({
                "cache": raw.get("cache", 0), "usage": entry("memory"),
                "swap": entry("memory.memsw"), "kernel": entry("memory.kmem"),
                "kernelTCP": entry("memory.kmem.tcp"), "raw": raw}, "cache", "raw")
        pids = self._opt("pids")
        if pids:
            result["pids"] = _stats.pids_entry(_fs.read_int(pids, "pids.current"),
                                               _fs.read_int(pids, "pids.max"))
        blkio = self._opt("blkio")
        if blkio:
            # runc's order of preference: BFQ, CFQ, then the throttling layer.
            prefix = next((p for p in ("blkio.bfq.", "blkio.") if _fs.exists(
                blkio, f"{p}io_service_bytes_recursive")), "blkio.throttle.")
            result["blkio"] = _stats.omit({
                "ioServiceBytesRecursive": _stats.blkio_entries(
                    _fs.read(blkio, f"{prefix}io_service_bytes_recursive")),
                "ioServicedRecursive": _stats.blkio_entries(
                    _fs.read(blkio, f"{prefix}io_serviced_recursive")),
            }, "ioServiceBytesRecursive", "ioServicedRecursive")
        result["hugetlb"] = self._hugetlb_stats(_stats)
        return result

    def _hugetlb_stats(self, _stats: Any) -> dict[str, Any]:
        sizes = _fs.hugepage_sizes()
        v1 = self._opt("hugetlb")
        if v1:
            return {s: _stats.hugetlb_entry(
                _fs.read_int(v1, f"hugetlb.{s}.usage_in_bytes"),
                _fs.read_int(v1, f"hugetlb.{s}.max_usage_in_bytes"),
                _fs.read_int(v1, f"hugetlb.{s}.failcnt")) for s in sizes}
        v2 = self.paths.get("")
        if v2 and _fs.exists(v2, f"hugetlb.{sizes[0]}.current" if sizes else "-"):
            return {s: _stats.hugetlb_entry(
                _fs.read_int(v2, f"hugetlb.{s}.current"), 0,
                _fs.read_keyed(v2, f"hugetlb.{s}.events").get("max", 0)) for s in sizes}
        return {}

    def oom_kill_count(self) -> int:
        mem = self._opt("memory")
        if not mem:
            return 0
        return _fs.read_keyed(mem, "memory.oom_control").get("oom_kill", 0)

    # -- persistence ---------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "paths": dict(self.paths),
                "controllers": dict(self.controllers), "mounts": dict(self.mounts),
                "created": list(self.created), "rootless": self.rootless}

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> V1Manager:
        return cls(data.get("path", ""), dict(data.get("paths") or {}),
                   dict(data.get("controllers") or {}), dict(data.get("mounts") or {}),
                   created=list(data.get("created") or []),
                   rootless=bool(data.get("rootless")))
