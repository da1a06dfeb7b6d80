"""``flatstack``: the engine's command line.

Each command group lives in its own module and registers itself on :data:`app`
(``flatstack image ...`` in ``cli/image.py``, the container commands in
``cli/containers.py`` and ``cli/run.py``, ``flatstack daemon`` in ``cli/daemon.py``);
this module only assembles them. Everything but ``daemon`` talks to the daemon's API
over its socket.
"""

from __future__ import annotations

import typer

from flatstack import __version__

app = typer.Typer(name="flatstack", no_args_is_help=True, add_completion=False,
                  help="Containers straight on bare metal.")


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
    typer.echo(f"flatstack {__version__}")


def _register() -> None:
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


def main() -> None:
    """Console entry point."""
    _register()
    app()


if __name__ == "__main__":
    main()
