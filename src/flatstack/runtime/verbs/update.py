"""``flatrun update``: change a container's cgroup resources."""

from __future__ import annotations

import os
import sys

from flatstack import _fastjson
from flatstack.errors import ConfigError, FlatstackError
from flatstack.runtime.state import Container

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: --flag -> (section, key, parser)
FLAG_FIELDS: dict[str, tuple[str, str]] = {
    "memory": ("memory", "limit"),
    "memory-reservation": ("memory", "reservation"),
    "memory-swap": ("memory", "swap"),
    "cpu-shares": ("cpu", "shares"),
    "cpu-quota": ("cpu", "quota"),
    "cpu-period": ("cpu", "period"),
    "cpu-rt-runtime": ("cpu", "realtimeRuntime"),
    "cpu-rt-period": ("cpu", "realtimePeriod"),
    "cpuset-cpus": ("cpu", "cpus"),
    "cpuset-mems": ("cpu", "mems"),
    "pids-limit": ("pids", "limit"),
    "blkio-weight": ("blockIO", "weight"),
}

_SUFFIXES = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str, flag: str) -> int:
    """``512m``, ``1g``, ``-1``, ``1048576`` -> bytes."""
    value = text.strip().lower()
    if value in ("-1", "max"):
        return -1
    mult = 1
    if value and value[-1] in _SUFFIXES:
        mult = _SUFFIXES[value[-1]]
        value = value[:-1]
    if value.endswith("i"):
        value = value[:-1]
    try:
        return int(float(value) * mult)
    except ValueError:
        raise FlatstackError(f"--{flag}: invalid size {text!r}") from None


def resources_from(flags: dict[str, str], resources_file: str | None) -> dict[str, Any]:
    """Merge --resources FILE|- with the individual flags."""
    resources: dict[str, Any] = {}
    if resources_file:
        data = sys.stdin.buffer.read() if resources_file == "-" else _read(resources_file)
        try:
            loaded = _fastjson.loads(data)
        except ValueError as err:
            raise ConfigError("resources", f"invalid JSON: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError("resources", "expected a JSON object")
        resources = loaded
    for flag, text in flags.items():
        section, key = FLAG_FIELDS[flag]
        if key in ("cpus", "mems"):
            value: Any = text
        elif flag.startswith("memory"):
            value = parse_size(text, flag)
        else:
            try:
                value = int(text)
            except ValueError:
                raise FlatstackError(f"--{flag}: expected an integer, got {text!r}") from None
        resources.setdefault(section, {})[key] = value
    return resources


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise FlatstackError(f"--resources {path}: {os.strerror(err.errno or 0).lower()}"
                             ) from None


def update(root: str, container_id: str, resources: dict[str, Any]) -> None:
    """Apply ``resources`` to the container's cgroup."""
    container = Container.load(root, container_id)
    container.lock()
    try:
        if container.status() == "stopped":
            raise FlatstackError(f"container {container_id} is not running")
        cg = container.data.get("cgroup")
        if not cg:
            raise FlatstackError(f"container {container_id} has no cgroup")
        from flatstack.oci.config import validate_config

        validate_config({"ociVersion": "1.2.0", "root": {"path": "/"},
                         "linux": {"resources": resources}})
        from flatstack.runtime.cgroups import manager_from_state

        manager_from_state(cg).update(resources)
    finally:
        container.unlock()
