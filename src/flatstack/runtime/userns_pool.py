"""Per-container host id ranges for user namespaces (like podman's ``--userns=auto``).

A config whose user namespace has no ``uidMappings`` and carries the annotation
``org.flatstack.userns: auto`` (or ``auto:size=N``) gets a range of host ids that no
other container on this host holds: container ids ``0..N-1`` map onto it for
both uids and gids.  Allocations are recorded in one node-wide file, so
containers under different ``--root`` directories never share ids, and are
released by ``delete`` (or when their state directory has gone).

The pool is the ranges ``/etc/subuid`` gives the user ``flatstack`` when it has
any (the same file newuidmap reads, so an administrator can carve it out), else
host ids 1,000,000,000 to 2,073,741,824 in 65,536-id blocks.
"""

from __future__ import annotations

import fcntl
import marshal
import os

from flatstack.errors import FlatstackError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

ANNOTATION = "org.flatstack.userns"
REGISTRY = "/run/flatstack/userns-ranges"
DEFAULT_POOL = (1_000_000_000, 1 << 30)  # (first host id, count)
DEFAULT_SIZE = 65536
_FIELD = f'annotations["{ANNOTATION}"]'


def requested_size(config: dict[str, Any]) -> int | None:
    """The range size an ``auto`` annotation asks for, or None without one."""
    value = (config.get("annotations") or {}).get(ANNOTATION)
    if value is None:
        return None
    if value == "auto":
        return DEFAULT_SIZE
    if isinstance(value, str) and value.startswith("auto:size="):
        text = value[len("auto:size="):]
        if text.isdigit() and 1 <= int(text) <= (1 << 24):
            return int(text)
    raise FlatstackError(f'{_FIELD}: expected "auto" or "auto:size=N" (1 <= N <= 16777216), '
                         f"not {value!r}")


def pool_ranges(subuid: str = "/etc/subuid", user: str = "flatstack") -> list[tuple[int, int]]:
    """The (start, count) ranges ids are handed out from."""
    ranges = []
    try:
        with open(subuid) as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] == user and parts[1].isdigit() \
                        and parts[2].isdigit():
                    ranges.append((int(parts[1]), int(parts[2])))
    except OSError:
        pass
    return ranges or [DEFAULT_POOL]


def _load(fd: int) -> dict[str, tuple[int, int, str]]:
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    if not data:
        return {}
    try:
        table = marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        return {}
    return table if isinstance(table, dict) else {}


def _store(fd: int, table: dict[str, tuple[int, int, str]]) -> None:
    data = marshal.dumps(table)
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, data)


def _open_registry(path: str) -> int:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def allocate(owner: str, state_dir: str, size: int, *, registry: str = REGISTRY,
             pool: list[tuple[int, int]] | None = None) -> int:
    """Reserve ``size`` host ids for ``owner`` (``<root>/<id>``); returns the first.

    Entries whose state directory is gone (a container removed without
    ``delete``) are reclaimed first.
    """
    fd = _open_registry(registry)
    try:
        table = {k: v for k, v in _load(fd).items() if os.path.isdir(v[2])}
        taken = sorted((start, start + count) for start, count, _ in table.values())
        for first, count in pool if pool is not None else pool_ranges():
            candidate = first
            end = first + count
            for lo, hi in taken:
                if hi <= candidate or lo >= end:
                    continue
                if lo >= candidate + size:
                    break
                candidate = max(candidate, hi)
            if candidate + size <= end:
                table[owner] = (candidate, size, state_dir)
                _store(fd, table)
                return candidate
        raise FlatstackError(f"{_FIELD}: no free range of {size} host ids left in the pool "
                             f"({len(table)} containers hold ranges)")
    finally:
        os.close(fd)


def release(owner: str, *, registry: str = REGISTRY) -> None:
    """Give ``owner``'s range back (no error when it holds none)."""
    if not os.path.exists(registry):
        return
    fd = _open_registry(registry)
    try:
        table = _load(fd)
        if table.pop(owner, None) is not None:
            _store(fd, table)
    finally:
        os.close(fd)


def apply_auto(config: dict[str, Any], owner: str, state_dir: str) -> int | None:
    """Fill in the user namespace maps of an ``auto`` config; returns the first host id."""
    size = requested_size(config)
    if size is None:
        return None
    linux = config.setdefault("linux", {})
    kinds = {n.get("type"): n for n in linux.get("namespaces") or []}
    if "user" not in kinds or kinds["user"].get("path"):
        raise FlatstackError(f"{_FIELD}: needs a new user namespace in linux.namespaces")
    if linux.get("uidMappings") or linux.get("gidMappings"):
        raise FlatstackError(f"{_FIELD}: conflicts with explicit linux.uidMappings/gidMappings")
    if os.geteuid() != 0:
        raise FlatstackError(f"{_FIELD}: automatic id ranges need a runtime running as root")
    first = allocate(owner, state_dir, size)
    mapping = [{"containerID": 0, "hostID": first, "size": size}]
    linux["uidMappings"] = mapping
    linux["gidMappings"] = [dict(mapping[0])]
    return first
