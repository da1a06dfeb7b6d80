"""Talking to the supervisor: one JSON request, one JSON reply per connection."""

from __future__ import annotations

import json
import socket
from typing import Any

from flatstack.errors import FlatstackError


class SupervisorClient:
    """A thin client; every error comes back as :class:`FlatstackError`."""

    def __init__(self, socket_path: str, timeout: float = 60.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def call(self, op: str, **args: Any) -> Any:
        request = json.dumps({"op": op, **args}).encode() + b"\n"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.socket_path)
                sock.sendall(request)
                chunks = []  # a list, not bytes +=: exec replies can be megabytes
                while not chunks or not chunks[-1].endswith(b"\n"):
                    chunk = sock.recv(1 << 20)
                    if not chunk:
                        break
                    chunks.append(chunk)
                data = b"".join(chunks)
        except OSError as err:
            raise FlatstackError(f"supervisor at {self.socket_path}: "
                                 f"{err.strerror or err}".lower()) from None
        try:
            reply = json.loads(data)
        except ValueError:
            raise FlatstackError("supervisor: malformed reply") from None
        if not reply.get("ok"):
            raise FlatstackError(reply.get("error", "supervisor: unknown error"))
        return reply.get("result")


class ExitWatch:
    """The supervisor's exit notification for one container.

    ``wait(timeout)`` returns true as soon as the container has exited, else false after
    ``timeout``. It never raises: if the supervisor cannot tell (gone, restarted, the
    container removed), ``broken`` is set and ``wait`` just sleeps, so callers that
    re-check the state between waits degrade to polling."""

    def __init__(self, socket_path: str, cid: str) -> None:
        self.exited = self.broken = False
        self._buf = b""
        self._sock: socket.socket | None = None
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            sock.settimeout(10)
            sock.connect(socket_path)
            sock.sendall(json.dumps({"op": "wait", "id": cid}).encode() + b"\n")
            sock.setblocking(False)
            self._sock = sock
        except OSError:
            self.broken = True

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; whether the container has exited."""
        import select
        import time

        if self.exited:
            return True
        if self._sock is None:
            time.sleep(timeout)
            return False
        deadline = time.monotonic() + timeout
        readable, _, _ = select.select([self._sock], [], [], timeout)
        if readable:
            try:
                chunk = self._sock.recv(65536)
            except BlockingIOError:
                return False
            except OSError:
                chunk = b""
            self._buf += chunk
            if chunk and not self._buf.endswith(b"\n"):
                return False
            try:
                self.exited = bool(json.loads(self._buf).get("ok"))
            except ValueError:
                self.exited = False
            self.broken = not self.exited
            self.close()
            if self.broken:
                time.sleep(max(0.0, deadline - time.monotonic()))
        return self.exited

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> ExitWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
