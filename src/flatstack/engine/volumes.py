"""``-v`` mounts: host bind mounts and named volumes that outlive their containers.

A named volume is a directory ``<state>/volumes/<name>/_data`` made on first use. Its
files are stored under host ids 0..65535 (container-neutral, like an image layer)
and the volume is mounted *idmapped* onto the container's user namespace, so the
container's root owns and can write it whatever host id range the container got,
and a later container (with another range) sees the same owners. A host bind mount
is not idmapped unless asked (``:idmap``): the host's files keep their host owners.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from typing import Any

from flatstack.errors import ConfigError

VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_OPTIONS = ("ro", "rw", "idmap", "z", "Z")


@dataclass(frozen=True)
class VolumeSpec:
    """One ``-v`` argument, parsed."""

    kind: str          # "bind" | "volume"
    source: str        # host path (bind) or volume name
    destination: str
    ro: bool = False
    idmap: bool = False

    def to_json(self, host_path: str = "") -> dict[str, Any]:
        """The record's form: type, source (host path), destination, ro (+ name)."""
        out: dict[str, Any] = {"type": self.kind, "source": host_path or self.source,
                               "destination": self.destination, "ro": self.ro,
                               "idmap": self.idmap}
        if self.kind == "volume":
            out["name"] = self.source
        return out


def parse_volume(spec: str, index: int = 0) -> VolumeSpec:
    """Parse ``/host:/ctr[:opts]`` or ``name:/ctr[:opts]`` (opts: ro, rw, idmap)."""
    where = f"volumes[{index}]"
    if not isinstance(spec, str) or not spec:
        raise ConfigError(where, "expected SOURCE:DESTINATION[:OPTIONS]")
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ConfigError(where, f"{spec!r} is not SOURCE:DESTINATION[:OPTIONS]")
    source, dest = parts[0], parts[1]
    options = parts[2].split(",") if len(parts) == 3 else []
    for opt in options:
        if opt not in _OPTIONS:
            raise ConfigError(where, f"unknown option {opt!r} (ro, rw or idmap)")
    if "ro" in options and "rw" in options:
        raise ConfigError(where, "ro and rw both given")
    if not dest.startswith("/") or "\0" in dest or ".." in dest.split("/"):
        raise ConfigError(where, f"destination {dest!r} must be an absolute path without '..'")
    dest = os.path.normpath(dest)
    if dest == "/":
        raise ConfigError(where, "the root directory cannot be a mount destination")
    ro = "ro" in options
    if source.startswith("/"):
        source = os.path.normpath(source)
        if not os.path.exists(source):
            raise ConfigError(where, f"host path {source} does not exist")
        return VolumeSpec("bind", source, dest, ro, "idmap" in options)
    if source.startswith(".") or not VOLUME_NAME.match(source):
        raise ConfigError(where, f"{source!r} is neither an absolute host path nor a valid "
                          "volume name (letters, digits, '_', '.', '-')")
    return VolumeSpec("volume", source, dest, ro, True)


class Volumes:
    """Named volumes under ``<state>/volumes``."""

    def __init__(self, state_dir: str) -> None:
        self.root = os.path.join(state_dir, "volumes")

    def path(self, name: str) -> str:
        """The data directory of volume ``name`` (it may not exist yet)."""
        if not VOLUME_NAME.match(name or ""):
            raise ConfigError("volume", f"{name!r} is not a valid volume name")
        return os.path.join(self.root, name, "_data")

    def ensure(self, name: str) -> tuple[str, bool]:
        """Create the volume on first use; returns (data path, created now)."""
        data = self.path(name)
        if os.path.isdir(data):
            return data, False
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        os.makedirs(os.path.dirname(data), mode=0o700, exist_ok=True)
        try:
            os.mkdir(data, 0o755)
        except FileExistsError:
            return data, False
        os.chmod(data, 0o755)
        return data, True

    def list(self) -> list[str]:
        """Names of the existing volumes."""
        try:
            return sorted(n for n in os.listdir(self.root)
                          if os.path.isdir(os.path.join(self.root, n, "_data")))
        except FileNotFoundError:
            return []

    def remove(self, name: str) -> None:
        """Delete a volume and its data (the caller checks it is unused)."""
        data = self.path(name)
        if not os.path.isdir(data):
            raise ConfigError("volume", f"volume {name!r} does not exist")
        shutil.rmtree(os.path.dirname(data))


def mount_entry(vol: VolumeSpec, source: str) -> dict[str, Any]:
    """The config.json mount for a parsed ``-v`` whose host directory is ``source``."""
    options = ["rbind", "ro" if vol.ro else "rw", "nosuid", "nodev"]
    if vol.idmap:
        options.append("idmap")
    return {"destination": vol.destination, "type": "bind", "source": source,
            "options": options}
