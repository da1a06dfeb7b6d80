"""Foreground ``run`` with a terminal: flatrun holds the pty master and copies bytes.

Like ``runc run`` without ``--console-socket``: the host terminal (when stdin is
one) goes to raw mode for the container's lifetime and its window size follows
SIGWINCH; stdin goes to the master, the master to stdout, until the container's
side of the terminal is closed.
"""

from __future__ import annotations

import os
import select

TIOCGWINSZ = 0x5413
TIOCSWINSZ = 0x5414


def copy_winsize(src: int, dst: int) -> None:
    """Give the pty ``dst`` the window size of terminal ``src`` (if it is one)."""
    import fcntl

    try:
        size = fcntl.ioctl(src, TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst, TIOCSWINSZ, size)
    except OSError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def proxy(master: int, stdin: int = 0, stdout: int = 1) -> None:
    """Copy until the container closes its terminal; restores the host terminal."""
    saved = None
    if os.isatty(stdin):
        import termios
        import tty

        saved = termios.tcgetattr(stdin)
        tty.setraw(stdin, termios.TCSANOW)  # keep input typed ahead
        copy_winsize(stdin, master)
    try:
        watch = [master, stdin]
        while True:
            try:
                ready, _, _ = select.select(watch, [], [])
            except InterruptedError:
                continue
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every slave fd is closed
                    data = b""
                if not data:
                    return
                _write_all(stdout, data)
            if stdin in ready:
                data = os.read(stdin, 65536)
                if data:
                    _write_all(master, data)
                else:
                    watch = [master]  # stdin closed: keep printing what the container says
                    if saved is None:
                        _write_all(master, b"\x04")  # end of input for a cooked pty
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        os.close(master)
