"""Sizes as users write them (``512m``, ``1g``, ``1.5GiB``, ``1048576``), docker's way:
units are powers of 1024."""

from __future__ import annotations

import re

from flatstack.errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgtp]?)(?:i?b)?\s*$", re.IGNORECASE)
_FACTORS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(text: str | int, field: str = "memory") -> int:
    """Bytes from ``text``; ConfigError naming ``field`` when it is not a positive size."""
    if isinstance(text, bool):
        raise ConfigError(field, f"invalid size {text!r}")
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE.match(str(text))
        if not match:
            raise ConfigError(field, f"invalid size {text!r} (examples: 512m, 1g, 1048576)")
        value = int(float(match.group(1)) * _FACTORS[match.group(2).lower()])
    if value <= 0:
        raise ConfigError(field, f"size must be positive, got {text!r}")
    return value
