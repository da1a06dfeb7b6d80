"""The CLI's client: HTTP/1.1 over the daemon's unix socket with ``http.client``
(httpx costs ~200 ms of imports per CLI start; this costs ~40 ms)."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

from flatstack.api import PREFIX
from flatstack.errors import FlatstackError


class ApiError(FlatstackError):
    """The daemon refused a request: HTTP status, message and the offending field."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


class DaemonUnreachable(FlatstackError):
    """No daemon answers on the socket."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def path(*parts: str) -> str:
    """A versioned API path with each part escaped (image names hold ``/`` and ``:``)."""
    return PREFIX + "".join("/" + quote(p, safe="") for p in parts)


class Client:
    """One request per connection; errors become :class:`ApiError`."""

    def __init__(self, socket_path: str, timeout: float | None = 300.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def open(self, method: str, url: str, *, params: dict[str, Any] | None = None,
             body: Any = None, timeout: float | None = -1.0) -> http.client.HTTPResponse:
        """Send a request; the open response (status < 400), else raise."""
        query = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        target = url + ("?" + urlencode(query) if query else "")
        conn = _UnixConnection(self.socket_path, self.timeout if timeout == -1.0 else timeout)
        headers = {"Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, target, body=payload, headers=headers)
            resp = conn.getresponse()
        except (FileNotFoundError, ConnectionRefusedError) as err:
            conn.close()
            raise DaemonUnreachable(
                f"cannot reach the flatstack daemon at {self.socket_path} "
                f"({(err.strerror or str(err)).lower()}); is it running? start it with "
                "`flatstack daemon` or point --socket / FLATSTACK_SOCKET at it") from None
        except PermissionError:
            conn.close()
            raise DaemonUnreachable(f"{self.socket_path}: permission denied (the API socket "
                                    "is for root only)") from None
        except (OSError, http.client.HTTPException) as err:
            conn.close()
            raise FlatstackError(f"daemon at {self.socket_path}: {err}") from None
        if resp.status >= 400:
            raise _error(resp)
        return resp

    def call(self, method: str, url: str, *, params: dict[str, Any] | None = None,
             body: Any = None, timeout: float | None = -1.0) -> Any:
        """A request whose answer is one JSON document (or nothing)."""
        resp = self.open(method, url, params=params, body=body, timeout=timeout)
        data = resp.read()
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
        except (http.client.HTTPException, ConnectionError) as err:
            raise FlatstackError(f"the daemon closed the stream ({type(err).__name__}); "
                                 "did it stop?") from None
        finally:
            resp.close()


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _error(resp: http.client.HTTPResponse) -> ApiError:
    data = resp.read()
    resp.close()
    try:
        doc = json.loads(data)
    except ValueError:
        return ApiError(resp.status, f"daemon answered {resp.status} {resp.reason}")
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return ApiError(resp.status, doc["error"], doc.get("field"))
    return ApiError(resp.status, f"daemon answered {resp.status}: {data[:200]!r}")
