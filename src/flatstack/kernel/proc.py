"""Per-process kernel attributes: prctl flags, rlimits, I/O and CPU scheduling,
personality, OOM score, CPU affinity and close-on-exec sweeping.

Everything here acts on the calling process (or thread) and is cheap to import:
only ``os``, ``struct`` and :mod:`flatstack.kernel.libc`.
"""

from __future__ import annotations

import os
import struct

from flatstack.errors import FlatstackError, KernelError
from flatstack.kernel.libc import fsencode, syscall, try_syscall
from flatstack.kernel.names import RLIMITS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable


PR_SET_PDEATHSIG = 1
PR_GET_PDEATHSIG = 2
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_GET_KEEPCAPS = 7
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_GET_NAME = 16
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_IS_SET = 1
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_LOWER = 3
PR_CAP_AMBIENT_CLEAR_ALL = 4

CLOSE_RANGE_CLOEXEC = 1 << 2

RLIMIT_NAMES: dict[int, str] = {v: k for k, v in RLIMITS.items()}
#: The runtime-spec's "unlimited" (uint64 max); anything >= 2**63 means infinity here.
RLIM_INFINITY = 0xFFFFFFFFFFFFFFFF

IOPRIO_WHO_PROCESS = 1
IOPRIO_CLASS_SHIFT = 13
IOPRIO_CLASSES: dict[str, int] = {
    "IOPRIO_CLASS_NONE": 0, "IOPRIO_CLASS_RT": 1, "IOPRIO_CLASS_BE": 2, "IOPRIO_CLASS_IDLE": 3,
}

SCHED_POLICIES: dict[str, int] = {
    "SCHED_OTHER": 0, "SCHED_FIFO": 1, "SCHED_RR": 2, "SCHED_BATCH": 3,
    "SCHED_ISO": 4, "SCHED_IDLE": 5, "SCHED_DEADLINE": 6,
}
SCHED_FLAGS: dict[str, int] = {
    "SCHED_FLAG_RESET_ON_FORK": 0x01, "SCHED_FLAG_RECLAIM": 0x02,
    "SCHED_FLAG_DL_OVERRUN": 0x04, "SCHED_FLAG_KEEP_POLICY": 0x08,
    "SCHED_FLAG_KEEP_PARAMS": 0x10, "SCHED_FLAG_UTIL_CLAMP_MIN": 0x20,
    "SCHED_FLAG_UTIL_CLAMP_MAX": 0x40,
}

#: personality(2) execution domains and flags (linux/personality.h).
PERSONALITY_DOMAINS: dict[str, int] = {"LINUX": 0x0000, "LINUX32": 0x0008}
PERSONALITY_FLAGS: dict[str, int] = {
    "UNAME26": 0x0020000, "ADDR_NO_RANDOMIZE": 0x0040000, "FDPIC_FUNCPTRS": 0x0080000,
    "MMAP_PAGE_ZERO": 0x0100000, "ADDR_COMPAT_LAYOUT": 0x0200000,
    "READ_IMPLIES_EXEC": 0x0400000, "ADDR_LIMIT_32BIT": 0x0800000,
    "SHORT_INODE": 0x1000000, "WHOLE_SECONDS": 0x2000000, "STICKY_TIMEOUTS": 0x4000000,
    "ADDR_LIMIT_3GB": 0x8000000,
}
PERSONALITY_QUERY = 0xFFFFFFFF

def prctl(option: int, arg2: int | bytes | bytearray = 0, arg3: int = 0, arg4: int = 0,
          arg5: int = 0) -> int:
    """prctl(2), raising KernelError on failure (a buffer ``arg2`` goes by address)."""
    return syscall("prctl", option, arg2, arg3, arg4, arg5, detail=str(option))


# -- prctl flags -------------------------------------------------------------


def set_no_new_privs() -> None:
    """PR_SET_NO_NEW_PRIVS: execve can never grant privileges again."""
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def get_no_new_privs() -> bool:
    return prctl(PR_GET_NO_NEW_PRIVS) == 1


def set_dumpable(dumpable: bool) -> None:
    """PR_SET_DUMPABLE (also governs who may ptrace or open /proc/<pid>/*)."""
    prctl(PR_SET_DUMPABLE, 1 if dumpable else 0)


def get_dumpable() -> bool:
    return prctl(PR_GET_DUMPABLE) == 1


def set_pdeathsig(sig: int) -> None:
    """Signal to receive when the parent thread dies (0 clears it)."""
    prctl(PR_SET_PDEATHSIG, sig)


def get_pdeathsig() -> int:
    value = bytearray(4)
    prctl(PR_GET_PDEATHSIG, value)
    return int.from_bytes(value, "little", signed=True)


def set_child_subreaper(on: bool = True) -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0)


def set_keepcaps(keep: bool) -> None:
    """PR_SET_KEEPCAPS: keep permitted caps across a switch away from uid 0."""
    prctl(PR_SET_KEEPCAPS, 1 if keep else 0)


def set_name(comm: str) -> None:
    """The thread's comm (truncated by the kernel to 15 bytes)."""
    prctl(PR_SET_NAME, (fsencode(comm) or b"")[:15])  # bytes end in a NUL for C


# -- rlimits -----------------------------------------------------------------


_RLIMIT = struct.Struct("=2Q")  # struct rlimit64: soft, hard


def _rlim(value: int) -> int:
    return RLIM_INFINITY if value >= 1 << 63 or value < 0 else value


def getrlimit(res: int) -> tuple[int, int]:
    """(soft, hard); unlimited is RLIM_INFINITY (2**64 - 1)."""
    old = bytearray(_RLIMIT.size)
    syscall("prlimit64", 0, res, None, old, detail=str(res))
    soft, hard = _RLIMIT.unpack(old)
    return soft, hard


def set_rlimits(limits: Iterable[tuple[int, int, int]], field: str = "process.rlimits") -> None:
    """prlimit(self) for each ``(resource, soft, hard)``; values >= 2**63 mean unlimited.

    A failure names ``field[i]``, the limit and the current values (raising a
    hard limit needs CAP_SYS_RESOURCE, which a host may not grant at all).
    """
    for index, (res, soft, hard) in enumerate(limits):
        if _rlim(soft) > _rlim(hard):
            why = "the soft limit exceeds the hard limit"
        else:
            result = try_syscall("prlimit64", 0, res, _RLIMIT.pack(_rlim(soft), _rlim(hard)),
                                 None)
            if result == 0:
                continue
            why = os.strerror(-result).lower()
        name = RLIMIT_NAMES.get(res, str(res))
        cur_soft, cur_hard = getrlimit(res)
        raise FlatstackError(
            f"{field}[{index}]: cannot set {name} to soft={_show(soft)} hard={_show(hard)}"
            f" (currently soft={_show(cur_soft)} hard={_show(cur_hard)}; raising the hard"
            f" limit needs CAP_SYS_RESOURCE): {why}")


def _show(value: int) -> str:
    return "unlimited" if value < 0 or value >= 1 << 63 else str(value)


# -- I/O priority, scheduler, personality -------------------------------------


def ioprio_value(class_name: str, priority: int) -> int:
    """The ioprio word for a class name (IOPRIO_CLASS_*) and level 0-7."""
    cls = IOPRIO_CLASSES.get(class_name)
    if cls is None:
        raise ValueError(f'unknown I/O priority class "{class_name}"')
    if not 0 <= priority <= 7:
        raise ValueError(f"I/O priority must be between 0 and 7, got {priority}")
    return (cls << IOPRIO_CLASS_SHIFT) | priority


def ioprio_set(class_name: str, priority: int, pid: int = 0) -> None:
    """ioprio_set(IOPRIO_WHO_PROCESS, pid) (0 = the calling process)."""
    syscall("ioprio_set", IOPRIO_WHO_PROCESS, pid, ioprio_value(class_name, priority),
            detail=class_name)


def ioprio_get(pid: int = 0) -> tuple[int, int]:
    """(class, level) of a process."""
    value = try_syscall("ioprio_get", IOPRIO_WHO_PROCESS, pid)
    if value < 0:
        raise KernelError("ioprio_get", -value)
    return value >> IOPRIO_CLASS_SHIFT, value & 0x1FFF


_SCHED_ATTR = struct.Struct("=IIQiIQQQII")


class SchedAttr:
    """struct sched_attr (SCHED_ATTR_SIZE_VER1, 56 bytes)."""

    FIELDS = ("size", "sched_policy", "sched_flags", "sched_nice", "sched_priority",
              "sched_runtime", "sched_deadline", "sched_period", "sched_util_min",
              "sched_util_max")
    SIZE = _SCHED_ATTR.size
    __slots__ = FIELDS

    def __init__(self, *values: int) -> None:
        for name, value in zip(self.FIELDS, values or (self.SIZE,) + (0,) * 9, strict=True):
            setattr(self, name, value)

    def pack(self) -> bytes:
        """The struct's bytes."""
        return _SCHED_ATTR.pack(*(getattr(self, name) for name in self.FIELDS))

    @classmethod
    def unpack(cls, data: bytes | bytearray) -> SchedAttr:
        return cls(*_SCHED_ATTR.unpack(data))


def sched_attr(policy: str, nice: int = 0, priority: int = 0, flags: Iterable[str] = (),
               runtime: int = 0, deadline: int = 0, period: int = 0) -> SchedAttr:
    """Build a sched_attr from runtime-spec names; ValueError on unknown names."""
    number = SCHED_POLICIES.get(policy)
    if number is None:
        raise ValueError(f'unknown scheduling policy "{policy}"')
    mask = 0
    for flag in flags:
        bit = SCHED_FLAGS.get(flag)
        if bit is None:
            raise ValueError(f'unknown scheduler flag "{flag}"')
        mask |= bit
    return SchedAttr(SchedAttr.SIZE, number, mask, nice, priority, runtime, deadline, period,
                     0, 0)


def sched_setattr(policy: str, nice: int = 0, priority: int = 0, flags: Iterable[str] = (),
                  runtime: int = 0, deadline: int = 0, period: int = 0, pid: int = 0) -> None:
    """sched_setattr(2) on the calling thread (or ``pid``)."""
    attr = sched_attr(policy, nice, priority, flags, runtime, deadline, period)
    result = try_syscall("sched_setattr", pid, attr.pack(), 0)
    if result < 0:
        raise KernelError("sched_setattr", -result, policy)


def sched_getattr(pid: int = 0) -> SchedAttr:
    buf = bytearray(SchedAttr.SIZE)
    result = try_syscall("sched_getattr", pid, buf, len(buf), 0)
    if result < 0:
        raise KernelError("sched_getattr", -result)
    return SchedAttr.unpack(buf)


def personality_value(domain: str, flags: Iterable[str] = ()) -> int:
    """The personality word for a domain (LINUX, LINUX32) and flag names."""
    value = PERSONALITY_DOMAINS.get(domain)
    if value is None:
        raise ValueError(f'unknown personality domain "{domain}"')
    for flag in flags:
        bit = PERSONALITY_FLAGS.get(flag)
        if bit is None:
            raise ValueError(f'unknown personality flag "{flag}"')
        value |= bit
    return value


def personality(domain: str, flags: Iterable[str] = ()) -> int:
    """Set the execution domain; returns the previous personality."""
    return syscall("personality", personality_value(domain, flags), detail=domain)


def get_personality() -> int:
    return syscall("personality", PERSONALITY_QUERY)


# -- OOM score, CPU affinity ---------------------------------------------------


def set_oom_score_adj(pid: int | str, value: int) -> None:
    """Write /proc/<pid>/oom_score_adj (``pid`` may be "self").

    Lowering it below the process's floor needs CAP_SYS_RESOURCE (EACCES).
    """
    fd = os.open(f"/proc/{pid}/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, str(int(value)).encode())
    finally:
        os.close(fd)


def parse_cpu_list(text: str) -> set[int]:
    """"0-2,4" -> {0, 1, 2, 4}; ValueError on a malformed list."""
    result: set[int] = set()
    if not text.strip():
        raise ValueError("empty CPU list")
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise ValueError(f'invalid CPU list "{text}"')
        first, last = int(lo), int(hi) if dash else int(lo)
        if last < first:
            raise ValueError(f'invalid CPU range "{part.strip()}" in "{text}"')
        result.update(range(first, last + 1))
    return result


def set_cpu_affinity(cpus: str, pid: int = 0) -> None:
    """sched_setaffinity from a CPU list string like "0-1,3"."""
    os.sched_setaffinity(pid, parse_cpu_list(cpus))


# -- file descriptors ----------------------------------------------------------


def close_fds_from(first: int, keep: set[int] | frozenset[int] = frozenset(), *,
                   now: bool = False) -> None:
    """Mark every fd >= ``first`` close-on-exec (``now``: close it), except ``keep``.

    Uses close_range (Linux 5.11 for CLOSE_RANGE_CLOEXEC), else walks /proc/self/fd.
    """
    start = first
    for fd in [*sorted(k for k in keep if k >= first), None]:
        end = 0xFFFFFFFF if fd is None else fd - 1
        if end >= start:
            result = try_syscall("close_range", start, end,
                                 0 if now else CLOSE_RANGE_CLOEXEC)
            if result < 0:
                _cloexec_walk(start, end, now)
        if fd is not None:
            start = fd + 1


def _cloexec_walk(start: int, end: int, now: bool) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if start <= fd <= end:
            try:
                if now:
                    os.close(fd)
                else:
                    os.set_inheritable(fd, False)
            except OSError:
                pass


def setgroups_allowed() -> bool:
    """False when /proc/self/setgroups says "deny" (an unprivileged user namespace)."""
    try:
        with open("/proc/self/setgroups", "rb") as f:
            return f.read().strip() != b"deny"
    except OSError:
        return True
