"""Run a function in a forked child (real process attributes, no effect on pytest)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any


def in_child(fn: Callable[[], Any]) -> dict[str, Any]:
    """Run ``fn`` in a forked child; ``{"ok": result}`` or its error, as JSON-able data.

    An error comes back as ``{"error": type name, "message": str, "field": err.field}``
    (``field`` is set for :class:`~flatstack.errors.ConfigError`, else None).
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            try:
                result: dict[str, Any] = {"ok": fn()}
            except BaseException as err:
                result = {"error": type(err).__name__, "message": str(err),
                          "field": getattr(err, "field", None)}
            os.write(w, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def drop_sys_resource() -> None:
    """In a forked child: leave CAP_SYS_RESOURCE (what allows raising a hard rlimit) out
    of every capability set, so limit errors show wherever the suite runs."""
    from flatstack.kernel import caps

    effective, permitted, inheritable = caps.capget()
    mask = ~(1 << caps.CAPABILITIES["CAP_SYS_RESOURCE"])
    caps.capset(effective & mask, permitted & mask, inheritable & mask)
