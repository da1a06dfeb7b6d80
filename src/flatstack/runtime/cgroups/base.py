"""What every cgroup manager offers, the checks on linux.resources they share, and
the parts of destroy/kill that do not depend on the cgroup version."""

from __future__ import annotations

import errno
import os
import time

from flatstack.errors import CgroupError
from flatstack.runtime.cgroups import _fs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

R = "linux.resources"
MIN_MEMORY = 6 * 1024 * 1024  # below this a container cannot even exec its init
DESTROY_TIMEOUT = 2.0
SIGKILL = 9


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def num(section: dict[str, Any], key: str, field: str, *, low: int = 0,
        high: int | None = None, unlimited: bool = False) -> int | None:
    """An optional integer field; ``unlimited`` also allows -1."""
    value = section.get(key)
    if value is None:
        return None
    if not _is_int(value):
        raise CgroupError(f"{field}.{key}: must be an integer, got {value!r}")
    if unlimited and value == -1:
        return value
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        extra = " (or -1 for unlimited)" if unlimited else ""
        raise CgroupError(f"{field}.{key}: must be {bounds}{extra}, got {value}")
    return value


def flag(section: dict[str, Any], key: str, field: str) -> bool | None:
    value = section.get(key)
    if value is not None and not isinstance(value, bool):
        raise CgroupError(f"{field}.{key}: must be true or false, got {value!r}")
    return value


def section(resources: dict[str, Any], key: str, kind: type = dict) -> Any:
    value = resources.get(key)
    if value is None:
        return kind()
    if not isinstance(value, kind):
        what = "an object" if kind is dict else "a list"
        raise CgroupError(f"{R}.{key}: must be {what}")
    return value


def room_for_a_helper(resources: dict[str, Any]) -> bool:
    """Whether a short-lived helper process (stage one) may sit in the
    cgroup beside the init: not under a pids limit of 1."""
    limit = (resources.get("pids") or {}).get("limit")
    return not (isinstance(limit, int) and 0 < limit < 2)


def check_resources(resources: Any) -> None:
    """Types and ranges of linux.resources, before anything is written."""
    if not isinstance(resources, dict):
        raise CgroupError(f"{R}: must be an object")
    mem = section(resources, "memory")
    f = f"{R}.memory"
    limit = num(mem, "limit", f, unlimited=True)
    if limit is not None and 0 < limit < MIN_MEMORY:
        raise CgroupError(f"{f}.limit: must be at least {MIN_MEMORY} bytes, got {limit}")
    for key in ("reservation", "swap", "kernel", "kernelTCP"):
        num(mem, key, f, unlimited=True)
    swap = mem.get("swap")
    if swap and swap > 0 and limit and limit > 0 and swap < limit:
        raise CgroupError(f"{f}.swap: memory+swap limit {swap} must be at least "
                          f"{f}.limit {limit}")
    num(mem, "swappiness", f)
    for key in ("disableOOMKiller", "useHierarchy", "checkBeforeUpdate"):
        flag(mem, key, f)
    cpu = section(resources, "cpu")
    f = f"{R}.cpu"
    num(cpu, "shares", f)
    num(cpu, "quota", f, unlimited=True)
    num(cpu, "burst", f)
    num(cpu, "period", f)
    num(cpu, "realtimeRuntime", f, unlimited=True)
    num(cpu, "realtimePeriod", f)
    num(cpu, "idle", f, high=1)
    for key in ("cpus", "mems"):
        if cpu.get(key) is not None and not isinstance(cpu[key], str):
            raise CgroupError(f"{f}.{key}: must be a string such as \"0-3,6\"")
    num(section(resources, "pids"), "limit", f"{R}.pids", low=-(1 << 63))
    _check_block_io(section(resources, "blockIO"))
    for i, item in enumerate(section(resources, "hugepageLimits", list)):
        where = f"{R}.hugepageLimits[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("pageSize"), str):
            raise CgroupError(f"{where}.pageSize: required, a size such as \"2MB\"")
        if item["pageSize"] not in _fs.hugepage_sizes():
            raise CgroupError(f"{where}.pageSize: {item['pageSize']!r} is not a huge page "
                              f"size of this kernel ({', '.join(_fs.hugepage_sizes()) or 'none'})")
        if num(item, "limit", where, unlimited=True) is None:
            raise CgroupError(f"{where}.limit: required")
    net = section(resources, "network")
    num(net, "classID", f"{R}.network")
    for i, prio in enumerate(section(net, "priorities", list)):
        where = f"{R}.network.priorities[{i}]"
        if not isinstance(prio, dict) or not isinstance(prio.get("name"), str):
            raise CgroupError(f"{where}.name: required, an interface name")
        if num(prio, "priority", where) is None:
            raise CgroupError(f"{where}.priority: required")
    unified = section(resources, "unified")
    for key, value in unified.items():
        if (not isinstance(key, str) or "/" in key or "." not in key.strip(".")
                or key in ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control",
                           "cgroup.kill", "cgroup.freeze", "cgroup.type")):
            raise CgroupError(f"{R}.unified: {key!r} is not a resource file this "
                              "runtime lets a config write")
        if not isinstance(value, str):
            raise CgroupError(f"{R}.unified.{key}: the value must be a string")
    if section(resources, "rdma"):
        raise CgroupError(f"{R}.rdma: the rdma controller is not supported")


def _check_block_io(blk: dict[str, Any]) -> None:
    f = f"{R}.blockIO"
    weight = num(blk, "weight", f, high=1000)
    if weight not in (None, 0) and weight < 10:
        raise CgroupError(f"{f}.weight: must be between 10 and 1000, got {weight}")
    num(blk, "leafWeight", f, high=1000)
    for i, dev in enumerate(section(blk, "weightDevice", list)):
        where = f"{f}.weightDevice[{i}]"
        _device_numbers(dev, where)
        num(dev, "weight", where, high=1000)
        num(dev, "leafWeight", where, high=1000)
    for key in THROTTLE_KEYS:
        for i, dev in enumerate(section(blk, key, list)):
            where = f"{f}.{key}[{i}]"
            _device_numbers(dev, where)
            if num(dev, "rate", where) is None:
                raise CgroupError(f"{where}.rate: required")


def _device_numbers(dev: Any, where: str) -> None:
    if not isinstance(dev, dict):
        raise CgroupError(f"{where}: must be an object")
    for key in ("major", "minor"):
        if num(dev, key, where) is None:
            raise CgroupError(f"{where}.{key}: required")


THROTTLE_KEYS = ("throttleReadBpsDevice", "throttleWriteBpsDevice",
                 "throttleReadIOPSDevice", "throttleWriteIOPSDevice")


def shares_to_weight(shares: int) -> int:
    """cpu.shares (2..262144) to cpu.weight (1..10000), as runc converts."""
    if shares == 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_weight_to_io(weight: int) -> int:
    """blkio.weight (10..1000) to io.weight (1..10000), as runc converts."""
    if weight == 0:
        return 0
    return 1 + (weight - 10) * 9999 // 990


def swap_to_v2(swap: int | None, limit: int | None) -> int | None:
    """v1's memory+swap limit as v2's swap-only memory.swap.max (-1: max)."""
    swap = swap or 0
    limit = limit or 0
    if limit == -1 and swap == 0:
        return -1  # unlimited memory with swap unset: unlimited swap too, as on v1
    if swap in (-1, 0):
        return swap if swap else None
    if limit in (0, -1):
        raise CgroupError(f"{R}.memory.swap: cannot limit swap without "
                          f"{R}.memory.limit on cgroup v2")
    return swap - limit


class CgroupManager:
    """A container's cgroup: one directory per hierarchy (``paths``), created by
    :meth:`create`, configured by :meth:`apply`, removed by :meth:`destroy`.

    ``paths`` maps a hierarchy's name (``cpu``, ``memory``, ``systemd``...; ``""`` for
    cgroup2) to the container's directory in it; the rootfs code bind-mounts them.
    """

    kind = ""
    path: str
    paths: dict[str, str]
    created: list[str]
    rootless: bool

    # -- implemented per version --------------------------------------------
    def create(self) -> None:
        """Make the directories (recording which ones did not exist)."""
        raise NotImplementedError

    def apply(self, resources: dict[str, Any], *, update: bool = False) -> None:
        """Write linux.resources (checked first, then written; on a failure half way
        the caller calls :meth:`destroy`).  ``update`` is set by :meth:`update`."""
        raise NotImplementedError

    def add_pid(self, pid: int) -> None:
        """Move a process (all its threads) into the cgroup in every hierarchy."""
        raise NotImplementedError

    def pids(self) -> list[int]:
        """Every process in the cgroup and its descendants."""
        raise NotImplementedError

    def freeze(self) -> None:
        raise NotImplementedError

    def thaw(self) -> None:
        raise NotImplementedError

    def is_frozen(self) -> bool:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        """runc's ``events --stats`` data object (types.Stats)."""
        raise NotImplementedError

    def oom_kill_count(self) -> int:
        raise NotImplementedError

    def to_state(self) -> dict[str, Any]:
        """A JSON- and marshal-serialisable description for :func:`manager_from_state`."""
        raise NotImplementedError

    def _kill_pids_fast(self) -> None:
        """Send SIGKILL to everything in the cgroup, the cheapest way available."""
        self._signal(self.pids(), SIGKILL)

    def birth_places(self) -> tuple[str | None, list[str]]:
        """Where a new process can enter the cgroup without a ``cgroup.procs`` write
        (which waits for an RCU grace period): the cgroup2 directory to be born in
        (``clone3(CLONE_INTO_CGROUP)``) and the v1 directories a single-threaded
        process joins itself by writing ``0`` to ``tasks`` (the kernel skips the
        global threadgroup lock when a thread moves only itself)."""
        raise NotImplementedError

    # -- shared --------------------------------------------------------------

    def update(self, resources: dict[str, Any]) -> None:
        """``flatrun update``: the same writes as :meth:`apply`."""
        self.apply(resources, update=True)

    def exists(self) -> bool:
        return any(os.path.isdir(p) for p in self.paths.values())

    def writable(self) -> bool:
        """Whether this user can manage the cgroup (false when rootless without
        delegation)."""
        return bool(self.paths)

    def kill_all(self, signal: int) -> None:
        """Signal every process: freeze, signal, thaw (as runc's signalAllProcesses)."""
        try:
            self.freeze()
        except CgroupError:
            self._signal(self.pids(), signal)
            return
        try:
            self._signal(self.pids(), signal)
        finally:
            self.thaw()

    @staticmethod
    def _signal(pids: list[int], signal: int) -> None:
        for pid in pids:
            try:
                os.kill(pid, signal)
            except ProcessLookupError:
                pass

    def destroy(self) -> None:
        """Kill what is left, wait (bounded) until empty, then remove the container's
        directories and the parents this manager created.  Idempotent."""
        deadline = time.monotonic() + DESTROY_TIMEOUT
        leaves = list(self.paths.values())
        if self.exists() and self.pids():
            try:
                if self.is_frozen():
                    self.thaw()
            except CgroupError:
                pass
            self._kill_pids_fast()
            delay = 0.0002
            while (left := self.pids()) and time.monotonic() < deadline:
                self._signal(left, SIGKILL)
                time.sleep(delay)
                delay = min(delay * 2, 0.01)
        failed: list[str] = []
        for leaf in leaves:
            for directory in [*_fs.subdirs_bottom_up(leaf), leaf]:
                err = self._rmdir_until(directory, deadline)
                if err:
                    failed.append(f"{directory}: {os.strerror(err).lower()}")
        _fs.remove_parents(self.created, leaves)
        if failed:
            raise CgroupError(f"cannot remove cgroup {'; '.join(failed)}")

    def _rmdir_until(self, directory: str, deadline: float) -> int:
        delay = 0.0002
        while True:
            err = _fs.rmdir(directory)
            if err not in (errno.EBUSY, errno.ENOTEMPTY) or time.monotonic() > deadline:
                return err
            self._signal(_fs.procs(directory), SIGKILL)
            time.sleep(delay)
            delay = min(delay * 2, 0.01)

    def _check_leaf_empty(self, directory: str) -> None:
        """A container needs its own cgroup: refuse one that already has processes."""
        pids = _fs.procs(directory)
        if pids:
            raise CgroupError(f"linux.cgroupsPath: {directory} already has "
                              f"{len(pids)} process(es); a container needs its own cgroup")
