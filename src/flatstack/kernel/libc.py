"""The C library handle, raw syscall access and errno checking."""

from __future__ import annotations

import ctypes
import os

from flatstack.errors import KernelError

libc = ctypes.CDLL(None, use_errno=True)

_MACHINE = os.uname().machine

# Syscall numbers that glibc 2.36 has no wrapper for (or where the wrapper is
# too new for Debian bookworm).  Numbers from 424 on are the same on every
# architecture (the syscall tables were unified in Linux 5.1); older ones are not.
_UNIFIED: dict[str, int] = {
    "pidfd_send_signal": 424, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "pidfd_open": 434, "clone3": 435, "close_range": 436,
    "openat2": 437, "pidfd_getfd": 438, "mount_setattr": 442, "landlock_create_ruleset": 444,
    "landlock_add_rule": 445, "landlock_restrict_self": 446,
}
_PER_ARCH: dict[str, dict[str, int]] = {
    "x86_64": {"pivot_root": 155, "setns": 308, "seccomp": 317, "ioprio_set": 251,
               "ioprio_get": 252, "capget": 125, "capset": 126, "personality": 135,
               "sched_setattr": 314, "sched_getattr": 315},
    "aarch64": {"pivot_root": 41, "setns": 268, "seccomp": 277, "ioprio_set": 30,
                "ioprio_get": 31, "capget": 90, "capset": 91, "personality": 92,
                "sched_setattr": 274, "sched_getattr": 275},
}

SYS: dict[str, int] = {**_UNIFIED, **_PER_ARCH.get(_MACHINE, _PER_ARCH["x86_64"])}

_syscall = libc.syscall
_syscall.restype = ctypes.c_long


def check(result: int, call: str, detail: str = "") -> int:
    """Raise :class:`KernelError` when a libc call returned -1."""
    if result == -1:
        raise KernelError(call, ctypes.get_errno(), detail)
    return result


def syscall(name: str, *args: object, detail: str = "") -> int:
    """Invoke a raw system call by name, raising on failure."""
    result = _syscall(ctypes.c_long(SYS[name]), *args)
    if result == -1:
        raise KernelError(name, ctypes.get_errno(), detail)
    return result


def errno_of(exc: BaseException) -> int:
    """The errno carried by an exception, or 0."""
    if isinstance(exc, KernelError):
        return exc.errno
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    return 0


def fsencode(path: str | bytes | None) -> bytes | None:
    """Encode a path for C, passing None through as NULL."""
    if path is None:
        return None
    return os.fsencode(path)
