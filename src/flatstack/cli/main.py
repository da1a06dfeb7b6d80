"""``flatstack``: the engine's command line.

Each command group lives in its own module and registers itself on the typer app of
:mod:`flatstack.cli._app` (``flatstack image ...`` in ``cli/image.py``, the container
commands in ``cli/containers.py`` and ``cli/run.py``, ``flatstack daemon`` in
``cli/daemon.py``, apps in ``cli/apps.py``). Everything but ``daemon`` talks to the
daemon's API over its socket.

:func:`main` first offers the command line to :mod:`flatstack.cli._fast`, which runs the
hot commands (run, ps, logs, exec, ...) without importing typer and rich: their imports
cost more than the daemon's side of a ``run --rm``. The typer app, built only when the
fast path declines, takes everything else (help, other commands, bad input).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # the typing module costs ~5 ms of CLI start-up
if TYPE_CHECKING:
    from typing import Any


def _register() -> Any:
    """The typer app with every command registered."""
    from flatstack.cli._app import register

    return register()


def __getattr__(name: str) -> Any:
    if name == "app":
        return _register()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Console entry point: the fast path, else the typer app."""
    from flatstack.cli._fast import dispatch

    if dispatch(sys.argv[1:]):
        return
    _register()(prog_name="flatstack")


if __name__ == "__main__":
    main()
