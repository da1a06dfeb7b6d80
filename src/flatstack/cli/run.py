"""``flatstack run``: docker's and podman's flags; foreground runs stream the output and
exit with the container's exit code, ``-t`` proxies a terminal, ``-d`` prints the id."""

from __future__ import annotations

import json
import os
import sys

from flatstack.cli._api import client, errors, fail
from flatstack.cli._params import Argument, Exit, Option, echo
from flatstack.cli._stream import exit_code, terminal, url, write_frames
from flatstack.errors import ConfigError, FlatstackError

TYPE_CHECKING = False  # the typing module costs ~5 ms of CLI start-up
if TYPE_CHECKING:
    from typing import Any


def _env(entries: list[str]) -> list[str]:
    """``KEY=VALUE`` as given; ``KEY`` alone takes the value from this shell (dropped if
    unset, as docker does)."""
    out = []
    for i, entry in enumerate(entries):
        key, eq, _ = entry.partition("=")
        if not key:
            raise ConfigError(f"--env[{i}]", f"{entry!r}: expected KEY=VALUE or KEY")
        if eq:
            out.append(entry)
        elif key in os.environ:
            out.append(f"{key}={os.environ[key]}")
    return out


def _labels(entries: list[str]) -> dict[str, str]:
    out = {}
    for i, entry in enumerate(entries):
        key, _, value = entry.partition("=")
        if not key:
            raise ConfigError(f"--label[{i}]", f"{entry!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _entrypoint(text: str | None) -> list[str] | None:
    """``--entrypoint``: one program, "" to clear, or a JSON array (as podman)."""
    if text is None:
        return None
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError as err:
            raise ConfigError("--entrypoint", f"invalid JSON array: {err}") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError("--entrypoint", "expected a JSON array of strings")
        return value
    return [text] if text else []


@errors
def run(image: str = Argument(..., help="Image reference (pulled when missing)."),
        command: list[str] = Argument(None, help="Command and arguments (replace "  # noqa: B008
                                            "the image's Cmd)."),
        detach: bool = Option(False, "-d", "--detach",
                                    help="Run in the background; print the id."),
        remove: bool = Option(False, "--rm", help="Remove the container when it "
                                    "exits."),
        name: str = Option(None, "--name", help="Container name."),
        env: list[str] = Option([], "-e", "--env", help="KEY=VALUE (KEY alone: "  # noqa: B008
                                      "from this shell)."),
        publish: list[str] = Option([], "-p", "--publish",  # noqa: B008
                                          help="[IP:]HOST:CTR, /udp after it for UDP."),
        volume: list[str] = Option([], "-v", "--volume",  # noqa: B008
                                         help="/host:/ctr[:ro] or name:/ctr[:ro]."),
        memory: str = Option(None, "-m", "--memory", help="Memory limit: 512m, 1g."),
        cpus: float = Option(None, "--cpus", help="CPU quota in cores (1.5)."),
        pids_limit: int = Option(None, "--pids-limit", help="Maximum processes."),
        network: str = Option("bridge", "--network", "--net",
                                    help="none, host, bridge or a network name."),
        user: str = Option(None, "-u", "--user", help="uid[:gid] or name[:group]."),
        workdir: str = Option(None, "-w", "--workdir", help="Working directory."),
        entrypoint: str = Option(None, "--entrypoint", help="Program replacing the "
                                       "image's Entrypoint (\"\" clears it)."),
        hostname: str = Option(None, "-h", "--hostname", help="Host name."),
        label: list[str] = Option([], "-l", "--label", help="KEY=VALUE."),  # noqa: B008
        interactive: bool = Option(False, "-i", "--interactive",
                                         help="Keep stdin open (with -t: the terminal)."),
        tty: bool = Option(False, "-t", "--tty", help="Allocate a terminal.")) -> None:
    """Run a command in a new container (foreground: its output, then its exit code)."""
    from flatstack.api.units import parse_size

    try:  # any refusal before the container runs exits 125, as docker run does
        if cpus is not None and cpus <= 0:
            raise ConfigError("--cpus", f"must be positive, got {cpus}")
        if pids_limit is not None and pids_limit <= 0:
            raise ConfigError("--pids-limit", f"must be positive, got {pids_limit}")
        body: dict[str, Any] = {
            "image": image, "command": list(command) if command else None,
            "entrypoint": _entrypoint(entrypoint), "name": name, "env": _env(env),
            "ports": list(publish), "volumes": [_volume(v) for v in volume],
            "memory": parse_size(memory, "--memory") if memory is not None else None,
            "cpus": cpus, "pids_limit": pids_limit, "network": network, "user": user,
            "workdir": workdir, "hostname": hostname, "labels": _labels(label), "tty": tty,
            "interactive": interactive, "remove": remove}
        if detach:
            echo(_create(body, attach=False)["id"])
            return
        code = _run_tty(body) if tty else _run_attached(body)
    except FlatstackError as err:
        raise fail(str(err), 125) from None
    raise Exit(code)


def _volume(spec: str) -> str:
    """A relative host path (``./data:/data``) made absolute: the daemon has no cwd."""
    source, sep, rest = spec.partition(":")
    if sep and (source.startswith("./") or source.startswith("../") or source == "."):
        return os.path.abspath(source) + sep + rest
    return spec


def _pull(image: str) -> None:
    """Pull with progress bars (quiet when not on a terminal), as podman run does."""
    from flatstack.cli.image import pull_via_api

    if sys.stderr.isatty():
        echo(f"Pulling {image}...", err=True)
    try:
        pull_via_api({"ref": image})
    except FlatstackError as err:
        raise FlatstackError(f"image {image!r} is not in the store and pulling it "
                             f"failed: {err}") from None


def _create(body: dict[str, Any], attach: bool) -> Any:
    """POST the container: its record, or with ``attach`` the open output stream. A
    missing image is pulled here first, with progress bars."""
    from flatstack.api.client import ApiError

    api = client(timeout=None if attach else 300.0)

    def post() -> Any:
        params = {"attach": attach, "pull": "never"}
        if attach:
            return api.open("POST", url("containers"), body=body, params=params)
        return api.call("POST", url("containers"), body=body, params=params)

    try:
        return post()
    except ApiError as err:
        if err.status != 404 or err.field != "image":
            raise
    _pull(body["image"])
    return post()


def _run_attached(body: dict[str, Any]) -> int:
    """Stream the output; Ctrl-C sends SIGINT to the container, a second one detaches."""
    import signal
    import threading

    resp = _create(body, attach=True)
    cid = resp.getheader("X-Flatstack-Container", "")
    interrupts = []

    def on_sigint(*_: object) -> None:
        interrupts.append(1)
        if len(interrupts) > 1:
            raise KeyboardInterrupt
        threading.Thread(target=_quiet_kill, args=(cid, "INT"), daemon=True).start()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        doc = write_frames(resp)
    finally:
        signal.signal(signal.SIGINT, previous)
    return exit_code(doc)


def _quiet_kill(cid: str, sig: str) -> None:
    try:
        client().call("POST", url("containers", cid, "kill"), params={"signal": sig})
    except FlatstackError:
        pass


def _run_tty(body: dict[str, Any]) -> int:
    """-t: the container's terminal comes to us through a console socket."""
    return exit_code(terminal(lambda path: _create({**body, "console_socket": path},
                                                   attach=True)))
