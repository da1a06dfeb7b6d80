"""cgroup v2: one directory in the unified hierarchy."""

from __future__ import annotations

import errno
import os

from flatstack.errors import CgroupError
from flatstack.runtime.cgroups import _devices, _fs
from flatstack.runtime.cgroups.base import (
    THROTTLE_KEYS,
    CgroupManager,
    R,
    blkio_weight_to_io,
    check_resources,
    section,
    shares_to_weight,
    swap_to_v2,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any



def _max(value: int) -> str | int:
    return "max" if value == -1 else value


class V2Manager(CgroupManager):
    """A container's cgroup in a cgroup2 hierarchy mounted at ``root``."""

    kind = "v2"

    def __init__(self, root: str, path: str, *, directory: str | None = None,
                 created: list[str] | None = None, rootless: bool = False) -> None:
        self.root = root.rstrip("/") or "/"
        self.path = path
        self.dir = directory or os.path.normpath(f"{self.root}/{path.lstrip('/')}")
        self.paths = {"": self.dir}
        self.created = created if created is not None else []
        self.rootless = rootless

    @classmethod
    def discover(cls, root: str, cgroups_path: str, *, rootless: bool = False,
                 own: dict[str, str] | None = None) -> V2Manager:
        """Relative paths are placed under this process's own cgroup, as runc does."""
        directory = None
        if not cgroups_path.startswith("/"):
            own = _fs.own_cgroups() if own is None else own
            base = own.get("", "/")
            directory = os.path.normpath(f"{root}/{base.lstrip('/')}/{cgroups_path}")
        return cls(root, cgroups_path, directory=directory, rootless=rootless)

    # -- lifecycle -----------------------------------------------------------
    def create(self) -> None:
        if os.path.isdir(self.dir):
            try:
                self._check_leaf_empty(self.dir)
            except CgroupError:
                self.paths = {}
                raise
        try:
            _fs.mkdir_p(self.dir, self.created)
        except _fs.MkdirError as err:
            if self.rootless and err.errno in _fs.DENIED:
                self.paths = {}
                return
            raise
        self._enable_controllers()

    def _enable_controllers(self) -> None:
        """Enable, from the root down to our parent, every controller the level has
        (as runc does); a level that refuses one (processes in it, threaded) just
        leaves that controller out, and writing its files later names it."""
        rel = self.dir[len(self.root):].strip("/")
        if not rel:
            return
        current = self.root
        for part in rel.split("/"):
            available = (_fs.read(current, "cgroup.controllers") or "").split()
            enabled = set((_fs.read(current, "cgroup.subtree_control") or "").split())
            wanted = [c for c in available if c not in enabled]
            if wanted:
                try:
                    _fs.write(current, "cgroup.subtree_control",
                              " ".join(f"+{c}" for c in wanted), "linux.cgroupsPath")
                except CgroupError:
                    for c in wanted:
                        try:
                            _fs.write(current, "cgroup.subtree_control", f"+{c}",
                                      "linux.cgroupsPath")
                        except CgroupError:
                            pass
            current = f"{current}/{part}"

    def add_pid(self, pid: int) -> None:
        if not self.paths:
            return
        try:
            _fs.add_proc(self.dir, str(pid).encode())
        except OSError as err:
            if self.rootless and err.errno in _fs.DENIED:
                return
            raise CgroupError(f"cannot move process {pid} into {self.dir}: "
                              f"{_fs.why(err)}") from None

    def pids(self) -> list[int]:
        return _fs.procs(self.dir) if self.paths else []

    def birth_places(self) -> tuple[str | None, list[str]]:
        return (self.dir if self.paths else None), []

    def freeze(self) -> None:
        if not _fs.exists(self.dir, "cgroup.freeze"):
            raise CgroupError(f"pause: {self.dir} has no cgroup.freeze (kernel too old?)")
        _fs.write(self.dir, "cgroup.freeze", 1, "pause")
        if not _fs.wait_until(self.is_frozen, 5.0):
            _fs.write(self.dir, "cgroup.freeze", 0, "pause")
            raise CgroupError(f"pause: {self.dir} did not freeze in time")

    def thaw(self) -> None:
        _fs.write(self.dir, "cgroup.freeze", 0, "resume")
        if not _fs.wait_until(lambda: not self.is_frozen(), 5.0):
            raise CgroupError(f"resume: {self.dir} did not thaw in time")

    def is_frozen(self) -> bool:
        return _fs.read_keyed(self.dir, "cgroup.events").get("frozen") == 1

    def _populated(self) -> bool:
        return _fs.read_keyed(self.dir, "cgroup.events").get("populated") == 1

    def kill_all(self, signal: int) -> None:
        if signal == 9 and _fs.exists(self.dir, "cgroup.kill"):
            _fs.write(self.dir, "cgroup.kill", 1, "kill")
            return
        super().kill_all(signal)

    def _kill_pids_fast(self) -> None:
        if _fs.exists(self.dir, "cgroup.kill"):
            try:
                _fs.write(self.dir, "cgroup.kill", 1, "kill")
                return
            except CgroupError:
                pass
        super()._kill_pids_fast()

    # -- resources -----------------------------------------------------------
    def _write(self, name: str, value: str | int, field: str) -> None:
        try:
            _fs.write(self.dir, name, value, field)
        except _fs.WriteError as err:
            if err.errno != errno.ENOENT:
                raise
            controller = name.split(".", 1)[0]
            raise CgroupError(
                f"{field}: the {controller} controller is not enabled for {self.dir} "
                "(not available, or bound to cgroup v1)") from None

    def apply(self, resources: dict[str, Any], *, update: bool = False) -> None:
        check_resources(resources)
        if not resources:
            return
        if not self.paths:
            raise CgroupError(f"{R}: cannot set limits: the cgroup was not created "
                              "(cgroups not delegated to this user)")
        rules = resources.get("devices")
        if rules and not update:  # set at create only, as by runc
            _devices.check_v2(_devices.parse(rules))
        cpu = section(resources, "cpu")
        for key in ("cpus", "mems"):
            if cpu.get(key):
                self._write(f"cpuset.{key}", cpu[key], f"{R}.cpu.{key}")
        self._memory(section(resources, "memory"), update)
        self._cpu(cpu)
        limit = section(resources, "pids").get("limit")
        if limit:
            self._write("pids.max", limit if limit > 0 else "max", f"{R}.pids.limit")
        self._io(section(resources, "blockIO"))
        for i, item in enumerate(section(resources, "hugepageLimits", list)):
            size, value = item["pageSize"], _max(item["limit"])
            self._write(f"hugetlb.{size}.max", value, f"{R}.hugepageLimits[{i}]")
            if _fs.exists(self.dir, f"hugetlb.{size}.rsvd.max"):
                self._write(f"hugetlb.{size}.rsvd.max", value, f"{R}.hugepageLimits[{i}]")
        net = section(resources, "network")
        if net.get("classID") is not None or net.get("priorities"):
            raise CgroupError(f"{R}.network: net_cls and net_prio do not exist on cgroup v2 "
                              "(use eBPF or nftables socket cgroup matching instead)")
        for key, value in section(resources, "unified").items():
            self._write(key, value, f"{R}.unified.{key}")

    def _memory(self, mem: dict[str, Any], update: bool) -> None:
        f = f"{R}.memory"
        limit, swap = mem.get("limit") or 0, mem.get("swap") or 0
        if limit or swap:
            if limit > 0 and mem.get("checkBeforeUpdate") and update:
                usage = _fs.read_int(self.dir, "memory.current")
                if usage > limit:
                    raise CgroupError(f"{f}.limit: {limit} is below the current usage "
                                      f"({usage} bytes)")
            v2_swap = swap_to_v2(swap, limit)  # swap == limit gives 0: no swap at all
            if v2_swap is not None:
                try:
                    _fs.write(self.dir, "memory.swap.max", _max(v2_swap), f"{f}.swap")
                except _fs.WriteError as err:
                    # No swap controller here: "max" and "none" are already true.
                    if not (err.errno == errno.ENOENT and v2_swap in (-1, 0)):
                        raise
            if limit:
                self._write("memory.max", _max(limit), f"{f}.limit")
        if mem.get("reservation"):
            self._write("memory.low", _max(mem["reservation"]), f"{f}.reservation")
        # kernel, kernelTCP, swappiness, disableOOMKiller and useHierarchy have no v2
        # file; runc ignores them on v2 and so does flatrun.

    def _cpu(self, cpu: dict[str, Any]) -> None:
        f = f"{R}.cpu"
        if cpu.get("realtimeRuntime") or cpu.get("realtimePeriod"):
            raise CgroupError(f"{f}.realtimeRuntime: realtime budgets do not exist on "
                              "cgroup v2")
        idle = cpu.get("idle")
        if idle is not None:
            self._write("cpu.idle", idle, f"{f}.idle")
        if cpu.get("shares") and not idle:
            self._write("cpu.weight", shares_to_weight(cpu["shares"]), f"{f}.shares")
        quota, period = cpu.get("quota") or 0, cpu.get("period") or 0
        if quota or period:
            text = str(quota) if quota > 0 else "max"
            if period:
                text += f" {period}"
            self._write("cpu.max", text, f"{f}.quota")
        if cpu.get("burst") is not None:
            self._write("cpu.max.burst", cpu["burst"], f"{f}.burst")

    def _io(self, blk: dict[str, Any]) -> None:
        f = f"{R}.blockIO"
        bfq = _fs.exists(self.dir, "io.bfq.weight")
        if blk.get("weight"):
            if bfq:
                self._write("io.bfq.weight", blk["weight"], f"{f}.weight")
            else:
                self._write("io.weight", blkio_weight_to_io(blk["weight"]), f"{f}.weight")
        if blk.get("leafWeight"):
            raise CgroupError(f"{f}.leafWeight: does not exist on cgroup v2")
        for i, dev in enumerate(blk.get("weightDevice") or []):
            if dev.get("weight"):
                if not bfq:
                    raise CgroupError(f"{f}.weightDevice[{i}]: per-device weights need "
                                      "the BFQ I/O scheduler on cgroup v2")
                self._write("io.bfq.weight", f"{dev['major']}:{dev['minor']} "
                            f"{dev['weight']}", f"{f}.weightDevice[{i}]")
        for key, name in zip(THROTTLE_KEYS, ("rbps", "wbps", "riops", "wiops"), strict=True):
            for i, dev in enumerate(blk.get(key) or []):
                rate = dev["rate"] or "max"  # 0 removes the limit, as on v1
                self._write("io.max", f"{dev['major']}:{dev['minor']} {name}={rate}",
                            f"{f}.{key}[{i}]")

    # -- statistics ----------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        from flatstack.runtime.cgroups import _stats

        result = _stats.empty()
        d = self.dir
        if not os.path.isdir(d):
            return result
        cpu = _fs.read_keyed(d, "cpu.stat")
        result["cpu"] = {
            "usage": _stats.cpu_usage(cpu.get("usage_usec", 0) * 1000, [],
                                      cpu.get("system_usec", 0) * 1000,
                                      cpu.get("user_usec", 0) * 1000),
            "throttling": _stats.throttling(cpu.get("nr_periods", 0),
                                            cpu.get("nr_throttled", 0),
                                            cpu.get("throttled_usec", 0) * 1000)}
        if (pressure := _stats.psi(d, "cpu.pressure")) is not None:
            result["cpu"]["psi"] = pressure
        if _fs.exists(d, "cpuset.cpus.effective"):
            result["cpuset"] = _stats.cpuset_entry(
                {"cpus": _fs.read(d, "cpuset.cpus.effective") or "",
                 "mems": _fs.read(d, "cpuset.mems.effective") or ""})
        if _fs.exists(d, "memory.current"):
            raw = _fs.read_keyed(d, "memory.stat")
            events = _fs.read_keyed(d, "memory.events")
            usage = _stats.memory_entry(
                _fs.read_int(d, "memory.max", _stats.MAX_UINT64),
                _fs.read_int(d, "memory.current"), _fs.read_int(d, "memory.peak"),
                events.get("max", 0))
            swap_limit = _fs.read_int(d, "memory.swap.max", _stats.MAX_UINT64)
            if swap_limit != _stats.MAX_UINT64 and usage["limit"] != _stats.MAX_UINT64:
                swap_limit += usage["limit"]  # v1's memory+swap, as runc reports it
            swap = _stats.memory_entry(
                swap_limit, _fs.read_int(d, "memory.swap.current") + usage.get("usage", 0),
                0, 0)
            result["memory"] = _stats.omit({
                "cache": raw.get("file", 0), "usage": usage, "swap": swap,
                "kernel": _stats.memory_entry(), "kernelTCP": _stats.memory_entry(),
                "raw": raw}, "cache", "raw")
            if (pressure := _stats.psi(d, "memory.pressure")) is not None:
                result["memory"]["psi"] = pressure
        if _fs.exists(d, "pids.current"):
            result["pids"] = _stats.pids_entry(_fs.read_int(d, "pids.current"),
                                               _fs.read_int(d, "pids.max"))
        blkio: dict[str, Any] = _stats.io_stat_entries(_fs.read(d, "io.stat"))
        if (pressure := _stats.psi(d, "io.pressure")) is not None:
            blkio["psi"] = pressure
        result["blkio"] = blkio
        result["hugetlb"] = {
            s: _stats.hugetlb_entry(_fs.read_int(d, f"hugetlb.{s}.current"), 0,
                                    _fs.read_keyed(d, f"hugetlb.{s}.events").get("max", 0))
            for s in _fs.hugepage_sizes() if _fs.exists(d, f"hugetlb.{s}.current")}
        return result

    def oom_kill_count(self) -> int:
        return _fs.read_keyed(self.dir, "memory.events").get("oom_kill", 0)

    # -- persistence ---------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "root": self.root, "path": self.path, "dir": self.dir,
                "created": list(self.created), "rootless": self.rootless,
                "active": bool(self.paths)}

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> V2Manager:
        manager = cls(data["root"], data.get("path", ""), directory=data.get("dir"),
                      created=list(data.get("created") or []),
                      rootless=bool(data.get("rootless")))
        if not data.get("active", True):
            manager.paths = {}
        return manager
