"""``flatstack daemon``: the API on a unix socket (mode 0600), a pidfile, the engine's
reconciler, and a clean exit on SIGTERM/SIGINT. Containers keep running when it exits
or is killed: they belong to the node supervisor, which it starts when none answers."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import threading
from typing import Any

from flatstack.api.places import Places
from flatstack.errors import FlatstackError

log = logging.getLogger("flatstack.api")


def bind_socket(path: str) -> socket.socket:
    """A listening unix socket created with mode 0600 (umask set around ``bind``, so it
    never exists with wider permissions); a stale socket file is replaced."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # nobody listens: stale
        else:
            raise FlatstackError(f"{path}: another daemon is already serving on this socket")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError as err:
        sock.close()
        raise FlatstackError(f"{path}: cannot bind: {err.strerror or err}".lower()) from None
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock


def _pidfile(path: str) -> int:
    """Lock and fill the pidfile; FlatstackError when another daemon holds it."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        raise FlatstackError(f"another flatstack daemon is running (pid {other or '?'}, "
                             f"{path})") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """Tells open streams (logs -f, attached runs) to end when shutdown begins, so
        they close cleanly within the grace period."""

        def __init__(self, config: uvicorn.Config, stopping: threading.Event) -> None:
            super().__init__(config)
            self.stopping = stopping

        def handle_exit(self, sig: int, frame: Any) -> None:
            self.stopping.set()
            super().handle_exit(sig, frame)

    return Server


def make_engine(places: Places, bridge: str | None = None, subnet: str | None = None) -> Any:
    """The engine over ``places``; the default network's bridge and subnet when given."""
    from flatstack.engine.containers import Engine

    networks = None
    if bridge or subnet:
        from flatstack.network import config as netconfig
        from flatstack.network.attach import Networks

        state = os.path.join(places.state_dir, "networks")
        store = netconfig.NetworkStore(state, default_subnet=subnet or netconfig.DEFAULT_SUBNET,
                                       default_bridge=bridge or netconfig.DEFAULT_BRIDGE)
        networks = Networks(state, places.run_dir, store=store)
    return Engine(places.state_dir, places.runtime_root, places.supervisor_socket,
                  networks=networks)


def serve(places: Places, log_level: str = "info", bridge: str | None = None,
          subnet: str | None = None, metrics_listen: str | None = None) -> None:
    """Run until SIGTERM or SIGINT (``metrics_listen``: also /metrics on IP:PORT)."""
    import uvicorn

    from flatstack.api.app import create_app
    from flatstack.image.store import Store

    logging.basicConfig(level=log_level.upper(), format="flatstack: %(message)s")
    # A daemon started in the background by a shell has SIGINT and SIGQUIT ignored; the
    # supervisor and its containers would inherit that (a trap on INT could never fire).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    for d in (places.state_dir, places.runtime_root):
        os.makedirs(d, mode=0o711, exist_ok=True)
    pid_fd = _pidfile(places.pidfile)
    sock = None
    stop = threading.Event()
    control = metrics_server = None
    try:
        sock = bind_socket(places.socket)
        engine = make_engine(places, bridge, subnet)
        supervisor = engine.ensure_supervisor()
        done = engine.reconcile()
        log.info("supervisor pid %d; reconciled: %s", supervisor,
                 {k: len(v) for k, v in done.items()})
        store = Store(places.state_dir).ensure()
        app = create_app(engine, store)
        from flatstack.control.controller import Controller  # apps: control/controller.py

        control = app.state.control = Controller(engine).start()
        if metrics_listen:
            from flatstack.api.metrics import serve_metrics

            metrics_server = serve_metrics(metrics_listen, control, engine)
            log.info("metrics on http://%s/metrics", metrics_listen)
        threading.Thread(target=engine.reconcile_forever, args=(stop,), name="reconcile",
                         daemon=True).start()
        config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=3)
        log.info("listening on %s (api /v1, openapi /openapi.json)", places.socket)
        # uvicorn handles SIGTERM/SIGINT, then re-raises them to the handlers it found:
        # make those harmless so the clean-up below runs.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: None)
        _server_class()(config, app.state.stopping).run(sockets=[sock])
    finally:
        stop.set()
        if metrics_server is not None:
            metrics_server.shutdown()
        if control is not None:
            control.stop()
        if sock is not None:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(places.socket)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(places.pidfile)
        os.close(pid_fd)
    log.info("stopped (containers keep running under the supervisor)")
