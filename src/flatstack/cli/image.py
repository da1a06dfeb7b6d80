"""``flatstack image ...``: pull, import, list, inspect, remove, prune, unpack."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from flatstack.errors import FlatstackError

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Images: pull, import, ls, inspect, rm, prune, unpack.")
_state: dict[str, str | None] = {"dir": None}
F = TypeVar("F", bound=Callable[..., Any])


@app.callback()
def _options(state_dir: str = typer.Option(
        None, "--state-dir", envvar="FLATSTACK_STATE_DIR", metavar="DIR",
        help="State directory (default /var/lib/flatstack).")) -> None:
    """Images: pull, import, ls, inspect, rm, prune, unpack."""
    _state["dir"] = state_dir


def _errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FlatstackError as err:
            typer.echo(f"flatstack: {err}", err=True)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("flatstack: interrupted", err=True)
            raise typer.Exit(130) from None
    return wrapper  # type: ignore[return-value]


def _store() -> Any:
    from flatstack.image.store import Store

    return Store(_state["dir"])


class _Bars:
    """Rich progress bars on a terminal; nothing otherwise."""

    def __init__(self) -> None:
        self.enabled = sys.stdout.isatty()
        self.tasks: dict[str, Any] = {}
        self.bars: Any = None
        if self.enabled:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TransferSpeedColumn,
            )

            self.bars = Progress(TextColumn("{task.description}"), BarColumn(),
                                 DownloadColumn(), TransferSpeedColumn(), transient=False)

    def __enter__(self) -> _Bars:
        if self.bars is not None:
            self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bars is not None:
            self.bars.stop()

    def start(self, key: str, description: str, total: int) -> None:
        if self.bars is not None:
            self.tasks[key] = self.bars.add_task(description, total=total or None)

    def advance(self, key: str, amount: int) -> None:
        if self.bars is not None and key in self.tasks:
            self.bars.advance(self.tasks[key], amount)

    def done(self, key: str) -> None:
        if self.bars is not None and key in self.tasks:
            task = self.tasks[key]
            total = self.bars.tasks[task].total
            self.bars.update(task, completed=total or self.bars.tasks[task].completed,
                             total=total or self.bars.tasks[task].completed)


@app.command()
@_errors
def pull(ref: str,
         platform: str = typer.Option(None, "--platform", help="os/arch[/variant]; "
                                      "default linux/amd64."),
         ca_file: str = typer.Option(None, "--ca-file", help="PEM CA bundle to trust."),
         insecure: bool = typer.Option(False, "--insecure",
                                       help="Allow plain http and unverified TLS."),
         unpack: bool = typer.Option(True, "--unpack/--no-unpack",
                                     help="Unpack the layers after pulling.")) -> None:
    """Pull an image from a registry."""
    from flatstack.image.registry import pull as do_pull
    from flatstack.image.unpack import unpack_image

    store = _store()
    with _Bars() as bars:
        name = do_pull(store, ref, platform=platform, ca_file=ca_file, insecure=insecure,
                       progress=bars)
        if unpack:
            unpack_image(store, name, bars)
    typer.echo(f"{name} {store.image(name).digest}")


@app.command("import")
@_errors
def import_(path: str,
            name: str = typer.Option(None, "--name", help="Name for the image."),
            platform: str = typer.Option(None, "--platform",
                                         help="os/arch[/variant] for multi-platform input.")
            ) -> None:
    """Import an OCI layout directory, oci-archive or docker-archive tarball."""
    from flatstack.image.archive import import_image

    for imported in import_image(_store(), path, name, platform):
        typer.echo(imported)


@app.command()
@_errors
def unpack(ref: str) -> None:
    """Unpack an image's layers (once each); print their directories, bottom first."""
    from flatstack.image.unpack import unpack_image

    store = _store()
    with _Bars() as bars:
        dirs = unpack_image(store, ref, bars)
    for d in dirs:
        typer.echo(d)


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


@app.command("ls")
@_errors
def ls(fmt: str = typer.Option("table", "--format", help="table or json."),
       quiet: bool = typer.Option(False, "-q", "--quiet", help="Names only.")) -> None:
    """List named images."""
    images = _store().images()
    rows = [{"Name": i.name, "Digest": i.digest, "Id": i.config_digest,
             "Created": i.config.get("created", ""), "Size": i.size} for i in images]
    if quiet:
        for r in rows:
            typer.echo(r["Name"])
    elif fmt == "json":
        typer.echo(json.dumps(rows, indent=2))
    elif fmt == "table":
        typer.echo(f"{'NAME':<50} {'DIGEST':<19} {'CREATED':<20} SIZE")
        for r in rows:
            typer.echo(f"{r['Name']:<50} {r['Digest'][:19]:<19} {r['Created'][:19]:<20} "
                       f"{_human(r['Size'])}")
    else:
        raise FlatstackError(f"--format: unknown format {fmt!r} (table or json)")


@app.command()
@_errors
def inspect(refs: list[str]) -> None:
    """Print images' manifests and configs as JSON."""
    store = _store()
    out = []
    for ref in refs:
        i = store.image(ref)
        out.append({"Name": i.name, "Digest": i.digest, "Id": i.config_digest,
                    "Created": i.config.get("created"),
                    "Architecture": i.config.get("architecture"), "Os": i.config.get("os"),
                    "Size": i.size, "Config": i.config.get("config") or {},
                    "RootFS": i.config.get("rootfs") or {}, "Manifest": i.manifest})
    typer.echo(json.dumps(out, indent=2))


@app.command()
@_errors
def rm(refs: list[str]) -> None:
    """Remove images by name (their blobs go unless another image uses them)."""
    store = _store()
    names = [store.lookup(ref)[0] for ref in refs]
    for name in names:
        store.untag(name)
        typer.echo(f"untagged {name}")
    store.gc()


@app.command()
@_errors
def prune() -> None:
    """Remove blobs and unpacked layers no named image references."""
    count, freed = _store().gc()
    typer.echo(f"removed {count} blobs/layers, freed {_human(freed)}")
