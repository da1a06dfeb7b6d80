"""prctl and friends: no_new_privs, dumpable, subreaper, fd sealing."""

from __future__ import annotations

import ctypes
import os

from flatstack.kernel.libc import check, libc, syscall

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

CLOSE_RANGE_CLOEXEC = 1 << 2

libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                       ctypes.c_ulong]


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """prctl(2), raising KernelError on failure."""
    return check(libc.prctl(option, arg2, arg3, arg4, arg5), "prctl", str(option))


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def get_no_new_privs() -> bool:
    return prctl(PR_GET_NO_NEW_PRIVS) == 1


def set_dumpable(dumpable: bool) -> None:
    prctl(PR_SET_DUMPABLE, 1 if dumpable else 0)


def set_pdeathsig(sig: int) -> None:
    prctl(PR_SET_PDEATHSIG, sig)


def set_child_subreaper() -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_keepcaps(keep: bool) -> None:
    prctl(PR_SET_KEEPCAPS, 1 if keep else 0)


def close_fds_from(first: int, keep: set[int]) -> None:
    """Mark every fd >= ``first`` close-on-exec, except those in ``keep``."""
    start = first
    for fd in [*sorted(k for k in keep if k >= first), None]:
        end = 0xFFFFFFFF if fd is None else fd - 1
        if end >= start:
            try:
                syscall("close_range", start, end, CLOSE_RANGE_CLOEXEC)
            except Exception:
                _cloexec_walk(start, end)
        if fd is not None:
            start = fd + 1


def _cloexec_walk(start: int, end: int) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if start <= fd <= end:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass
