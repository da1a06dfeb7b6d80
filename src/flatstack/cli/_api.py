"""What every API-backed command shares: the socket, the client, error reporting."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from flatstack.errors import FlatstackError

F = TypeVar("F", bound=Callable[..., Any])
_state: dict[str, str | None] = {"socket": None}


def set_socket(path: str | None) -> None:
    _state["socket"] = path


def client(timeout: float | None = 300.0) -> Any:
    """A client for the daemon at ``--socket`` / ``$FLATSTACK_SOCKET`` / the default."""
    from flatstack.api.client import Client
    from flatstack.api.places import default_socket

    return Client(_state["socket"] or default_socket(), timeout=timeout)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``flatstack: message`` on stderr; the Exit to raise."""
    typer.echo(f"flatstack: {message}", err=True)
    return typer.Exit(code)


def errors(fn: F) -> F:
    """Report FlatstackError (API errors included) as ``flatstack: ...`` and exit 1 (125
    for a refused ``run``, as docker does, is the caller's business)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FlatstackError as err:
            raise fail(str(err), err.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except BrokenPipeError:
            raise typer.Exit(141) from None
    return wrapper  # type: ignore[return-value]
