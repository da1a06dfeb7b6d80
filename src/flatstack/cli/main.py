"""``flatstack``: the engine's command line.

Each command group lives in its own module and registers itself on :data:`app`
(``flatstack image ...`` in ``cli/image.py``); this module only assembles them.
"""

from __future__ import annotations

import typer

from flatstack import __version__

app = typer.Typer(name="flatstack", no_args_is_help=True, add_completion=False,
                  help="Containers straight on bare metal.")


@app.callback()
def _root() -> None:
    """Containers straight on bare metal: images, containers, apps."""


@app.command()
def version() -> None:
    """Print flatstack's version."""
    typer.echo(f"flatstack {__version__}")


def _register() -> None:
    import importlib

    for name in ("image",):
        try:
            module = importlib.import_module(f"flatstack.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"flatstack.cli.{name}":
                raise
            continue
        app.add_typer(module.app, name=name)


def main() -> None:
    """Console entry point."""
    _register()
    app()


if __name__ == "__main__":
    main()
