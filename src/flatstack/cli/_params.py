"""Declaring commands without importing typer: the CLI's start-up budget.

Command functions declare their parameters as typer does (``Option(default, "-d",
"--detach", help=...)``), with these light records in place of ``typer.Option``. The
fast path (:mod:`flatstack.cli._fast`) parses argv straight from them; for the rest
(``--help``, the other commands, bad input and its messages) :func:`to_typer` turns them
into typer's own before the typer app is built, so both read one declaration.
Plus ``echo`` and ``Exit``, the two things the commands used from typer at run time.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # the typing module costs ~5 ms of CLI start-up
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class Param:
    """``Option(default, *flags, **typer_kwargs)`` or ``Argument(default, **kwargs)``."""

    def __init__(self, kind: str, default: Any, flags: tuple[str, ...],
                 kwargs: dict[str, Any]) -> None:
        self.kind = kind
        self.default = default
        self.flags = flags
        self.kwargs = kwargs

    def to_typer(self) -> Any:
        import typer

        if self.kind == "option":
            return typer.Option(self.default, *self.flags, **self.kwargs)
        return typer.Argument(self.default, **self.kwargs)


def Option(default: Any, *flags: str, **kwargs: Any) -> Any:
    return Param("option", default, flags, kwargs)


def Argument(default: Any, **kwargs: Any) -> Any:
    return Param("argument", default, (), kwargs)


class Exit(SystemExit):
    """Leave with ``code`` (click lets SystemExit through: the same in both paths)."""


def echo(text: str = "", err: bool = False, nl: bool = True) -> None:
    """Print a line to stdout (or stderr) and flush, as ``typer.echo``."""
    out = sys.stderr if err else sys.stdout
    out.write(text + "\n" if nl else text)
    out.flush()


def to_typer(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Swap ``fn``'s Param defaults for typer's (through ``functools.wraps`` layers)."""
    target: Any = fn
    while hasattr(target, "__wrapped__"):
        target = target.__wrapped__
    if target.__defaults__ and not hasattr(target, "declared"):
        target.declared = target.__defaults__  # what the fast path reads, still
        target.__defaults__ = tuple(d.to_typer() if isinstance(d, Param) else d
                                    for d in target.__defaults__)
    return fn


def declared(fn: Callable[..., Any]) -> tuple[Any, ...]:
    """``fn``'s parameter defaults as declared (Params), before or after to_typer."""
    while hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__  # type: ignore[attr-defined]
    return getattr(fn, "declared", None) or fn.__defaults__ or ()
