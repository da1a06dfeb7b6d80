"""Tables and durations the way docker and podman print them."""

from __future__ import annotations

import time

TYPE_CHECKING = False  # the typing module costs ~5 ms of CLI start-up
if TYPE_CHECKING:
    from typing import Any


def table(header: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, three spaces apart (docker's tabwriter)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row, widths, strict=True)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)


def timestamp(text: str | None) -> float | None:
    """Seconds since the epoch from an RFC 3339 string ("" or None: None)."""
    if not text:
        return None
    from datetime import datetime

    head, _, frac = text.rstrip("Z").partition(".")
    try:
        ts = datetime.fromisoformat(head + "+00:00").timestamp()
    except ValueError:
        return None
    return ts + (float("0." + frac[:9]) if frac.isdigit() else 0.0)


def duration(seconds: float) -> str:
    """docker's human durations: "Less than a second", "3 seconds", "About a minute"."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = round(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def ago(text: str | None) -> str:
    ts = timestamp(text)
    return "" if ts is None else duration(max(0.0, time.time() - ts)) + " ago"


def status(c: dict[str, Any]) -> str:
    """ps's STATUS column: "Up 3 seconds", "Exited (0) 2 minutes ago", "Created"."""
    state = c.get("state")
    if state == "running":
        started = timestamp(c.get("started_at"))
        return "Up " + (duration(time.time() - started) if started else "")
    if state == "exited":
        code = c.get("exit_code")
        text = f"Exited ({'?' if code is None else code})"
        if c.get("oom_killed"):
            text += " (OOM killed)"
        when = ago(c.get("finished_at"))
        return f"{text} {when}" if when else text
    return str(state or "unknown").capitalize()


def _scaled(n: float, base: int, units: tuple[str, ...], digits: int) -> str:
    for unit in units:
        if abs(n) < base or unit == units[-1]:
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.{digits}g}{unit}"
        n /= base
    return f"{n}"


def size(n: float) -> str:
    """Decimal units as docker stats prints them (B, kB, MB, GB)."""
    return _scaled(n, 1000, ("B", "kB", "MB", "GB", "TB"), 3)


def binary_size(n: float) -> str:
    """Binary units (KiB, MiB, GiB) for memory."""
    return _scaled(n, 1024, ("B", "KiB", "MiB", "GiB", "TiB"), 4)
