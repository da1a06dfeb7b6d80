"""Progress reporting hooks: the library reports, the CLI draws (rich)."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Receives progress of named tasks (a blob download, a layer unpack)."""

    def start(self, key: str, description: str, total: int) -> None: ...
    def advance(self, key: str, amount: int) -> None: ...
    def done(self, key: str) -> None: ...


class NullProgress:
    """Reports nothing."""

    def start(self, key: str, description: str, total: int) -> None:
        """Ignore."""

    def advance(self, key: str, amount: int) -> None:
        """Ignore."""

    def done(self, key: str) -> None:
        """Ignore."""
