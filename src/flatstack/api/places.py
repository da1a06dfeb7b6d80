"""Where the daemon keeps things: every place has a flag, an environment variable and a
default (root: ``/var/lib/flatstack``, ``/run/flatstack``; others: XDG directories)."""

from __future__ import annotations

import os
from dataclasses import dataclass


def _run_dir() -> str:
    if os.geteuid() == 0:
        return "/run/flatstack"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(xdg, "flatstack") if xdg else f"/tmp/flatstack-{os.geteuid()}"


def default_state_dir() -> str:
    """``$FLATSTACK_STATE_DIR``, else /var/lib/flatstack (root) or ~/.local/share/flatstack."""
    env = os.environ.get("FLATSTACK_STATE_DIR")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/lib/flatstack"
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(data, "flatstack")


def default_socket() -> str:
    """``$FLATSTACK_SOCKET``, else /run/flatstack/api.sock (root) or the XDG runtime dir."""
    return os.environ.get("FLATSTACK_SOCKET") or os.path.join(_run_dir(), "api.sock")


def default_runtime_root() -> str:
    """``$FLATSTACK_RUNTIME_ROOT``, else /run/flatstack/runtime: the engine's own flatrun
    root, apart from a user's /run/flatrun."""
    return os.environ.get("FLATSTACK_RUNTIME_ROOT") or os.path.join(_run_dir(), "runtime")


@dataclass(frozen=True)
class Places:
    """Every path the daemon uses."""

    state_dir: str
    socket: str
    runtime_root: str

    @classmethod
    def resolve(cls, state_dir: str | None = None, socket: str | None = None,
                runtime_root: str | None = None) -> Places:
        """Flags first, then environment, then defaults; all made absolute."""
        return cls(os.path.abspath(state_dir or default_state_dir()),
                   os.path.abspath(socket or default_socket()),
                   os.path.abspath(runtime_root or default_runtime_root()))

    @property
    def run_dir(self) -> str:
        """The socket's directory: the pidfile and the supervisor's socket live there."""
        return os.path.dirname(self.socket)

    @property
    def pidfile(self) -> str:
        return os.path.join(self.run_dir, "daemon.pid")

    @property
    def supervisor_socket(self) -> str:
        return os.path.join(self.run_dir, "supervisor.sock")

    @property
    def log_dir(self) -> str:
        return os.path.join(self.state_dir, "daemon")
