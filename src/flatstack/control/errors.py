"""Errors of the control plane: invalid specs (with field paths) and missing apps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from flatstack.errors import ConfigError, FlatstackError

Loc = tuple[str | int, ...]


def format_loc(loc: Loc) -> str:
    """``('spec', 'ports', 0, 'containerPort')`` -> ``spec.ports[0].containerPort``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass(frozen=True)
class FieldError:
    """One invalid field: where it is (``loc``) and why it is wrong."""

    loc: Loc
    reason: str

    @property
    def path(self) -> str:
        return format_loc(self.loc)

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.loc else self.reason


class SpecError(ConfigError):
    """An App (or Kubernetes document) failed validation; ``errors`` lists every field."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        if not errors:
            raise ValueError("SpecError needs at least one FieldError")
        self.errors = list(errors)
        first = self.errors[0]
        super().__init__(first.path, first.reason)
        self.args = ("\n".join(str(e) for e in self.errors),)

    def __str__(self) -> str:
        return str(self.args[0])


class AppNotFound(FlatstackError):
    """No app with that name is in the desired state."""

    def __init__(self, name: str) -> None:
        super().__init__(f"app {name!r} does not exist")
        self.name = name


class ScaleConflict(FlatstackError):
    """A manual replica count was asked for an app whose count the autoscaler owns."""
