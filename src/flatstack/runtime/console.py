"""The container's terminal: a pty allocated inside the container, master sent out.

runc's protocol: the runtime connects to ``--console-socket`` and sends the
pty master as SCM_RIGHTS; the slave becomes the process's stdio and
controlling terminal, and is bind-mounted over /dev/console.
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct

from flatstack.errors import FlatstackError
from flatstack.kernel import mount as m

TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431
TIOCSCTTY = 0x540E
TIOCSWINSZ = 0x5414
_PTS_MAJOR_MIN, _PTS_MAJOR_MAX = 136, 143


def connect_console_socket(path: str) -> int:
    """Connect to the console socket; returns the connected fd (inheritable by fork)."""
    import _socket  # the C module: ``socket`` costs ~10 ms of enum set-up

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as err:
        sock.close()
        raise FlatstackError(f"--console-socket {path}: {os.strerror(err.errno or 0).lower()}"
                             ) from None
    return sock.detach()


def console_pair() -> tuple[int, int]:
    """A connected socket pair standing in for --console-socket: (init's end, ours)."""
    import _socket

    a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    ours = b.detach()
    os.set_inheritable(ours, False)
    return a.detach(), ours


def receive_master(sock_fd: int) -> int:
    """Receive the pty master the init sends over a console socket."""
    import _socket
    import array

    sock = _socket.socket(fileno=sock_fd)
    try:
        fds = array.array("i")
        _msg, ancillary, _flags, _addr = sock.recvmsg(4096, _socket.CMSG_SPACE(4))
        for level, kind, data in ancillary:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    finally:
        sock.close()
    if not fds:
        raise FlatstackError("process.terminal: the container sent no terminal")
    return fds[0]


def open_pty() -> tuple[int, int, str]:
    """Open a new pty pair from the container's /dev/ptmx: (master, slave, slave path)."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    st = os.fstat(master)
    if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(5, 2):
        # CVE-2025-52565: /dev/ptmx planted as a symlink to some other file.
        os.close(master)
        raise FlatstackError("/dev/ptmx is not the pty multiplexer (5:2); refusing to use it")
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    number = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0\0\0\0"))[0]
    path = f"/dev/pts/{number}"
    slave = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC | os.O_NOFOLLOW)
    st = os.fstat(slave)
    # CVE-2025-52565: make sure what we opened really is a pty slave.
    if not stat.S_ISCHR(st.st_mode) or not (
        _PTS_MAJOR_MIN <= os.major(st.st_rdev) <= _PTS_MAJOR_MAX
    ):
        raise FlatstackError(f"{path} is not a pseudo-terminal; refusing to use it")
    return master, slave, path


def set_winsize(fd: int, size: dict[str, int] | None) -> None:
    """Apply process.consoleSize."""
    if size:
        fcntl.ioctl(fd, TIOCSWINSZ, struct.pack("HHHH", int(size.get("height", 0)),
                                                int(size.get("width", 0)), 0, 0))


def send_master(sock_fd: int, master: int, name: str) -> None:
    """Send the pty master over the connected console socket."""
    import _socket
    import array

    sock = _socket.socket(fileno=sock_fd)
    try:
        fds = array.array("i", [master]).tobytes()
        sock.sendmsg([name.encode()], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
    finally:
        sock.detach()


def setup_console(sock_fd: int, size: dict[str, int] | None, mount_console: bool) -> None:
    """Allocate the terminal in the container and make it stdio + controlling tty."""
    master, slave, path = open_pty()
    set_winsize(master, size)
    if mount_console:
        try:
            fd = m.openat2(-100, "/dev/console", os.O_PATH | os.O_NOFOLLOW, 0,
                           m.RESOLVE_NO_SYMLINKS)
        except Exception as err:
            if getattr(err, "errno", 0) == 40:  # ELOOP. CVE-2025-52565
                raise FlatstackError("/dev/console is a symlink; refusing to mount the "
                                     "console over it") from None
            created = os.open("/dev/console", os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW
                              | os.O_CLOEXEC, 0o600)
            os.close(created)
            fd = m.openat2(-100, "/dev/console", os.O_PATH | os.O_NOFOLLOW, 0,
                           m.RESOLVE_NO_SYMLINKS)
        if stat.S_ISLNK(os.fstat(fd).st_mode):  # O_PATH|O_NOFOLLOW opened the link itself
            os.close(fd)
            raise FlatstackError("/dev/console is a symlink; refusing to mount the console "
                                 "over it")
        try:
            m.mount(f"/proc/self/fd/{slave}", m.fd_path(fd), None, m.MS_BIND)
        finally:
            os.close(fd)
    send_master(sock_fd, master, path)
    os.close(master)
    os.close(sock_fd)
    for target in (0, 1, 2):
        os.dup2(slave, target)
    os.close(slave)
    fcntl.ioctl(0, TIOCSCTTY, 0)
