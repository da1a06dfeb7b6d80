"""Choosing one platform's manifest from an OCI index or docker manifest list."""

from __future__ import annotations

from typing import Any

from flatstack.image import ImageError

DEFAULT_PLATFORM = "linux/amd64"


def parse_platform(text: str | None) -> tuple[str, str, str | None]:
    """``os/arch[/variant]`` -> (os, arch, variant)."""
    parts = (text or DEFAULT_PLATFORM).split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ImageError(f"invalid platform {text!r}: expected os/arch[/variant]")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def choose(manifests: list[dict[str, Any]], platform: str | None, where: str) -> dict[str, Any]:
    """Pick the descriptor for ``platform`` (default linux/amd64)."""
    os_, arch, variant = parse_platform(platform)
    usable = [m for m in manifests if isinstance(m, dict) and m.get("digest")]
    matches = []
    for m in usable:
        p = m.get("platform") or {}
        if p.get("os") == os_ and p.get("architecture") == arch and \
                (variant is None or p.get("variant") == variant):
            matches.append(m)
    if matches:
        return matches[0]
    if len(usable) == 1 and not usable[0].get("platform") and platform is None:
        return usable[0]
    have = sorted({"/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant"))
                            if x)
                   for p in (m.get("platform") or {} for m in usable)} - {""})
    raise ImageError(f"{where}: no image for platform {os_}/{arch}"
                     f"{'/' + variant if variant else ''} (available: "
                     f"{', '.join(have) or 'none'})")
