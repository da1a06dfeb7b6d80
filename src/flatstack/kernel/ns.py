"""Namespaces: unshare, setns and the CLONE_* flags."""

from __future__ import annotations

import os

from flatstack.kernel.libc import syscall

CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

#: runtime-spec namespace type -> (clone flag, name under /proc/<pid>/ns)
NAMESPACES: dict[str, tuple[int, str]] = {
    "user": (CLONE_NEWUSER, "user"),
    "pid": (CLONE_NEWPID, "pid"),
    "network": (CLONE_NEWNET, "net"),
    "mount": (CLONE_NEWNS, "mnt"),
    "ipc": (CLONE_NEWIPC, "ipc"),
    "uts": (CLONE_NEWUTS, "uts"),
    "cgroup": (CLONE_NEWCGROUP, "cgroup"),
    "time": (CLONE_NEWTIME, "time"),
}


def unshare(flags: int) -> None:
    """unshare(2) the namespaces named by ``flags``."""
    syscall("unshare", flags, detail=hex(flags))


def setns(fd: int, nstype: int = 0) -> None:
    """setns(2): join the namespace that ``fd`` refers to."""
    syscall("setns", fd, nstype, detail=str(nstype))


def join_path(path: str, nstype: int) -> None:
    """Join the namespace at ``path`` (a /proc/<pid>/ns/<x> file or a bind mount)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        syscall("setns", fd, nstype, detail=path)
    finally:
        os.close(fd)


def loopback_up() -> None:
    """Bring ``lo`` up in the calling thread's network namespace (SIOCSIFFLAGS).

    Raises OSError.  Imports only the C modules ``_socket`` and ``fcntl``: this runs
    in the container's init on the create path.
    """
    import _socket
    import fcntl

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
    try:
        request = bytearray(b"lo".ljust(40, b"\0"))  # struct ifreq
        fcntl.ioctl(sock.fileno(), siocgifflags, request)
        flags = int.from_bytes(request[16:18], "little") | iff_up
        request[16:18] = flags.to_bytes(2, "little")
        fcntl.ioctl(sock.fileno(), siocsifflags, request)
    finally:
        sock.close()
