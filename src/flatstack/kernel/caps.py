"""Capabilities: the name table, capget/capset, the bounding and ambient sets.

Sets are ``set[int]`` of capability numbers; ``*_mask`` values are 64-bit ints.
Everything acts on the calling thread (the runtime's init is single-threaded).
"""

from __future__ import annotations

import struct

from flatstack.errors import ConfigError, KernelError
from flatstack.kernel.libc import syscall, try_syscall
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


_HEADER = struct.Struct("=Ii")  # struct __user_cap_header_struct: version, pid
# Two struct __user_cap_data_struct (effective, permitted, inheritable): low, high words.
_DATA = struct.Struct("=6I")


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
            while try_syscall("prctl", PR_CAPBSET_READ, cap + 1, 0, 0, 0) >= 0:
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
    header = bytearray(_HEADER.pack(_LINUX_CAPABILITY_VERSION_3, pid))
    data = bytearray(_DATA.size)
    syscall("capget", header, data)
    eff0, prm0, inh0, eff1, prm1, inh1 = _DATA.unpack(data)
    return eff0 | eff1 << 32, prm0 | prm1 << 32, inh0 | inh1 << 32


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set the calling thread's effective, permitted and inheritable masks."""
    header = bytearray(_HEADER.pack(_LINUX_CAPABILITY_VERSION_3, 0))
    low, high = 0xFFFFFFFF, 32
    data = _DATA.pack(effective & low, permitted & low, inheritable & low,
                      effective >> high & low, permitted >> high & low,
                      inheritable >> high & low)
    syscall("capset", header, data)


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
