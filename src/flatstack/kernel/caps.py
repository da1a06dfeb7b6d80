"""Capabilities: the name table, capget/capset, the bounding and ambient sets.

Sets are ``set[int]`` of capability numbers; ``*_mask`` values are 64-bit ints.
Everything acts on the calling thread (the runtime's init is single-threaded).
"""

from __future__ import annotations

import ctypes

from flatstack.errors import ConfigError, KernelError
from flatstack.kernel.libc import libc, syscall
from flatstack.kernel.names import CAPABILITIES
from flatstack.kernel.proc import (
    PR_CAP_AMBIENT,
    PR_CAP_AMBIENT_CLEAR_ALL,
    PR_CAP_AMBIENT_RAISE,
    PR_CAPBSET_DROP,
    PR_CAPBSET_READ,
    prctl,
    set_keepcaps,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "CAPABILITIES", "CAP_NAMES", "SET_NAMES", "bounding", "capget", "capset", "clear_ambient",
    "current", "drop_bounding", "from_mask", "last_cap", "names_to_mask", "raise_ambient",
    "set_caps", "set_keepcaps", "to_mask",
]

CAP_NAMES: dict[int, str] = {v: k for k, v in CAPABILITIES.items()}
#: /proc/<pid>/status line -> set name.
SET_NAMES: dict[str, str] = {
    "CapInh": "inheritable", "CapPrm": "permitted", "CapEff": "effective",
    "CapBnd": "bounding", "CapAmb": "ambient",
}

_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_EINVAL = 22


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_last_cap: int | None = None


def last_cap() -> int:
    """The highest capability number this kernel knows (cached).

    Reads /proc/sys/kernel/cap_last_cap; without /proc, probes PR_CAPBSET_READ,
    which fails with EINVAL past the last capability.
    """
    global _last_cap
    if _last_cap is None:
        try:
            with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
                _last_cap = int(f.read())
        except (OSError, ValueError):
            cap = 0
            while libc.prctl(PR_CAPBSET_READ, cap + 1, 0, 0, 0) >= 0:
                cap += 1
            _last_cap = cap
    return _last_cap


def to_mask(caps: Iterable[int]) -> int:
    mask = 0
    for cap in caps:
        mask |= 1 << cap
    return mask


def from_mask(mask: int) -> set[int]:
    return {cap for cap in range(64) if mask >> cap & 1}


def names_to_mask(names: Iterable[str], field: str) -> set[int]:
    """Capability numbers for names; unknown names raise ConfigError(``field[i]``).

    Names this kernel does not know (number > last_cap) are skipped, as runc does.
    """
    top = last_cap()
    result: set[int] = set()
    for index, name in enumerate(names):
        number = CAPABILITIES.get(name) if isinstance(name, str) else None
        if number is None:
            raise ConfigError(f"{field}[{index}]", f'unknown capability "{name}"')
        if number <= top:
            result.add(number)
    return result


def capget(pid: int = 0) -> tuple[int, int, int]:
    """(effective, permitted, inheritable) masks of a thread (0 = the caller)."""
    header = _Header(_LINUX_CAPABILITY_VERSION_3, pid)
    data = (_Data * 2)()
    syscall("capget", ctypes.byref(header), data)
    return (data[0].effective | data[1].effective << 32,
            data[0].permitted | data[1].permitted << 32,
            data[0].inheritable | data[1].inheritable << 32)


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set the calling thread's effective, permitted and inheritable masks."""
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    for i in (0, 1):
        shift = 32 * i
        data[i].effective = effective >> shift & 0xFFFFFFFF
        data[i].permitted = permitted >> shift & 0xFFFFFFFF
        data[i].inheritable = inheritable >> shift & 0xFFFFFFFF
    syscall("capset", ctypes.byref(header), data)


def set_caps(effective: Iterable[int], permitted: Iterable[int],
             inheritable: Iterable[int]) -> None:
    """capset from sets of capability numbers."""
    capset(to_mask(effective), to_mask(permitted), to_mask(inheritable))


def in_bounding(cap: int) -> bool:
    return prctl(PR_CAPBSET_READ, cap) == 1


def bounding() -> set[int]:
    """The calling thread's bounding set, read with prctl (no /proc needed)."""
    return {cap for cap in range(last_cap() + 1) if in_bounding(cap)}


def drop_bounding(keep: Iterable[int]) -> None:
    """Drop every capability not in ``keep`` from the bounding set (needs CAP_SETPCAP).

    Capabilities already absent are left alone, so a host whose bounding set
    lacks some (CAP_SYS_RESOURCE here) is fine.
    """
    keep = set(keep)
    for cap in range(last_cap() + 1):
        if cap in keep or not in_bounding(cap):
            continue
        try:
            prctl(PR_CAPBSET_DROP, cap)
        except KernelError as err:
            if err.errno != _EINVAL:
                raise KernelError("prctl", err.errno,
                                  f"PR_CAPBSET_DROP {CAP_NAMES.get(cap, cap)}") from None


def clear_ambient() -> None:
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


def raise_ambient(caps: Iterable[int]) -> None:
    """PR_CAP_AMBIENT_RAISE each cap (each must be permitted and inheritable)."""
    for cap in sorted(caps):
        try:
            prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)
        except KernelError as err:
            raise KernelError("prctl", err.errno,
                              f"PR_CAP_AMBIENT_RAISE {CAP_NAMES.get(cap, cap)}") from None


def current(pid: int | str = "thread-self") -> dict[str, set[int]]:
    """The five sets (effective, permitted, inheritable, bounding, ambient) from
    /proc/<pid>/status; the default is the calling thread."""
    result: dict[str, set[int]] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            name = SET_NAMES.get(key)
            if name is not None:
                result[name] = from_mask(int(value, 16))
    return result
