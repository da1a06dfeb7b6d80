"""The CLI's client: HTTP/1.1 over the daemon's unix socket, one request per connection.

Written on ``socket`` alone: ``http.client`` pulls in the email parser (~20 ms) and
``urllib.parse`` pulls in ``re`` (~10 ms), a fifth of a CLI start. Responses are read
with Content-Length, chunked transfer coding or to the end of the connection; streams
(output frames, NDJSON) are read as they arrive.
"""

from __future__ import annotations

import json
import socket

from flatstack.api import PREFIX
from flatstack.errors import FlatstackError

TYPE_CHECKING = False  # the typing module costs ~5 ms of CLI start-up
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")
_MAX_LINE = 65536


class ApiError(FlatstackError):
    """The daemon refused a request: HTTP status, message and the offending field."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


class DaemonUnreachable(FlatstackError):
    """No daemon answers on the socket."""


class ProtocolError(Exception):
    """The daemon's answer is not HTTP/1.1 as expected, or it ends early."""


class IncompleteRead(ProtocolError):
    """The connection closed inside a body."""


def quote(text: str) -> str:
    """Percent-encode everything but RFC 3986's unreserved characters."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in text.encode())


def path(*parts: str) -> str:
    """A versioned API path with each part escaped (image names hold ``/`` and ``:``)."""
    return PREFIX + "".join("/" + quote(p) for p in parts)


class Response:
    """A response whose body is read on demand: ``read``, iteration by lines, ``close``."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._file = sock.makefile("rb")
        self.status, self.reason = self._status_line()
        self.headers: dict[str, str] = {}
        while True:
            line = self._line()
            if line in (b"\r\n", b"\n"):
                break
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise ProtocolError(f"bad header line {line[:80]!r}")
            self.headers[name.strip().lower()] = value.strip()
        self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        length = self.headers.get("content-length")
        self._left: int | None = None  # bytes left: in the body, or in the current chunk
        if self._chunked:
            self._left = 0
        elif length is not None:
            try:
                self._left = int(length)
            except ValueError:
                raise ProtocolError(f"bad Content-Length {length!r}") from None
        self._eof = self._left == 0 and not self._chunked

    def _line(self) -> bytes:
        line = self._file.readline(_MAX_LINE + 1)
        if not line:
            raise ProtocolError("the daemon closed the connection without an answer")
        if len(line) > _MAX_LINE:
            raise ProtocolError("header line too long")
        return line  # type: ignore[no-any-return]

    def _status_line(self) -> tuple[int, str]:
        version, _, rest = self._line().decode("latin-1").rstrip("\r\n").partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/") or not code.isdigit():
            raise ProtocolError(f"bad status line {version} {rest}"[:120])
        return int(code), reason

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def _next_chunk(self) -> None:
        """Start the next chunk; at the last one read the trailers and mark the end."""
        size = self._file.readline(_MAX_LINE)
        if not size:
            raise IncompleteRead("the connection closed inside a chunked body")
        try:
            self._left = int(size.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size {size[:40]!r}") from None
        if self._left == 0:
            while self._file.readline(_MAX_LINE) not in (b"\r\n", b"\n", b""):
                pass
            self._eof = True

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes of the body (all of it when ``n`` < 0); b"" at its end.
        With a known length, returns as soon as some bytes arrived (as a stream)."""
        if n < 0:
            parts = []
            while chunk := self.read(65536):
                parts.append(chunk)
            return b"".join(parts)
        if self._eof or n == 0:
            return b""
        if self._chunked and self._left == 0:
            self._next_chunk()
            if self._eof:
                return b""
        want = n if self._left is None else min(n, self._left)
        data = self._file.read1(want)
        if not data:
            if self._left is None:
                self._eof = True
                return b""
            raise IncompleteRead(f"the connection closed with {self._left} bytes to come")
        if self._left is not None:
            self._left -= len(data)
            if self._chunked and self._left == 0:
                self._file.readline(_MAX_LINE)  # the CRLF after the chunk's data
            elif not self._chunked and self._left == 0:
                self._eof = True
        return data

    def __iter__(self) -> Iterator[bytes]:
        """The body's lines (the last one may lack its newline)."""
        buf = b""
        while chunk := self.read(65536):
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                yield line + b"\n"
        if buf:
            yield buf

    def close(self) -> None:
        self._file.close()
        self._sock.close()


class Client:
    """One request per connection; errors become :class:`ApiError`."""

    def __init__(self, socket_path: str, timeout: float | None = 300.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def open(self, method: str, url: str, *, params: dict[str, Any] | None = None,
             body: Any = None, timeout: float | None = -1.0) -> Response:
        """Send a request; the open response (status < 400), else raise."""
        query = "&".join(f"{quote(str(k))}={quote(_param(v))}"
                         for k, v in (params or {}).items() if v is not None)
        head = [f"{method} {url}{'?' + query if query else ''} HTTP/1.1",
                "Host: localhost", "Accept: application/json", "Connection: close"]
        payload = b""
        if body is not None:
            payload = json.dumps(body).encode()
            head.append("Content-Type: application/json")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(payload)}")
        request = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout if timeout == -1.0 else timeout)
            sock.connect(self.socket_path)
            sock.sendall(request)
            resp = Response(sock)
        except (FileNotFoundError, ConnectionRefusedError) as err:
            sock.close()
            raise DaemonUnreachable(
                f"cannot reach the flatstack daemon at {self.socket_path} "
                f"({(err.strerror or str(err)).lower()}); is it running? start it with "
                "`flatstack daemon` or point --socket / FLATSTACK_SOCKET at it") from None
        except PermissionError:
            sock.close()
            raise DaemonUnreachable(f"{self.socket_path}: permission denied (the API socket "
                                    "is for root only)") from None
        except (OSError, ProtocolError) as err:
            sock.close()
            raise FlatstackError(f"daemon at {self.socket_path}: {err}") from None
        if resp.status >= 400:
            raise _error(resp)
        return resp

    def call(self, method: str, url: str, *, params: dict[str, Any] | None = None,
             body: Any = None, timeout: float | None = -1.0) -> Any:
        """A request whose answer is one JSON document (or nothing)."""
        resp = self.open(method, url, params=params, body=body, timeout=timeout)
        try:
            data = resp.read()
        except (OSError, ProtocolError) as err:
            raise FlatstackError(f"daemon at {self.socket_path}: {err}") from None
        finally:
            resp.close()
        return json.loads(data) if data else None

    def lines(self, method: str, url: str, *, params: dict[str, Any] | None = None,
              body: Any = None) -> Iterator[dict[str, Any]]:
        """An NDJSON stream, one document per line."""
        resp = self.open(method, url, params=params, body=body, timeout=None)
        try:
            for line in resp:
                if line.strip():
                    yield json.loads(line)
        except (ProtocolError, ConnectionError) as err:
            raise FlatstackError(f"the daemon closed the stream ({type(err).__name__}); "
                                 "did it stop?") from None
        finally:
            resp.close()


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _error(resp: Response) -> ApiError:
    try:
        data = resp.read()
    except (OSError, ProtocolError):
        data = b""
    finally:
        resp.close()
    try:
        doc = json.loads(data)
    except ValueError:
        return ApiError(resp.status, f"daemon answered {resp.status} {resp.reason}")
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return ApiError(resp.status, doc["error"], doc.get("field"))
    return ApiError(resp.status, f"daemon answered {resp.status}: {data[:200]!r}")
