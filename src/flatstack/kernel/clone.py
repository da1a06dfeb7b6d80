"""``fork`` into a cgroup: ``clone3(CLONE_INTO_CGROUP)`` for a Python process.

A child born in its cgroup costs no ``cgroup.procs`` write, and that write waits
for an RCU grace period (5-23 ms here, see docs/cgroups.md).  ``os.fork`` cannot
pass the flag, so this issues ``clone3`` itself and runs the interpreter's fork
bookkeeping around it (``PyOS_BeforeFork`` and the ``AfterFork`` pair, exactly
what ``os.fork`` does).  The C library's own fork handling (its thread id cache,
malloc locks held by other threads) is skipped, so this is only offered to a
single-threaded caller; the child should fork again (``os.fork``) before running
for long, as the runtime's stage one does.
"""

from __future__ import annotations

import ctypes
import os
import struct

from flatstack.kernel.libc import SYS

CLONE_INTO_CGROUP = 0x200000000
_SIGCHLD = 17
# struct clone_args up to .cgroup (CLONE_ARGS_SIZE_VER2): eleven u64 fields.
_ARGS = struct.Struct("=11Q")

_held = ctypes.PyDLL(None, use_errno=True)  # keeps the GIL across the call
_clone3 = _held.syscall
_clone3.restype = ctypes.c_long
_clone3.argtypes = (ctypes.c_long, ctypes.c_void_p, ctypes.c_size_t)
_api = ctypes.pythonapi


def single_threaded() -> bool:
    """Whether this process has one thread (the only case :func:`fork_into_cgroup`
    is safe in)."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def fork_into_cgroup(cgroup_fd: int) -> int:
    """Fork a child that starts in the cgroup2 directory ``cgroup_fd``: 0 in the
    child, its pid in the parent.  Raises OSError (and makes no child) when the
    kernel refuses: ENOSYS (no clone3), EBADF (not a cgroup2 directory), EACCES or
    EPERM (no right to move there), EOPNOTSUPP/EBUSY (not a leaf, threaded)."""
    args = ctypes.create_string_buffer(
        _ARGS.pack(CLONE_INTO_CGROUP, 0, 0, 0, _SIGCHLD, 0, 0, 0, 0, 0, cgroup_fd),
        _ARGS.size)
    _api.PyOS_BeforeFork()
    pid = _clone3(SYS["clone3"], ctypes.addressof(args), _ARGS.size)
    if pid == 0:
        _api.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    _api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, f"clone3(CLONE_INTO_CGROUP): {os.strerror(err)}")
    return int(pid)
