"""``flatrun kill``: signal a container's init (or, with --all, every process)."""

from __future__ import annotations

import posix

from flatstack.errors import FlatstackError
from flatstack.runtime.signals import parse_signal
from flatstack.runtime.state import Container


def kill(root: str, container_id: str, signal: str = "SIGTERM", *, all_: bool = False) -> None:
    """Send ``signal`` to the container."""
    number = parse_signal(signal)
    container = Container.load(root, container_id)
    status = container.status()
    if status == "stopped":
        raise FlatstackError(f"container {container_id} is not running")
    if all_ and container.data.get("cgroup"):
        from flatstack.runtime.cgroups import manager_from_state

        manager_from_state(container.data["cgroup"]).kill_all(number)
        return
    if all_:  # no cgroup (rootless without delegation): the init's process tree
        from flatstack.runtime.verbs.query import process_tree

        for pid in process_tree(container.pid):
            try:
                posix.kill(pid, number)
            except ProcessLookupError:
                pass
        return
    try:
        posix.kill(container.pid, number)
    except ProcessLookupError:
        raise FlatstackError(f"container {container_id} is not running") from None
