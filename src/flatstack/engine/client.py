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
