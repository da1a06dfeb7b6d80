"""``flatstack image ...``: pull, import, list, inspect, remove, prune, unpack.

Through the daemon's API by default (``--socket`` / ``FLATSTACK_SOCKET``). With
``--state-dir`` (or ``FLATSTACK_STATE_DIR``) the commands work on that store directly,
without a daemon, as podman does with ``--root`` (the store's locks make that safe
beside a running daemon).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import typer

from flatstack.cli._api import client, errors
from flatstack.cli._params import echo
from flatstack.errors import FlatstackError

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Images: pull, import, ls, inspect, rm, prune, unpack.")
_state: dict[str, str | None] = {"dir": None}


@app.callback()
def _options(state_dir: str = typer.Option(
        None, "--state-dir", envvar="FLATSTACK_STATE_DIR", metavar="DIR",
        help="Work on this state directory's store directly, without the daemon.")) -> None:
    """Images: pull, import, ls, inspect, rm, prune, unpack."""
    _state["dir"] = state_dir


def _direct() -> bool:
    return bool(_state["dir"])


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


def pull_via_api(body: dict[str, Any]) -> tuple[str, str]:
    """Pull through the daemon drawing its progress events; (name, digest)."""
    from flatstack.api.client import path

    result: tuple[str, str] | None = None
    with _Bars() as bars:
        for event in client(timeout=None).lines("POST", path("images", "pull"), body=body):
            kind = event.get("event")
            if kind == "start":
                bars.start(event["key"], event.get("description", ""), event.get("total", 0))
            elif kind == "progress":
                bars.advance(event["key"], int(event.get("advance", 0)))
            elif kind == "done":
                bars.done(event["key"])
            elif kind == "pulled":
                result = (event["name"], event["digest"])
            elif kind == "error":
                raise FlatstackError(event.get("error", "pull failed"))
    if result is None:
        raise FlatstackError("pull: the daemon ended the stream without a result")
    return result


@app.command()
@errors
def pull(ref: str,
         platform: str = typer.Option(None, "--platform", help="os/arch or os/arch/variant; "
                                      "default linux/amd64."),
         ca_file: str = typer.Option(None, "--ca-file", help="PEM CA bundle to trust."),
         insecure: bool = typer.Option(False, "--insecure",
                                       help="Allow plain http and unverified TLS."),
         unpack: bool = typer.Option(True, "--unpack/--no-unpack",
                                     help="Unpack the layers after pulling.")) -> None:
    """Pull an image from a registry."""
    if not _direct():
        name, digest = pull_via_api({
            "ref": ref, "platform": platform, "insecure": insecure, "unpack": unpack,
            "ca_file": os.path.abspath(ca_file) if ca_file else None})
        echo(f"{name} {digest}")
        return
    from flatstack.image.registry import pull as do_pull
    from flatstack.image.unpack import unpack_image

    store = _store()
    with _Bars() as bars:
        name = do_pull(store, ref, platform=platform, ca_file=ca_file, insecure=insecure,
                       progress=bars)
        if unpack:
            unpack_image(store, name, bars)
    echo(f"{name} {store.image(name).digest}")


@app.command("import")
@errors
def import_(path: str,
            name: str = typer.Option(None, "--name", help="Name for the image."),
            platform: str = typer.Option(None, "--platform",
                                         help="os/arch or os/arch/variant (multi-platform input).")
            ) -> None:
    """Import an OCI layout directory, oci-archive or docker-archive tarball."""
    if _direct():
        from flatstack.image.archive import import_image

        names = import_image(_store(), path, name, platform)
    else:
        from flatstack.api.client import path as api_path

        names = client().call("POST", api_path("images", "import"), body={
            "path": os.path.abspath(path), "name": name, "platform": platform})["names"]
    for imported in names:
        echo(imported)


@app.command()
@errors
def unpack(ref: str) -> None:
    """Unpack an image's layers (once each); print their directories, bottom first
    (works on the store directly: give --state-dir)."""
    from flatstack.image.unpack import unpack_image

    if not _direct():
        raise FlatstackError("image unpack works on a store directly: give --state-dir "
                             "(pulls through the daemon unpack already)")
    store = _store()
    with _Bars() as bars:
        dirs = unpack_image(store, ref, bars)
    for d in dirs:
        echo(d)


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


@app.command("ls")
@errors
def ls(fmt: str = typer.Option("table", "--format", help="table or json."),
       quiet: bool = typer.Option(False, "-q", "--quiet", help="Names only.")) -> None:
    """List named images."""
    if fmt not in ("table", "json"):
        raise FlatstackError(f"--format: unknown format {fmt!r} (table or json)")
    if _direct():
        from flatstack.api.views import image_summary

        rows = [image_summary(i) for i in _store().images()]
    else:
        from flatstack.api.client import path

        rows = client().call("GET", path("images"))
    if quiet:
        for r in rows:
            echo(r["Name"])
    elif fmt == "json":
        echo(json.dumps(rows, indent=2))
    else:
        echo(f"{'NAME':<50} {'DIGEST':<19} {'CREATED':<20} SIZE")
        for r in rows:
            echo(f"{r['Name']:<50} {r['Digest'][:19]:<19} {r['Created'][:19]:<20} "
                       f"{_human(r['Size'])}")


@app.command()
@errors
def inspect(refs: list[str]) -> None:
    """Print images' manifests and configs as JSON."""
    if _direct():
        from flatstack.api.views import image_detail

        store = _store()
        out = [image_detail(store.image(ref)) for ref in refs]
    else:
        from flatstack.api.client import path

        api = client()
        out = [api.call("GET", path("images", ref)) for ref in refs]
    echo(json.dumps(out, indent=2))


@app.command()
@errors
def rm(refs: list[str],
       force: bool = typer.Option(False, "-f", "--force",
                                  help="Untag even if a container uses the image.")) -> None:
    """Remove images by name (their blobs go unless another image or a container uses them)."""
    if not _direct():
        from flatstack.api.client import path

        api = client()
        for ref in refs:
            done = api.call("DELETE", path("images", ref), params={"force": force})
            echo(f"untagged {done['untagged']}")
        return
    store = _store()
    for ref in [store.lookup(ref)[0] for ref in refs]:
        name = store.remove(ref, force=force)
        echo(f"untagged {name}")
    store.gc()


@app.command()
@errors
def prune() -> None:
    """Remove blobs and unpacked layers no named image references."""
    if _direct():
        count, freed = _store().gc()
    else:
        from flatstack.api.client import path

        done = client().call("POST", path("images", "prune"))
        count, freed = done["removed"], done["freed"]
    echo(f"removed {count} blobs/layers, freed {_human(freed)}")
