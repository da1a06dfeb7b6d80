"""``fork`` with ``clone3``: into a cgroup, into new namespaces, for a Python process.

A child born in its cgroup costs no ``cgroup.procs`` write, and that write waits
for an RCU grace period (5-23 ms here, see docs/cgroups.md); a child born in its
namespaces needs no intermediate process to unshare them.  ``os.fork`` can do
neither, so :mod:`flatstack.kernel._sys` issues ``clone3`` itself and runs the
interpreter's fork bookkeeping around it (``PyOS_BeforeFork`` and the
``AfterFork`` pair, exactly what ``os.fork`` does).  The C library's own fork
handling (its thread id cache, malloc locks held by other threads) is skipped,
so this is only offered to a single-threaded caller.
"""

from __future__ import annotations

import os

from flatstack.kernel.libc import _sys

CLONE_INTO_CGROUP = 0x200000000


def single_threaded() -> bool:
    """Whether this process has one thread (the only case :func:`clone3` is safe in)."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def clone3(namespaces: int = 0, cgroup_fd: int | None = None) -> int:
    """Fork a child born in new ``namespaces`` (CLONE_NEW* flags) and, with
    ``cgroup_fd``, in that cgroup2 directory: 0 in the child, its pid in the parent.
    Raises OSError (and makes no child) when the kernel refuses: ENOSYS (no clone3),
    EBADF (not a cgroup2 directory), EACCES or EPERM (no right to move there or to
    make the namespaces), EOPNOTSUPP/EBUSY (not a leaf, threaded)."""
    try:
        return _sys.clone3(namespaces, -1 if cgroup_fd is None else cgroup_fd)
    except OSError as err:
        what = "clone3(CLONE_INTO_CGROUP)" if cgroup_fd is not None else "clone3"
        raise OSError(err.errno, f"{what}: {os.strerror(err.errno or 0)}") from None
