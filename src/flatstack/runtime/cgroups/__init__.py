"""Control groups: one manager interface over cgroup v1 (and hybrid) and v2.

``manager_for`` builds the manager for a new container from linux.cgroupsPath;
``manager_from_state`` rebuilds one that an earlier flatrun invocation saved with
``to_state``.  Call order for a container (the caller owns the cleanup):

    m = manager_for(path, cid)
    try:
        m.create(); m.apply(resources)
    except BaseException:
        m.destroy(); raise
    m.add_pid(init_pid)          # every hierarchy, back to back
    ... m.freeze()/thaw()/kill_all(sig)/stats()/update(resources)
    m.destroy()                  # kills leftovers, removes what create() made

Measurements and design notes: docs/cgroups.md.
"""

from __future__ import annotations

from flatstack._fastos import exists
from flatstack.errors import CgroupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from flatstack.runtime.cgroups.base import CgroupManager

__all__ = ["CGROUP_ROOT", "CgroupManager", "detect_mode", "manager_for",
           "manager_from_state", "remove_if_idle", "resolve_path"]


def __getattr__(name: str) -> Any:
    # The managers load only when one is needed: `delete` of an idle cgroup needs none.
    if name == "CgroupManager":
        from flatstack.runtime.cgroups.base import CgroupManager

        return CgroupManager
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

CGROUP_ROOT = "/sys/fs/cgroup"
_mode: str | None = None


def detect_mode() -> str:
    """``unified`` (pure cgroup v2), ``hybrid`` (v1 controllers plus a cgroup2 mount
    at /sys/fs/cgroup/unified) or ``v1``; cached for the process."""
    global _mode
    if _mode is None:
        if exists(f"{CGROUP_ROOT}/cgroup.controllers"):
            _mode = "unified"
        elif exists(f"{CGROUP_ROOT}/unified/cgroup.controllers"):
            _mode = "hybrid"
        else:
            _mode = "v1"
    return _mode


def resolve_path(cgroups_path: str | None, container_id: str, *,
                 systemd: bool = False) -> str:
    """linux.cgroupsPath as the cgroupfs driver reads it (runc's semantics).

    - ``/a/b``: absolute, below the root of every hierarchy;
    - ``a/b``: relative, below the runtime's own cgroup (per hierarchy on v1);
    - empty: ``/<id>``, as runc.

    With ``systemd`` (``--systemd-cgroup``) the path is ``slice:prefix:name`` and is
    mapped onto the cgroupfs path systemd would use, since these machines have no
    systemd: ``a-b.slice:pfx:id`` -> ``/a.slice/a-b.slice/pfx-id.scope``; an empty
    slice means ``system.slice``, an empty path ``system.slice:flatrun:<id>``, and a
    name ending in ``.slice`` is that slice itself.
    """
    path = cgroups_path or ""
    if systemd:
        return _systemd_path(path or f"system.slice:flatrun:{container_id}", container_id)
    if not path:
        return f"/{container_id}"
    import os

    clean = os.path.normpath("/" + path.lstrip("/"))  # nothing above the root (CleanPath)
    return clean if path.startswith("/") else clean.lstrip("/") or "."


def _systemd_path(path: str, container_id: str) -> str:
    parts = path.split(":")
    if len(parts) != 3:
        raise CgroupError(f'linux.cgroupsPath: expected "slice:prefix:name" with '
                          f"--systemd-cgroup, got {path!r}")
    parent, prefix, name = parts
    name = name or container_id
    if name.endswith(".slice"):
        return _expand_slice(name)
    unit = f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    if "/" in unit:
        raise CgroupError(f"linux.cgroupsPath: invalid unit name {unit!r}")
    return f"{_expand_slice(parent or 'system.slice').rstrip('/')}/{unit}"


def _expand_slice(slice_name: str) -> str:
    """``a-b-c.slice`` -> ``/a.slice/a-b.slice/a-b-c.slice`` (systemd's rule)."""
    if slice_name == "-.slice":
        return "/"
    stem = slice_name.removesuffix(".slice")
    if (not slice_name.endswith(".slice") or "/" in stem or not stem
            or stem.startswith("-") or stem.endswith("-") or "--" in stem):
        raise CgroupError(f"linux.cgroupsPath: invalid slice name {slice_name!r}")
    words = stem.split("-")
    return "".join("/" + "-".join(words[: i + 1]) + ".slice" for i in range(len(words)))


def manager_for(cgroups_path: str | None, container_id: str, *, rootless: bool = False,
                systemd: bool = False) -> CgroupManager:
    """The manager for a new container's cgroup (nothing is created yet).

    ``rootless``: hierarchies this user cannot write are left out at create() time
    (runc's behaviour) and setting a limit in one of them raises CgroupError.
    """
    path = resolve_path(cgroups_path, container_id, systemd=systemd)
    if detect_mode() == "unified":
        from flatstack.runtime.cgroups.v2 import V2Manager

        return V2Manager.discover(CGROUP_ROOT, path, rootless=rootless)
    from flatstack.runtime.cgroups.v1 import V1Manager

    return V1Manager.discover(path, rootless=rootless)


def manager_from_state(data: dict[str, Any]) -> CgroupManager:
    """Rebuild the manager that ``to_state`` described."""
    if data.get("kind") == "v2":
        from flatstack.runtime.cgroups.v2 import V2Manager

        return V2Manager.from_state(data)
    from flatstack.runtime.cgroups.v1 import V1Manager

    return V1Manager.from_state(data)


def remove_if_idle(data: dict[str, Any]) -> bool:
    """Remove a saved cgroup (``to_state``) whose directories are empty leaves, as they
    are once the container's processes are gone: one rmdir each, no manager loaded.
    False when one is busy or has children; ``manager_from_state(data).destroy()``
    then kills what is left and removes the rest."""
    from flatstack.runtime.cgroups import _fs

    if data.get("kind") == "v2":
        leaves = [data["dir"]] if data.get("active", True) else []
    else:
        leaves = list((data.get("paths") or {}).values())
    if any(_fs.rmdir(leaf) for leaf in leaves):
        return False
    _fs.remove_parents(data.get("created") or [], leaves)
    return True
