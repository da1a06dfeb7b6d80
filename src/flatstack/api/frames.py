"""Output streams over HTTP, binary-safe, docker's multiplexing: each frame is an 8-byte
header (stream id, three zero bytes, payload length big-endian) and the payload.

Stream ids: 1 stdout, 2 stderr, 3 a JSON status document that ends the stream (for
exec: ``{"exit_code": N}``; on failure after the stream began: ``{"error": "..."}``).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any, BinaryIO

MEDIA_TYPE = "application/vnd.flatstack.frames"
STDOUT, STDERR, STATUS = 1, 2, 3
STREAM_IDS = {"stdout": STDOUT, "stderr": STDERR}
_HEADER = struct.Struct(">BxxxI")


def frame(stream: int, payload: bytes) -> bytes:
    """One frame."""
    return _HEADER.pack(stream, len(payload)) + payload


def status(doc: dict[str, Any]) -> bytes:
    """The closing status frame."""
    return frame(STATUS, json.dumps(doc).encode())


def read(f: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(stream id, payload) pairs from a readable stream until its end."""
    while True:
        header = _read_exactly(f, _HEADER.size)
        if not header:
            return
        stream, size = _HEADER.unpack(header)
        yield stream, _read_exactly(f, size)


def _read_exactly(f: BinaryIO, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = f.read(n - len(data))
        if not chunk:
            if data:
                raise EOFError("truncated frame")
            return b""
        data += chunk
    return data
