"""``flatstack daemon``: serve the engine's API (see ``flatstack.api.daemon``)."""

from __future__ import annotations

from typing import Any

from flatstack.cli._api import _state, errors
from flatstack.cli._params import Option, to_typer


@errors
def daemon(state_dir: str = Option(None, "--state-dir", envvar="FLATSTACK_STATE_DIR",
                                         metavar="DIR", help="Images, containers, volumes "
                                         "(default /var/lib/flatstack)."),
           socket: str = Option(None, "--socket", metavar="PATH",
                                      help="API socket (default $FLATSTACK_SOCKET or "
                                      "/run/flatstack/api.sock); the pidfile and the "
                                      "supervisor's socket go beside it."),
           runtime_root: str = Option(None, "--runtime-root",
                                            envvar="FLATSTACK_RUNTIME_ROOT", metavar="DIR",
                                            help="The runtime's state (default "
                                            "/run/flatstack/runtime)."),
           bridge: str = Option(None, "--bridge", envvar="FLATSTACK_BRIDGE",
                                      help="Bridge of the default network (flatstack0)."),
           subnet: str = Option(None, "--subnet", envvar="FLATSTACK_SUBNET",
                                      help="Subnet of the default network (10.89.0.0/24)."),
           log_level: str = Option("info", "--log-level",
                                         help="debug, info, warning or error."),
           metrics_listen: str = Option(None, "--metrics-listen", metavar="IP:PORT",
                                        envvar="FLATSTACK_METRICS_LISTEN",
                                        help="Also serve /metrics (only) on this TCP "
                                        "address, for Prometheus.")) -> None:
    """Serve the REST API on a unix socket (runs in the foreground until SIGTERM)."""
    from flatstack.api.daemon import serve
    from flatstack.api.places import Places
    from flatstack.errors import ConfigError

    if log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError("--log-level", f"unknown level {log_level!r}")
    if metrics_listen:
        from flatstack.api.metrics import parse_listen

        parse_listen(metrics_listen)  # a bad address fails before anything starts
    serve(Places.resolve(state_dir, socket or _state["socket"], runtime_root), log_level,
          bridge, subnet, metrics_listen)


def register(app: Any) -> None:
    app.command()(to_typer(daemon))
