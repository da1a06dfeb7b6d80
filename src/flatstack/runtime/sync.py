"""Framed messages between flatrun and the processes it forks.

A pair of pipes per direction (``os.pipe`` costs nothing to import, unlike
``socket``).  Each message is a 4-byte length and a :mod:`marshal`-ed tuple
``(tag, payload)``.
"""

from __future__ import annotations

import marshal
import os

from flatstack.errors import FlatstackError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class ChildDied(FlatstackError):
    """The other end closed the channel without a word."""


class Channel:
    """One end of a bidirectional pipe channel."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd

    @staticmethod
    def pair() -> tuple[Channel, Channel]:
        """Two connected ends: (parent end, child end)."""
        down_r, down_w = os.pipe()
        up_r, up_w = os.pipe()
        return Channel(up_r, down_w), Channel(down_r, up_w)

    def send(self, tag: str, payload: Any = None) -> None:
        data = marshal.dumps((tag, payload))
        os.write(self.write_fd, len(data).to_bytes(4, "little") + data)

    def _read_exact(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = os.read(self.read_fd, n)
            if not chunk:
                raise ChildDied("container process exited during setup")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def recv(self) -> tuple[str, Any]:
        """The next message; a child's ``warning`` messages are printed on our stderr
        on the way (``flatrun: warning: ...``), whatever the reader waits for."""
        while True:
            size = int.from_bytes(self._read_exact(4), "little")
            tag, payload = marshal.loads(self._read_exact(size))
            if tag != "warning":
                return tag, payload
            os.write(2, f"flatrun: warning: {payload}\n".encode())

    def expect(self, tag: str) -> Any:
        """Receive one message; relay a child's error; insist on ``tag``."""
        got, payload = self.recv()
        if got == "error":
            raise FlatstackError(payload)
        if got != tag:
            raise FlatstackError(f"internal error: expected {tag!r} from child, got {got!r}")
        return payload

    def fds(self) -> tuple[int, int]:
        return self.read_fd, self.write_fd

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass
