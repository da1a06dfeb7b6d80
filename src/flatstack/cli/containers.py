"""Container commands with docker's and podman's flags: ps, inspect, logs, exec, stop,
kill, rm, wait, stats (``run`` is in ``cli/run.py``). Each is one or two API calls."""

from __future__ import annotations

import json

from flatstack.cli import _format as fmt
from flatstack.cli._api import client, errors
from flatstack.cli._params import Argument, Exit, Option, echo, to_typer
from flatstack.cli._stream import exit_code, terminal, url, write_frames
from flatstack.cli.run import _env, run
from flatstack.errors import ConfigError, FlatstackError

TYPE_CHECKING = False  # the typing module costs ~5 ms of CLI start-up
if TYPE_CHECKING:
    from typing import Any


# -- listing and inspecting ----------------------------------------------------------
@errors
def ps(all: bool = Option(False, "-a", "--all", help="Also exited containers."),
       quiet: bool = Option(False, "-q", "--quiet", help="Ids only."),
       format: str = Option("table", "--format", help="table or json."),
       no_trunc: bool = Option(False, "--no-trunc", help="Full ids and commands.")
       ) -> None:
    """List containers (running ones; -a: all)."""
    if format not in ("table", "json"):
        raise ConfigError("--format", f"unknown format {format!r} (table or json)")
    records = client().call("GET", url("containers"), params={"all": all})
    if quiet:
        for c in records:
            echo(c["id"] if no_trunc else c["id"][:12])
        return
    if format == "json":
        echo(json.dumps(records, indent=2))
        return
    rows = []
    for c in records:
        command = " ".join(c.get("command") or [])
        if not no_trunc and len(command) > 22:
            command = command[:19] + "..."
        rows.append([c["id"] if no_trunc else c["id"][:12], c.get("image", ""),
                     json.dumps(command), fmt.ago(c.get("created")), fmt.status(c),
                     ", ".join(c.get("ports") or []), c.get("name", "")])
    echo(fmt.table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS",
                          "NAMES"], rows))


@errors
def inspect(containers: list[str] = Argument(..., help="Ids, id prefixes or names.")  # noqa: B008
            ) -> None:
    """Print containers' records as a JSON array."""
    api = client()
    echo(json.dumps([api.call("GET", url("containers", c)) for c in containers],
                          indent=2))


@errors
def logs(container: str,
         follow: bool = Option(False, "-f", "--follow", help="Keep printing until "
                                     "the container exits."),
         tail: int = Option(None, "-n", "--tail", help="Only the last N lines."),
         timestamps: bool = Option(False, "-t", "--timestamps",
                                         help="Prefix each line with its time.")) -> None:
    """Print a container's output (stdout to stdout, stderr to stderr)."""
    if tail is not None and tail < 0:
        raise ConfigError("--tail", f"must be >= 0, got {tail}")
    resp = client(timeout=None).open("GET", url("containers", container, "logs"), params={
        "follow": follow, "tail": tail, "timestamps": timestamps})
    doc = write_frames(resp)
    if "error" in doc:
        raise FlatstackError(doc["error"])


@errors
def exec_(container: str = Argument(...),
          command: list[str] = Argument(..., help="Command and arguments."),  # noqa: B008
          interactive: bool = Option(False, "-i", "--interactive",
                                           help="Keep stdin open."),
          tty: bool = Option(False, "-t", "--tty", help="Allocate a terminal."),
          detach: bool = Option(False, "-d", "--detach", help="Do not wait."),
          env: list[str] = Option([], "-e", "--env", help="KEY=VALUE."),  # noqa: B008
          user: str = Option(None, "-u", "--user", help="uid[:gid] or name."),
          workdir: str = Option(None, "-w", "--workdir", help="Working directory.")
          ) -> None:
    """Run a command in a running container; exit with its exit code."""
    if interactive and not tty:
        raise ConfigError("--interactive", "stdin is only attached through a terminal: "
                          "use -it")
    body: dict[str, Any] = {"command": list(command), "env": _env(env), "user": user,
                            "workdir": workdir, "tty": tty, "detach": detach}
    if tty and not detach:
        raise Exit(_exec_tty(container, body))
    resp = client(timeout=None).open("POST", url("containers", container, "exec"), body=body)
    doc = write_frames(resp)
    if "error" in doc:
        raise FlatstackError(doc["error"])
    raise Exit(0 if detach else exit_code(doc, failure=1))


def _exec_tty(container: str, body: dict[str, Any]) -> int:
    """exec -it: the process's terminal comes to us through a console socket."""
    api = client(timeout=None)
    return exit_code(terminal(lambda path: api.open(
        "POST", url("containers", container, "exec"), body={**body, "console_socket": path})),
        failure=1)


# -- lifecycle -------------------------------------------------------------------------
def _each(refs: list[str], fn: Any) -> None:
    """Apply ``fn`` to every ref, print each that worked; exit 1 if any failed."""
    failed = False
    for ref in refs:
        try:
            fn(ref)
            echo(ref)
        except FlatstackError as err:
            echo(f"flatstack: {ref}: {err}", err=True)
            failed = True
    if failed:
        raise Exit(1)


@errors
def stop(containers: list[str],
         time: float = Option(10.0, "-t", "--time", help="Seconds before SIGKILL.")
         ) -> None:
    """Stop containers: their stop signal, then SIGKILL after -t seconds."""
    api = client(timeout=None)
    _each(containers, lambda c: api.call("POST", url("containers", c, "stop"),
                                         params={"t": time}))


@errors
def kill(containers: list[str],
         signal: str = Option("KILL", "-s", "--signal", help="Name or number.")
         ) -> None:
    """Send a signal to containers."""
    api = client()
    _each(containers, lambda c: api.call("POST", url("containers", c, "kill"),
                                         params={"signal": signal}))


@errors
def rm(containers: list[str],
       force: bool = Option(False, "-f", "--force", help="Kill running ones first.")
       ) -> None:
    """Remove containers (their root filesystems and networks; volumes stay)."""
    api = client()
    _each(containers, lambda c: api.call("DELETE", url("containers", c),
                                         params={"force": force}))


@errors
def wait(containers: list[str]) -> None:
    """Wait for containers to exit; print their exit codes."""
    api = client(timeout=None)
    for c in containers:
        record = api.call("POST", url("containers", c, "wait"))
        code = record.get("exit_code")
        echo("unknown" if code is None else str(code))


# -- stats -----------------------------------------------------------------------------
@errors
def stats(containers: list[str] = Argument(None, help="Default: every running one."),  # noqa: B008
          no_stream: bool = Option(False, "--no-stream", help="Print once."),
          format: str = Option("table", "--format", help="table or json.")) -> None:
    """Live resource use from cgroup counters (CPU, memory, network, block I/O, pids)."""
    if format not in ("table", "json"):
        raise ConfigError("--format", f"unknown format {format!r} (table or json)")
    if format == "json" or no_stream:
        rows = _stats_rows(list(containers or []))
        echo(json.dumps(rows, indent=2) if format == "json" else _stats_table(rows))
        return
    import time

    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    console = Console()
    try:
        with Live(Text(""), console=console, auto_refresh=False) as live:
            while True:
                live.update(Text(_stats_table(_stats_rows(list(containers or [])))),
                            refresh=True)
                time.sleep(1.0)
    except KeyboardInterrupt:
        return  # Ctrl-C ends the live view, as docker stats


def _stats_rows(refs: list[str]) -> list[dict[str, Any]]:
    """One row per container: the named ones, else every running one (those that go
    away meanwhile are left out)."""
    from flatstack.api.client import ApiError

    api = client()
    named = bool(refs)
    if not named:
        refs = [c["id"] for c in api.call("GET", url("containers"))]
    rows = []
    for ref in refs:
        try:
            record = api.call("GET", url("containers", ref))
            doc = api.call("GET", url("containers", ref, "stats"))
        except ApiError as err:
            if named or err.status not in (404, 409):
                raise
            continue
        rows.append({"id": record["id"], "name": record.get("name", ""), **doc})
    return rows


def _stats_table(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        mem, limit = r.get("memory_bytes") or 0, r.get("memory_limit") or 0
        out.append([r["id"][:12], r["name"], f"{r.get('cpu_percent') or 0:.2f}%",
                    f"{fmt.binary_size(mem)} / {fmt.binary_size(limit) if limit else '--'}",
                    f"{100 * mem / limit:.2f}%" if limit else "--",
                    f"{fmt.size(r.get('net_rx_bytes') or 0)} / "
                    f"{fmt.size(r.get('net_tx_bytes') or 0)}",
                    f"{fmt.size(r.get('block_read_bytes') or 0)} / "
                    f"{fmt.size(r.get('block_write_bytes') or 0)}", str(r.get("pids") or 0)])
    return fmt.table(["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %",
                      "NET I/O", "BLOCK I/O", "PIDS"], out)


# The commands ``flatstack`` runs, by name: (function, options only before the first
# argument). ``cli/_fast.py`` dispatches from this table as well.
COMMANDS: dict[str, tuple[Any, bool]] = {
    "run": (run, True), "ps": (ps, False), "inspect": (inspect, False), "logs": (logs, False),
    "exec": (exec_, True), "stop": (stop, False), "kill": (kill, False), "rm": (rm, False),
    "wait": (wait, False), "stats": (stats, False)}


def register(app: Any) -> None:
    """Add the container commands to ``app``."""
    for name, (fn, positional_last) in COMMANDS.items():
        settings = {"allow_interspersed_args": False} if positional_last else {}
        app.command(name, context_settings=settings)(to_typer(fn))
