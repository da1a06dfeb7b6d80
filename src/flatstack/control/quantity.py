"""Kubernetes resource quantities and durations.

``parse_quantity`` reads the Kubernetes quantity grammar (``500m``, ``1.5``, ``256Mi``,
``1G``, ``1e3``) into an exact :class:`~fractions.Fraction`; ``cpu_millis`` and
``memory_bytes`` turn it into the units the engine uses, and ``format_cpu`` /
``format_memory`` give the canonical spelling stored in the desired state, so ``0.5``
and ``500m`` are the same spec.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

_SUFFIX = {
    "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": Fraction(1),
    "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
    "P": Fraction(10**15), "E": Fraction(10**18),
    "Ki": Fraction(2**10), "Mi": Fraction(2**20), "Gi": Fraction(2**30), "Ti": Fraction(2**40),
    "Pi": Fraction(2**50), "Ei": Fraction(2**60),
}
_QUANTITY = re.compile(
    r"^(?P<num>[+-]?(?:\d+\.?\d*|\.\d+))(?:(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])"
    r"|[eE](?P<exp>[+-]?\d+))?$"
)
MAX_QUANTITY = Fraction(2**63 - 1)  # what a Kubernetes quantity can hold
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNIT = {"ms": Fraction(1, 1000), "s": Fraction(1), "m": Fraction(60), "h": Fraction(3600)}


def parse_quantity(value: object) -> Fraction:
    """Parse a Kubernetes quantity (string, int or float); raise ``ValueError`` if malformed."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a quantity")
    if isinstance(value, int):
        return _bounded(Fraction(value), value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a quantity")
        return _bounded(Fraction(str(value)), value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a quantity (want a number or a string like 500m)")
    match = _QUANTITY.match(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a quantity (examples: 500m, 1.5, 256Mi, 1G)")
    number = Fraction(match["num"])
    if match["exp"] is not None:
        exponent = int(match["exp"])
        if abs(exponent) > 30:
            raise ValueError(f"{value!r} is out of range")
        return _bounded(number * Fraction(10) ** exponent, value)
    return _bounded(number * _SUFFIX[match["suffix"] or ""], value)


def _bounded(amount: Fraction, value: object) -> Fraction:
    if abs(amount) > MAX_QUANTITY:
        raise ValueError(f"{value!r} is out of range")
    return amount


def cpu_millis(value: object) -> int:
    """CPU quantity in millicores (rounded up, as Kubernetes does); must be at least 1m."""
    amount = parse_quantity(value)
    if amount <= 0:
        raise ValueError(f"cpu {value!r} must be positive")
    return math.ceil(amount * 1000)


def memory_bytes(value: object) -> int:
    """Memory quantity in bytes (rounded up); must be positive."""
    amount = parse_quantity(value)
    if amount <= 0:
        raise ValueError(f"memory {value!r} must be positive")
    return math.ceil(amount)


def format_cpu(millis: int) -> str:
    """Canonical CPU spelling: whole cores as ``2``, the rest as ``1500m``."""
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def format_memory(nbytes: int) -> str:
    """Canonical memory spelling: the largest exact binary, then decimal, suffix."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki", "E", "P", "T", "G", "M", "k"):
        unit = int(_SUFFIX[suffix])
        if nbytes % unit == 0:
            return f"{nbytes // unit}{suffix}"
    return str(nbytes)


def parse_duration(value: object) -> float:
    """Seconds from a number or a Go-style duration (``30s``, ``1m30s``, ``500ms``, ``2h``)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a duration")
        seconds = Fraction(str(value)) if isinstance(value, float) else Fraction(value)
    elif isinstance(value, str):
        text = value.strip()
        parts = _DURATION_PART.findall(text)
        if not text or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"{value!r} is not a duration (examples: 30s, 1m30s, 500ms)")
        seconds = sum((Fraction(n) * _DURATION_UNIT[u] for n, u in parts), Fraction(0))
    else:
        raise ValueError(f"{value!r} is not a duration (examples: 30s, 1m30s, 500ms)")
    if seconds <= 0:
        raise ValueError(f"duration {value!r} must be positive")
    if seconds > 366 * 86400:
        raise ValueError(f"duration {value!r} is out of range (at most a year)")
    return float(seconds)
