"""From exceptions to HTTP answers: ``{"error": "...", "field": "..."}`` with a 4xx status
for everything a user can cause; a 500 only for a bug."""

from __future__ import annotations

import logging
from typing import Any

from flatstack.errors import (
    ConfigError,
    ContainerExists,
    ContainerNotFound,
    FlatstackError,
    InvalidState,
)

log = logging.getLogger("flatstack.api")
_CONFLICT_WORDS = ("already", "in use", "is running", "name is taken")
_MISSING_WORDS = ("not found", "no such container", "does not exist", "unknown container")


def status_of(err: FlatstackError) -> int:
    """404 unknown thing, 409 conflict, 400 otherwise (an error may carry ``http_status``)."""
    explicit = getattr(err, "http_status", None)
    if isinstance(explicit, int) and 400 <= explicit < 600:
        return explicit
    if isinstance(err, ContainerNotFound):
        return 404
    if isinstance(err, ContainerExists | InvalidState):
        return 409
    text = str(err).lower()
    if any(w in text for w in _CONFLICT_WORDS):
        return 409
    if not isinstance(err, ConfigError) and any(w in text for w in _MISSING_WORDS):
        return 404
    return 400


def body_of(err: FlatstackError, field: str | None = None) -> dict[str, Any]:
    """The JSON error document; ``field`` from a ConfigError or the caller."""
    doc: dict[str, Any] = {"error": str(err)}
    name = getattr(err, "field", None) or field
    if name:
        doc["field"] = name
    return doc


def loc_to_field(loc: tuple[Any, ...] | list[Any]) -> str:
    """pydantic's location (``("body", "ports", 0)``) as a field path (``ports[0]``)."""
    out = ""
    for part in loc:
        if part in ("body", "query", "path") and not out:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


class FieldError(FlatstackError):
    """An error about one request field (wraps another error's message)."""

    def __init__(self, field: str, err: FlatstackError) -> None:
        super().__init__(str(err))
        self.field = field
        self.http_status = status_of(err)
