"""Writing a user namespace's uid and gid maps, as root or through newuidmap."""

from __future__ import annotations

import os

from flatstack.errors import FlatstackError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _lines(mappings: list[dict[str, Any]]) -> str:
    return "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in mappings)


def write_maps(pid: int, uid_maps: list[dict[str, Any]], gid_maps: list[dict[str, Any]]) -> None:
    """Write /proc/<pid>/{uid,gid}_map; use newuidmap/newgidmap when unprivileged."""
    privileged = os.geteuid() == 0
    # An unprivileged user may write a map itself only when it maps just its own id.
    single_self = _only(uid_maps, os.geteuid()) and (not gid_maps or _only(gid_maps, os.getegid()))
    if privileged or single_self:
        if not privileged:
            _write(f"/proc/{pid}/setgroups", "deny", "linux.gidMappings")
        _write(f"/proc/{pid}/uid_map", _lines(uid_maps), "linux.uidMappings")
        if gid_maps:
            _write(f"/proc/{pid}/gid_map", _lines(gid_maps), "linux.gidMappings")
        return
    _helper("newuidmap", pid, uid_maps, "linux.uidMappings")
    if gid_maps:
        _helper("newgidmap", pid, gid_maps, "linux.gidMappings")


def _only(mappings: list[dict[str, Any]], host_id: int) -> bool:
    return len(mappings) == 1 and mappings[0]["hostID"] == host_id and mappings[0]["size"] == 1


def _write(path: str, text: str, field: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as err:
        raise FlatstackError(f"{field}: cannot write {text.strip()!r} to {path}: "
                             f"{os.strerror(err.errno or 0).lower()}") from None


def _helper(tool: str, pid: int, mappings: list[dict[str, Any]], field: str) -> None:
    import shutil
    import subprocess

    binary = shutil.which(tool)
    if binary is None:
        raise FlatstackError(f"{field}: mapping several ids needs {tool} (package uidmap)")
    args = [binary, str(pid)]
    for m in mappings:
        args += [str(m["containerID"]), str(m["hostID"]), str(m["size"])]
    proc = subprocess.run(args, capture_output=True, check=False)
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip()
        raise FlatstackError(f"{field}: {tool} failed: {detail}")
