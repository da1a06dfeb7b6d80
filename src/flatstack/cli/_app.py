"""The typer app behind ``flatstack``: every command with its help, and the messages
for bad input. Built only when the fast path (:mod:`flatstack.cli._fast`) declines."""

from __future__ import annotations

import typer

from flatstack import __version__
from flatstack.cli._params import echo

app = typer.Typer(name="flatstack", no_args_is_help=True, add_completion=False,
                  help="Containers straight on bare metal.")
_registered: list[bool] = []


@app.callback()
def _root(socket: str = typer.Option(
        None, "--socket", envvar="FLATSTACK_SOCKET", metavar="PATH",
        help="The daemon's API socket (default /run/flatstack/api.sock).")) -> None:
    """Containers straight on bare metal: images, containers, apps."""
    from flatstack.cli._api import set_socket

    set_socket(socket)


@app.command()
def version() -> None:
    """Print flatstack's version."""
    echo(f"flatstack {__version__}")


def register() -> typer.Typer:
    """Add every command group to :data:`app` (once); the app."""
    if _registered:
        return app
    import importlib

    for name in ("image", "bench"):
        try:
            module = importlib.import_module(f"flatstack.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"flatstack.cli.{name}":
                raise
            continue
        app.add_typer(module.app, name=name)
    from flatstack.cli import apps, containers, daemon

    containers.register(app)
    daemon.register(app)
    apps.register(app)
    _registered.append(True)
    return app
