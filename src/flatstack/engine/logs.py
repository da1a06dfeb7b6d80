"""Container logs in podman's ``k8s-file`` format, with size-based rotation.

Each entry is one line::

    2026-12-01T19:46:49.123456789Z stdout F hello world
    <RFC 3339 UTC, nanoseconds>   <stream> <F|P> <content>

``F`` ends a line the container wrote; ``P`` is a partial piece (what was read
before the newline arrived, as conmon writes it); the next piece of the same
stream continues it.  :class:`LogWriter` (used by the supervisor) writes
entries and rotates ``log`` -> ``log.1`` -> ... when the file would grow past
``max_size``, keeping ``max_files`` files in all; :func:`read_log` reads them
back across the rotated files, with ``tail`` and ``follow``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

from flatstack.errors import FlatstackError

DEFAULT_MAX_SIZE = 10 << 20
DEFAULT_MAX_FILES = 3
MIN_MAX_SIZE = 1024
MAX_MAX_FILES = 100
STREAMS = ("stdout", "stderr")


def check_options(max_size: object, max_files: object) -> tuple[int, int]:
    """Validate the per-container rotation options (FlatstackError naming the field)."""
    if max_size is None:
        max_size = DEFAULT_MAX_SIZE
    if max_files is None:
        max_files = DEFAULT_MAX_FILES
    if not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < MIN_MAX_SIZE:
        raise FlatstackError(f"log_max_size: expected an integer >= {MIN_MAX_SIZE} (bytes), "
                             f"got {max_size!r}")
    if (not isinstance(max_files, int) or isinstance(max_files, bool)
            or not 1 <= max_files <= MAX_MAX_FILES):
        raise FlatstackError(f"log_max_files: expected an integer from 1 to {MAX_MAX_FILES}, "
                             f"got {max_files!r}")
    return max_size, max_files


def timestamp(ns: int | None = None) -> bytes:
    """RFC 3339 UTC with nanoseconds (``...T19:46:49.123456789Z``)."""
    ns = time.time_ns() if ns is None else ns
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)).encode() + b".%09dZ" % frac


def rotated_paths(path: str, max_files: int = MAX_MAX_FILES) -> list[str]:
    """The existing files of a log, oldest first (``log.N`` ... ``log.1``, ``log``)."""
    older = []
    for n in range(1, max_files):
        candidate = f"{path}.{n}"
        if not os.path.exists(candidate):
            break
        older.append(candidate)
    return [*reversed(older), path]


class LogWriter:
    """Appends entries to ``path``; one ``write`` per chunk read from the container."""

    def __init__(self, path: str, max_size: int | None = DEFAULT_MAX_SIZE,
                 max_files: int | None = DEFAULT_MAX_FILES) -> None:
        self.path = path
        self.max_size, self.max_files = check_options(max_size, max_files)
        self.fd = self._open()
        self.size = os.fstat(self.fd).st_size

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)

    def write(self, stream: str, data: bytes) -> None:
        """Log a chunk of ``stream``: each complete line as F, a trailing rest as P."""
        if not data:
            return
        prefix = timestamp() + b" " + stream.encode() + b" "
        entries = []
        lines = data.split(b"\n")
        for line in lines[:-1]:
            entries.append(prefix + b"F " + line + b"\n")
        if lines[-1]:
            entries.append(prefix + b"P " + lines[-1] + b"\n")
        batch = b""
        for entry in entries:
            if self.size + len(batch) + len(entry) > self.max_size and self.size + len(batch):
                self._flush(batch)
                batch = b""
                self.rotate()
            batch += entry
        self._flush(batch)

    def _flush(self, batch: bytes) -> None:
        if self.fd < 0:  # a rotation failed half-way (e.g. a full disk): try again
            self.fd = self._open()
            self.size = os.fstat(self.fd).st_size
        view = memoryview(batch)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
            self.size += n

    def rotate(self) -> None:
        """log -> log.1 -> ... -> log.<max_files-1>; the oldest is dropped."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.max_files == 1:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        else:
            for n in range(self.max_files - 1, 0, -1):
                older = f"{self.path}.{n - 1}" if n > 1 else self.path
                try:
                    os.rename(older, f"{self.path}.{n}")
                except FileNotFoundError:
                    pass
        self.fd = self._open()
        self.size = 0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def parse_entry(line: bytes) -> tuple[bytes, str, bool, bytes] | None:
    """One entry as (timestamp, stream, full, content); None for a malformed line."""
    parts = line.rstrip(b"\n").split(b" ", 3)
    if len(parts) != 4 or parts[2] not in (b"F", b"P"):
        return None
    stream = parts[1].decode(errors="replace")
    if stream not in STREAMS:
        return None
    return parts[0], stream, parts[2] == b"F", parts[3]


def _entries(data: bytes) -> list[tuple[bytes, str, bool, bytes]]:
    return [e for e in map(parse_entry, data.split(b"\n")) if e is not None]


def read_log(path: str, tail: int | None = None, follow: bool = False,
             timestamps: bool = False, is_running: Callable[[], bool] | None = None,
             poll: float = 0.1, pause: Callable[[float], object] = time.sleep,
             ) -> Iterator[tuple[str, bytes]]:
    """(stream, piece) pairs from the log at ``path`` and its rotated files.

    A piece is a line with its ``\\n``, or a partial line without it (the next piece
    of that stream continues it), so writing the pieces out reproduces the stream.
    ``tail``: only the last N lines.  ``follow``: keep reading new entries (across
    rotations) until ``is_running()`` is false and the file is drained.
    ``timestamps``: each line starts with its RFC 3339 time and a space.
    ``pause(poll)`` waits between reads while following; one that returns early when
    the writer exits (the supervisor's exit notification) ends the follow at once.
    """
    if tail is not None and (not isinstance(tail, int) or tail < 0):
        raise FlatstackError(f"tail: expected a non-negative integer, got {tail!r}")
    if follow and is_running is None:
        raise FlatstackError("follow: needs is_running")
    at_start = dict.fromkeys(STREAMS, True)

    def emit(entries: list[tuple[bytes, str, bool, bytes]]) -> Iterator[tuple[str, bytes]]:
        for ts, stream, full, content in entries:
            piece = content + b"\n" if full else content
            if timestamps and at_start[stream]:
                piece = ts + b" " + piece
            at_start[stream] = full
            yield stream, piece

    fd = _open_current(path)
    current = _read_all(fd) if fd >= 0 else b""
    cut = len(current) if current.endswith(b"\n") else current.rfind(b"\n") + 1
    pending, current = current[cut:], current[:cut]
    older = rotated_paths(path)[:-1]
    if tail is None:
        for name in older:
            yield from emit(_entries(_read_file(name)))
        yield from emit(_entries(current))
    else:
        chunks = [_entries(current)]
        lines = sum(1 for e in chunks[0] if e[2])
        for name in reversed(older):
            if lines > tail:
                break
            chunks.insert(0, _entries(_read_file(name)))
            lines += sum(1 for e in chunks[0] if e[2])
        # Backwards: an F entry ends a line; P entries belong to the next F of their
        # stream (another stream's entries may sit in between).
        selected: list[tuple[bytes, str, bool, bytes]] = []
        taking = dict.fromkeys(STREAMS, tail > 0)  # a trailing partial line counts
        count = 0
        for entry in reversed([e for chunk in chunks for e in chunk]):
            stream = entry[1]
            if entry[2]:
                count += 1
                taking[stream] = count <= tail
            if taking[stream]:
                selected.append(entry)
            elif count > tail and not any(taking.values()):
                break
        yield from emit(selected[::-1])
    if not follow:
        if fd >= 0:
            os.close(fd)
        return
    assert is_running is not None
    try:
        while True:
            running = is_running()
            if fd < 0:
                fd = _open_current(path)
            if fd >= 0:
                rotated = _rotated(path, fd)  # checked first: the old file is then complete
                data = pending + _read_all(fd)
                cut = data.rfind(b"\n") + 1
                pending = data[cut:]
                yield from emit(_entries(data[:cut]))
                if rotated:  # drained the old file: continue on the new one
                    os.close(fd)
                    fd = _open_current(path)
                    pending = b""
                    continue
            if not running:
                return
            pause(poll)
    finally:
        if fd >= 0:
            os.close(fd)


def _open_current(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return -1


def _rotated(path: str, fd: int) -> bool:
    try:
        return os.stat(path).st_ino != os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _read_all(fd: int) -> bytes:
    parts = []
    while chunk := os.read(fd, 1 << 20):
        parts.append(chunk)
    return b"".join(parts)


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""
