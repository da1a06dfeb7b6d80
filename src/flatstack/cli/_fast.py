"""The CLI's fast path: well-formed hot commands run without importing typer.

``flatstack run/ps/logs/exec/stop/kill/rm/inspect/stats/wait/version`` are parsed here
from the commands' own declarations (:mod:`flatstack.cli._params`) with click's rules
(``-it``, ``-eK=V``, ``--opt=value``, ``--``, options after arguments except for
``run``/``exec``, last value wins, repeated options collect). Whatever this parser is not
sure of (``--help``, an unknown option, a missing or extra argument, a number that does
not parse) returns None and the typer app takes the whole command line, so its help,
messages and exit codes stay the only ones. typer plus rich cost ~100 ms of imports,
more than the daemon's side of a ``run --rm``.
"""

from __future__ import annotations

from flatstack.cli._params import Param, declared

TYPE_CHECKING = False  # the typing module costs ~5 ms of CLI start-up
if TYPE_CHECKING:
    from typing import Any

_SUPPORTED_KWARGS = {"help", "metavar"}
_CONVERT = {"int": int, "float": float, "str": str}


class _Spec:
    """One parameter: an option (flag, value, repeated) or a positional argument."""

    def __init__(self, name: str, annotation: str, default: Any) -> None:
        self.name = name
        self.many = annotation.startswith("list[")
        self.type = annotation[5:-1] if self.many else annotation
        self.required = default is ...
        self.default = list(default) if isinstance(default, list) else default


def _specs(fn: Any) -> tuple[dict[str, _Spec], list[_Spec]] | None:
    """(options by flag, positionals) from ``fn``'s declaration; None if it uses
    something this parser does not do (secondary flags, envvar, min, ...)."""
    defaults = declared(fn)
    while hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__
    code = fn.__code__
    names = code.co_varnames[:code.co_argcount]
    first_default = len(names) - len(defaults)
    options: dict[str, _Spec] = {}
    positionals: list[_Spec] = []
    for i, name in enumerate(names):
        annotation = str(fn.__annotations__.get(name, "str"))
        if i < first_default:
            positionals.append(_Spec(name, annotation, ...))
            continue
        given = defaults[i - first_default]
        if not isinstance(given, Param) or set(given.kwargs) - _SUPPORTED_KWARGS:
            return None
        spec = _Spec(name, annotation, given.default)
        if spec.type not in _CONVERT and spec.type != "bool":
            return None
        if given.kind == "argument":
            positionals.append(spec)
            continue
        flags = given.flags or ("--" + name.replace("_", "-"),)
        if any("/" in f for f in flags):
            return None
        for flag in flags:
            options[flag] = spec
    return options, positionals


def parse(fn: Any, argv: list[str], positional_last: bool) -> dict[str, Any] | None:
    """Keyword arguments for ``fn`` from ``argv``, or None (let typer decide)."""
    found = _specs(fn)
    if found is None:
        return None
    options, positionals = found
    values: dict[str, Any] = {}
    args: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            args += argv[i:]
            break
        if not arg.startswith("-") or arg == "-":
            args.append(arg)
            if positional_last:
                args += argv[i:]
                break
            continue
        if arg.startswith("--"):
            flag, eq, inline = arg.partition("=")
            spec = options.get(flag)
            if spec is None or (spec.type == "bool" and eq):
                return None
            if spec.type == "bool":
                values[spec.name] = True
                continue
            if not eq:
                if i >= len(argv):
                    return None
                inline, i = argv[i], i + 1
            if not _store(values, spec, inline):
                return None
            continue
        j = 1
        while j < len(arg):
            spec = options.get("-" + arg[j])
            if spec is None:
                return None
            if spec.type == "bool":
                values[spec.name] = True
                j += 1
                continue
            value = arg[j + 1:]
            if not value:
                if i >= len(argv):
                    return None
                value, i = argv[i], i + 1
            if not _store(values, spec, value):
                return None
            break
    for spec in {id(s): s for s in options.values()}.values():
        if spec.name not in values:
            if spec.required:
                return None
            values[spec.name] = spec.default
    for spec in positionals:
        if spec.many:
            if spec.required and not args:
                return None
            values[spec.name] = args if args else spec.default
            args = []
        elif args:
            values[spec.name] = args.pop(0)
        elif spec.required:
            return None
        else:
            values[spec.name] = spec.default
    return None if args else values


def _store(values: dict[str, Any], spec: _Spec, text: str) -> bool:
    try:
        value = _CONVERT[spec.type](text)
    except ValueError:
        return False
    if spec.many:
        values.setdefault(spec.name, []).append(value)
    else:
        values[spec.name] = value
    return True


def dispatch(argv: list[str]) -> bool:
    """Run ``argv`` (without the program name) if it is a well-formed hot command; False
    to hand it to the typer app."""
    socket = None
    while argv and argv[0].startswith("--socket"):
        if argv[0] == "--socket" and len(argv) > 1:
            socket, argv = argv[1], argv[2:]
        elif argv[0].startswith("--socket="):
            socket, argv = argv[0][len("--socket="):], argv[1:]
        else:
            return False
    if not argv:
        return False
    if argv == ["version"]:
        from flatstack import __version__
        from flatstack.cli._params import echo

        echo(f"flatstack {__version__}")
        return True
    from flatstack.cli.containers import COMMANDS

    if argv[0] not in COMMANDS:
        return False
    fn, positional_last = COMMANDS[argv[0]]
    kwargs = parse(fn, argv[1:], positional_last)
    if kwargs is None:
        return False
    from flatstack.cli._api import set_socket

    set_socket(socket)
    fn(**kwargs)
    return True
