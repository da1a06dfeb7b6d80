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
    single_self = (
        len(uid_maps) == 1 and uid_maps[0]["hostID"] == os.geteuid() and uid_maps[0]["size"] == 1
        and len(gid_maps) <= 1
    )
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
