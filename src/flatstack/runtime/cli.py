"""flatrun's command line: runc's verbs, flags and exit behaviour.

The parser is table-driven and hand-rolled on purpose: ``argparse`` costs a
few milliseconds per invocation and flatrun is invoked several times per
container.  It accepts what urfave/cli (runc's parser) accepts: ``--flag v``,
``--flag=v``, ``-flag v`` and the short aliases.
"""

from __future__ import annotations

import posix
import sys

from flatstack.errors import FlatstackError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

VERSION = "0.1.0"
SPEC_VERSION = "1.2.0"

# kind: "bool", "str", "int", "list", "float"
GLOBAL_FLAGS: dict[str, str] = {
    "root": "str", "log": "str", "log-format": "str", "systemd-cgroup": "bool",
    "debug": "bool", "criu": "str", "rootless": "str", "help": "bool", "version": "bool",
}
ALIASES_GLOBAL = {"h": "help", "v": "version"}

CREATE_FLAGS = {"bundle": "str", "pid-file": "str", "console-socket": "str",
                "preserve-fds": "int", "no-pivot": "bool", "no-new-keyring": "bool",
                "pidfd-socket": "str"}
COMMANDS: dict[str, tuple[dict[str, str], dict[str, str], str]] = {
    # name: (flags, short aliases, usage)
    "create": (CREATE_FLAGS, {"b": "bundle"}, "create [options] <container-id>"),
    "run": (dict(CREATE_FLAGS, detach="bool", keep="bool", **{"no-subreaper": "bool"}),
            {"b": "bundle", "d": "detach"}, "run [options] <container-id>"),
    "start": ({}, {}, "start <container-id>"),
    "state": ({}, {}, "state <container-id>"),
    "kill": ({"all": "bool"}, {"a": "all"}, "kill [--all] <container-id> [signal]"),
    "delete": ({"force": "bool"}, {"f": "force"}, "delete [--force] <container-id>"),
    "exec": ({"process": "str", "tty": "bool", "detach": "bool", "pid-file": "str",
              "console-socket": "str", "env": "list", "cwd": "str", "user": "str",
              "cap": "list", "no-new-privs": "bool", "preserve-fds": "int",
              "additional-gids": "list", "apparmor": "str", "process-label": "str",
              "ignore-paused": "bool", "cgroup": "list", "pidfd-socket": "str"},
             {"p": "process", "t": "tty", "d": "detach", "e": "env", "u": "user",
              "c": "cap", "g": "additional-gids"},
             "exec [options] <container-id> <command> [args...]"),
    "ps": ({"format": "str"}, {"f": "format"}, "ps [--format table|json] <container-id>"),
    "list": ({"format": "str", "quiet": "bool"}, {"f": "format", "q": "quiet"},
             "list [--format table|json] [--quiet]"),
    "pause": ({}, {}, "pause <container-id>"),
    "resume": ({}, {}, "resume <container-id>"),
    "update": ({"resources": "str", "memory": "str", "memory-reservation": "str",
                "memory-swap": "str", "cpu-shares": "str", "cpu-quota": "str",
                "cpu-period": "str", "cpu-rt-runtime": "str", "cpu-rt-period": "str",
                "cpuset-cpus": "str", "cpuset-mems": "str", "pids-limit": "str",
                "blkio-weight": "str", "kernel-memory": "str", "kernel-memory-tcp": "str",
                "l3-cache-schema": "str", "mem-bw-schema": "str"},
               {"r": "resources"}, "update [options] <container-id>"),
    "events": ({"stats": "bool", "interval": "str"}, {}, "events [--stats] <container-id>"),
    "spec": ({"bundle": "str", "rootless": "bool"}, {"b": "bundle"}, "spec [--rootless]"),
    "features": ({}, {}, "features"),
}
COMMANDS["ls"] = COMMANDS["list"]
COMMANDS["rm"] = COMMANDS["delete"]


class UsageError(FlatstackError):
    """Wrong flags or arguments."""


def parse_flags(args: list[str], table: dict[str, str], aliases: dict[str, str],
                *, stop_at_positional: bool) -> tuple[dict[str, Any], list[str]]:
    """Parse flags from ``args``; returns (flags, positional arguments)."""
    flags: dict[str, Any] = {}
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            positional.extend(args[i + 1:])
            break
        if not arg.startswith("-") or arg == "-":
            if stop_at_positional:
                positional.extend(args[i:])
                break
            positional.append(arg)
            i += 1
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        name = aliases.get(name, name)
        kind = table.get(name)
        if kind is None:
            raise UsageError(f"flag provided but not defined: {arg.partition('=')[0]}")
        if kind == "bool":
            flags[name] = value.lower() not in ("false", "0") if eq else True
            i += 1
            continue
        if not eq:
            if i + 1 >= len(args):
                raise UsageError(f"flag needs an argument: {arg}")
            value = args[i + 1]
            i += 1
        i += 1
        if kind == "int":
            try:
                flags[name] = int(value)
            except ValueError:
                raise UsageError(f"invalid value {value!r} for flag --{name}: "
                                 "expected an integer") from None
        elif kind == "list":
            flags.setdefault(name, []).append(value)
        else:
            flags[name] = value
    return flags, positional


class Logger:
    """runc's --log / --log-format: errors (and debug lines) to a file."""

    def __init__(self, path: str | None, fmt: str, debug: bool) -> None:
        self.path = path
        self.fmt = fmt
        self.debug_enabled = debug

    def write(self, level: str, message: str) -> None:
        if not self.path:
            return
        from flatstack.runtime.state import rfc3339_now

        if self.fmt == "json":
            from flatstack import _fastjson

            line = _fastjson.dumps({"level": level, "msg": message, "time": rfc3339_now()},
                                   compact=True)
        else:
            line = f'time="{rfc3339_now()}" level={level} msg="{message}"'
        try:
            fd = posix.open(self.path,
                            posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT | posix.O_CLOEXEC,
                            0o644)
            try:
                posix.write(fd, (line + "\n").encode())
            finally:
                posix.close(fd)
        except OSError:
            pass

    def debug(self, message: str) -> None:
        if self.debug_enabled:
            self.write("debug", message)


def _need_id(positional: list[str], usage: str) -> str:
    if not positional:
        raise UsageError(f"container id cannot be empty; usage: flatrun {usage}")
    return positional[0]


def _exact(positional: list[str], count: int, usage: str) -> None:
    if len(positional) > count:
        raise UsageError(f"too many arguments: {' '.join(positional[count:])}; "
                         f"usage: flatrun {usage}")


def dispatch(command: str, flags: dict[str, Any], positional: list[str],
             gflags: dict[str, Any]) -> int:
    """Run one command; returns the process exit status."""
    from flatstack._fastos import abspath
    from flatstack.runtime.state import default_root

    root = abspath(gflags.get("root") or default_root())
    usage = COMMANDS[command][2]
    out = sys.stdout
    if command in ("create", "run"):
        from flatstack.runtime.create import CreateOptions

        cid = _need_id(positional, usage)
        _exact(positional, 1, usage)
        opts = CreateOptions(
            root=root, container_id=cid, bundle=flags.get("bundle") or posix.getcwd(),
            pid_file=flags.get("pid-file"), console_socket=flags.get("console-socket"),
            preserve_fds=_preserve_fds(flags), no_pivot=flags.get("no-pivot", False),
            no_new_keyring=flags.get("no-new-keyring", False),
            systemd_cgroup=gflags.get("systemd-cgroup", False),
        )
        if command == "create":
            from flatstack.runtime.create import create

            create(opts)
            return 0
        from flatstack.runtime.verbs.run import run

        return run(opts, detach=flags.get("detach", False), keep=flags.get("keep", False))
    if command == "start":
        from flatstack.runtime.verbs.start import start

        start(root, _need_id(positional, usage))
        return 0
    if command == "state":
        from flatstack.runtime.verbs.query import state

        out.write(state(root, _need_id(positional, usage)) + "\n")
        return 0
    if command == "kill":
        from flatstack.runtime.verbs.kill import kill

        cid = _need_id(positional, usage)
        _exact(positional, 2, usage)
        kill(root, cid, positional[1] if len(positional) > 1 else "SIGTERM",
             all_=flags.get("all", False))
        return 0
    if command in ("delete", "rm"):
        from flatstack.runtime.verbs.delete import delete

        if not positional:
            _need_id(positional, usage)
        failed = 0
        for cid in positional:
            try:
                delete(root, cid, force=flags.get("force", False))
            except FlatstackError as err:
                if flags.get("force") and "does not exist" in str(err):
                    continue
                if len(positional) == 1:
                    raise
                sys.stderr.write(f"flatrun: {err}\n")
                failed = 1
        return failed
    if command == "exec":
        return _exec(root, flags, positional, usage)
    if command == "ps":
        from flatstack.runtime.verbs.query import ps

        cid = _need_id(positional, usage)
        out.write(ps(root, cid, flags.get("format", "table"), positional[1:]))
        return 0
    if command in ("list", "ls"):
        from flatstack.runtime.verbs.query import list_containers

        out.write(list_containers(root, flags.get("format", "table"), flags.get("quiet", False)))
        return 0
    if command in ("pause", "resume"):
        from flatstack.runtime.verbs import pause

        getattr(pause, command)(root, _need_id(positional, usage))
        return 0
    if command == "update":
        from flatstack.runtime.verbs.update import FLAG_FIELDS, resources_from, update

        cid = _need_id(positional, usage)
        resources = resources_from({k: v for k, v in flags.items() if k in FLAG_FIELDS},
                                   flags.get("resources"))
        update(root, cid, resources)
        return 0
    if command == "events":
        from flatstack.runtime.verbs.events import events

        interval = _duration(flags.get("interval", "5s"))
        events(root, _need_id(positional, usage), stats=flags.get("stats", False),
               interval=interval)
        return 0
    if command == "spec":
        return _spec(flags)
    if command == "features":
        import json

        from flatstack.oci.features import features

        out.write(json.dumps(features(), indent=4) + "\n")
        return 0
    raise UsageError(f"unknown command {command!r}")


def _preserve_fds(flags: dict[str, Any]) -> int:
    count = int(flags.get("preserve-fds", 0))
    if count < 0:
        raise UsageError("--preserve-fds: must not be negative")
    listen = posix.environ.get(b"LISTEN_FDS", b"").decode()
    if listen and listen.isdigit():
        count = max(count, int(listen))
    return count


def _duration(text: str) -> float:
    """Go-style durations: 5s, 100ms, 1m."""
    for suffix, mult in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(suffix):
            try:
                return float(text[: -len(suffix)]) * mult
            except ValueError:
                break
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"--interval: invalid duration {text!r}") from None


def _exec(root: str, flags: dict[str, Any], positional: list[str], usage: str) -> int:
    from flatstack.runtime.verbs.exec import ExecOptions, exec_process

    cid = _need_id(positional, usage)
    gids = []
    for value in flags.get("additional-gids", []):
        try:
            gids.append(int(value))
        except ValueError:
            raise UsageError(f"--additional-gids: invalid gid {value!r}") from None
    opts = ExecOptions(
        root=root, container_id=cid, args=positional[1:], process_file=flags.get("process"),
        tty=flags.get("tty", False), detach=flags.get("detach", False),
        pid_file=flags.get("pid-file"), console_socket=flags.get("console-socket"),
        env=flags.get("env"), cwd=flags.get("cwd"), user=flags.get("user"),
        caps=flags.get("cap"), no_new_privs=flags.get("no-new-privs", False),
        preserve_fds=_preserve_fds(flags), additional_gids=gids,
    )
    return exec_process(opts)


def _spec(flags: dict[str, Any]) -> int:
    import json
    import os

    from flatstack.oci.defaults import default_spec

    bundle = flags.get("bundle") or "."
    path = os.path.join(bundle, "config.json")
    if os.path.exists(path):
        raise FlatstackError(f"file {path} exists: remove it first")
    rootless = flags.get("rootless", False)
    spec = default_spec(rootless=rootless, userns=not rootless)
    with open(path, "w") as f:
        json.dump(spec, f, indent=4)
        f.write("\n")
    return 0


HELP = """flatrun: an OCI runtime with runc's command line (flatstack)

usage: flatrun [global options] command [command options] [arguments...]

commands:
  create    create a container            run       create and start a container
  start     start a created container     state     print a container's state
  kill      signal a container            delete    delete a container
  exec      run a process in a container  ps        list a container's processes
  list      list containers               pause     freeze a container
  resume    thaw a container              update    change resource limits
  events    print resource statistics     spec      write a default config.json
  features  print the features document

global options:
  --root DIR          state directory (default /run/flatrun)
  --log FILE          log file        --log-format text|json
  --systemd-cgroup    accepted; the cgroupfs driver is used
  --debug             debug logging   --version, -v
"""


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns (and on the console, exits with) the status."""
    args = sys.argv[1:] if argv is None else argv
    logger = Logger(None, "text", False)
    try:
        gflags, rest = parse_flags(args, GLOBAL_FLAGS, ALIASES_GLOBAL, stop_at_positional=True)
        logger = Logger(gflags.get("log"), gflags.get("log-format", "text"),
                        gflags.get("debug", False))
        if gflags.get("log-format", "text") not in ("text", "json"):
            raise UsageError(f"--log-format: invalid format {gflags['log-format']!r}")
        if gflags.get("version"):
            sys.stdout.write(f"flatrun version {VERSION}\nspec: {SPEC_VERSION}\n")
            return 0
        if gflags.get("help") or not rest:
            sys.stdout.write(HELP)
            return 0 if gflags.get("help") else 1
        command = rest[0]
        if command not in COMMANDS:
            raise UsageError(f"no such command {command!r}; see flatrun --help")
        table, aliases, _ = COMMANDS[command]
        stop = command == "exec"
        flags, positional = parse_flags(rest[1:], dict(table, help="bool"),
                                        dict(aliases, h="help"), stop_at_positional=stop)
        if stop and positional:
            # exec: flags may still follow the id, before the command
            more, positional2 = parse_flags(positional[1:], table, aliases,
                                            stop_at_positional=True)
            flags.update(more)
            positional = positional[:1] + positional2
        if flags.get("help"):
            sys.stdout.write(f"usage: flatrun {COMMANDS[command][2]}\n")
            return 0
        logger.debug(f"{command} {' '.join(positional)}")
        return dispatch(command, flags, positional, gflags)
    except FlatstackError as err:
        message = str(err)
        logger.write("error", message)
        sys.stderr.write(f"flatrun: {message}\n")
        return err.exit_code if err.exit_code else 1
    except KeyboardInterrupt:
        return 130


def run() -> None:
    """Console entry point: ``main`` then an immediate exit.

    Interpreter finalization (module teardown, ctypes and all) costs about 4 ms per
    call, and flatrun runs several times per container; every file flatrun writes is
    closed explicitly, so only the standard streams need flushing.
    """
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        code = code or 1
    posix._exit(code)


if __name__ == "__main__":
    run()
