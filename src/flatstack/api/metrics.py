"""``GET /metrics``: the control plane in Prometheus' text format, on the API socket and,
with ``flatstack daemon --metrics-listen HOST:PORT``, on a plain TCP listener that serves
``/metrics`` only (Prometheus scrapes TCP; the API itself stays on its 0600 unix socket).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from flatstack.control.metrics import CONTENT_TYPE, exposition
from flatstack.errors import ConfigError, FlatstackError

router = APIRouter(tags=["system"])
log = logging.getLogger("flatstack.api")


class _Unavailable(FlatstackError):
    http_status = 503


@router.get("/metrics", summary="Prometheus metrics (text format 0.0.4)",
            response_class=Response)
def metrics(request: Request) -> Response:
    control = getattr(request.app.state, "control", None)
    if control is None:
        raise _Unavailable("the control plane is not running in this daemon")
    return Response(exposition(control, request.app.state.engine), media_type=CONTENT_TYPE)


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); ConfigError otherwise."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise ConfigError("--metrics-listen", f"{value!r}: expected IP:PORT, "
                          "e.g. 127.0.0.1:9464") from None
    if not sep or not 1 <= number <= 65535:
        raise ConfigError("--metrics-listen", f"{value!r}: port must be 1..65535")
    return host, number


class _Server(HTTPServer):
    """One request at a time on the one ``metrics`` thread: the store keeps a database
    connection per thread, so a thread per scrape would leave a connection per scrape."""


class _Server6(_Server):
    address_family = socket.AF_INET6


def serve_metrics(listen: str, control: Any, engine: Any) -> HTTPServer:
    """Serve ``/metrics`` on ``listen`` from a daemon thread; ``shutdown()`` stops it."""
    host, port = parse_listen(listen)

    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # a client that stalls cannot hold the listener longer

        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404, "only /metrics is served here")
                return
            try:
                body = exposition(control, engine)
            except Exception as err:  # a bug: say it to the scraper, keep serving
                log.exception("metrics: %s", err)
                self.send_error(500, f"internal error: {err!r}")
                return
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    try:
        server = (_Server6 if ":" in host else _Server)((host, port), Handler)
    except OSError as err:
        raise FlatstackError(f"--metrics-listen {listen}: cannot listen: "
                             f"{err.strerror or err}".lower()) from None
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
