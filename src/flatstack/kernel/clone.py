"""``fork`` into a cgroup: ``clone3(CLONE_INTO_CGROUP)`` for a Python process.

A child born in its cgroup costs no ``cgroup.procs`` write, and that write waits
for an RCU grace period (5-23 ms here, see docs/cgroups.md).  ``os.fork`` cannot
pass the flag, so :mod:`flatstack.kernel._sys` issues ``clone3`` itself and runs
the interpreter's fork bookkeeping around it (``PyOS_BeforeFork`` and the
``AfterFork`` pair, exactly what ``os.fork`` does).  The C library's own fork
handling (its thread id cache, malloc locks held by other threads) is skipped,
so this is only offered to a single-threaded caller; the child should fork again
(``os.fork``) before running for long, as the runtime's stage one does.
"""

from __future__ import annotations

import os

from flatstack.kernel.libc import _sys

CLONE_INTO_CGROUP = 0x200000000


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
    try:
        return _sys.fork_into_cgroup(cgroup_fd)
    except OSError as err:
        raise OSError(err.errno, f"clone3(CLONE_INTO_CGROUP): {os.strerror(err.errno or 0)}"
                      ) from None
