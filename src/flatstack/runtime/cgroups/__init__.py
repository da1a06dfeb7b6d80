"""Control groups: one manager interface over cgroup v1 (and hybrid) and v2.

``manager_for`` picks the implementation from what is mounted at
/sys/fs/cgroup; ``manager_from_state`` rebuilds a manager that a previous
flatrun invocation saved in the container's state.
"""

from __future__ import annotations

import os

from flatstack.runtime.cgroups.base import CgroupManager, detect_mode
from flatstack.runtime.cgroups.v1 import V1Manager
from flatstack.runtime.cgroups.v2 import V2Manager

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["CgroupManager", "detect_mode", "manager_for", "manager_from_state"]

CGROUP_ROOT = "/sys/fs/cgroup"


def resolve_path(cgroups_path: str | None, container_id: str, systemd: bool) -> str:
    """runc's cgroupfs semantics: absolute as is, relative under our own cgroup,
    empty -> /<id>; systemd's ``slice:prefix:name`` mapped onto cgroupfs."""
    path = cgroups_path or ""
    if systemd or (path.count(":") == 2 and not path.startswith("/")):
        parent, prefix, name = [*path.split(":"), "", "", ""][:3] if path else ("", "", "")
        parent = parent or "system.slice"
        name = name or container_id
        slices = []
        if parent != "-.slice":
            parts = parent.removesuffix(".slice").split("-")
            slices = ["-".join(parts[: i + 1]) + ".slice" for i in range(len(parts))]
        unit = f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
        return "/" + "/".join([*slices, unit])
    if not path:
        return f"/{container_id}"
    if path.startswith("/"):
        return os.path.normpath(path)
    return os.path.normpath(os.path.join(_own_cgroup(), path))


def _own_cgroup() -> str:
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                hid, controllers, path = line.rstrip("\n").split(":", 2)
                if hid == "0" or "pids" in controllers.split(",") or "memory" in controllers:
                    return path
    except OSError:
        pass
    return "/"


def manager_for(cgroups_path: str | None, container_id: str, *, rootless: bool = False,
                systemd: bool = False) -> CgroupManager | None:
    """The manager for a container's cgroup, or None when rootless without delegation."""
    path = resolve_path(cgroups_path, container_id, systemd)
    mode = detect_mode()
    manager: CgroupManager
    if mode == "unified":
        manager = V2Manager(CGROUP_ROOT, path)
    else:
        manager = V1Manager(CGROUP_ROOT, path, hybrid=(mode == "hybrid"))
    if rootless and not manager.writable():
        os.write(2, b"flatrun: warning: cgroups are not delegated to this user; "
                    b"running without resource limits\n")
        return None
    return manager


def manager_from_state(data: dict[str, Any]) -> CgroupManager:
    """Rebuild the manager saved by ``to_state``."""
    if data.get("kind") == "v2":
        return V2Manager.from_state(data)
    return V1Manager.from_state(data)
