"""What every API-backed command shares: the socket, the client, error reporting."""

from __future__ import annotations

import functools

from flatstack.cli._params import Exit, echo
from flatstack.errors import FlatstackError

TYPE_CHECKING = False  # the typing module costs ~5 ms of CLI start-up
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    F = TypeVar("F", bound=Callable[..., Any])

_state: dict[str, str | None] = {"socket": None}


def set_socket(path: str | None) -> None:
    _state["socket"] = path


def client(timeout: float | None = 300.0) -> Any:
    """A client for the daemon at ``--socket`` / ``$FLATSTACK_SOCKET`` / the default."""
    import os

    from flatstack.api.client import Client

    path = _state["socket"] or os.environ.get("FLATSTACK_SOCKET")
    if not path:  # places.py needs dataclasses (~10 ms of imports): only when needed
        from flatstack.api.places import default_socket

        path = default_socket()
    return Client(path, timeout=timeout)


def fail(message: str, code: int = 1) -> Exit:
    """Print ``flatstack: message`` on stderr; the Exit to raise."""
    echo(f"flatstack: {message}", err=True)
    return Exit(code)


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
            raise Exit(141) from None
    return wrapper  # type: ignore[return-value]
