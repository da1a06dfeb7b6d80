"""``flatrun state``, ``list`` and ``ps``: read-only views of containers."""

from __future__ import annotations

import posix

from flatstack import _fastjson
from flatstack._fastos import exists
from flatstack.errors import FlatstackError
from flatstack.runtime.state import Container, list_ids


def state(root: str, container_id: str) -> str:
    """The container's state as indented JSON (runc's shape)."""
    container = Container.load(root, container_id)
    return _indent(container.runc_state())


def _indent(value: object) -> str:
    return _fastjson.dumps(value, indent=2)


def list_containers(root: str, fmt: str = "table", quiet: bool = False) -> str:
    """Every container under the root."""
    states = []
    for cid in list_ids(root):
        try:
            states.append(Container.load(root, cid).runc_state())
        except FlatstackError:
            continue
    if quiet:
        return "".join(s["id"] + "\n" for s in states)
    if fmt == "json":
        return _fastjson.dumps(states, compact=True) + "\n"
    if fmt != "table":
        raise FlatstackError(f"--format: invalid format {fmt!r}: use table or json")
    rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    for s in states:
        rows.append((s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"],
                     s["owner"] or "root"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join(
        "   ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() + "\n"
        for row in rows
    )


def container_pids(root: str, container_id: str) -> list[int]:
    """Pids of every process in the container's cgroup."""
    container = Container.load(root, container_id)
    if container.status() == "stopped":
        return []
    cg = container.data.get("cgroup")
    if cg:
        from flatstack.runtime.cgroups import manager_from_state

        return sorted(manager_from_state(cg).pids())
    return sorted(process_tree(container.pid))


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc/*/task/*/children: a container without a
    cgroup (rootless, not delegated) has no other list of its processes."""
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            tids = posix.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        found.append(current)
        for tid in tids:
            try:
                with open(f"/proc/{current}/task/{tid}/children") as f:
                    todo.extend(int(child) for child in f.read().split())
            except OSError:
                pass
    return found


def ps(root: str, container_id: str, fmt: str = "table", ps_args: list[str] | None = None
       ) -> str:
    """``ps`` output limited to the container's processes (or a JSON list of pids)."""
    pids = container_pids(root, container_id)
    if fmt == "json":
        return _fastjson.dumps(pids, compact=True) + "\n"
    if fmt != "table":
        raise FlatstackError(f"--format: invalid format {fmt!r}: use table or json")
    import subprocess

    args = ps_args or ["-ef"]
    out = subprocess.run(["ps", *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise FlatstackError(f"ps {' '.join(args)}: {out.stderr.strip()}")
    lines = out.stdout.splitlines()
    if not lines:
        return ""
    header = lines[0]
    columns = header.split()
    if "PID" not in columns:
        raise FlatstackError("ps: the output has no PID column")
    index = columns.index("PID")
    wanted = set(pids)
    kept = [header]
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > index and fields[index].isdigit() and int(fields[index]) in wanted:
            kept.append(line)
    return "\n".join(kept) + "\n"


def pid_exists(pid: int) -> bool:
    return exists(f"/proc/{pid}")
