"""``flatrun events``: cgroup statistics, once (--stats) or every --interval."""

from __future__ import annotations

import sys
import time

from flatstack import _fastjson
from flatstack.errors import FlatstackError
from flatstack.runtime.state import Container


def stats_event(root: str, container_id: str) -> dict:
    """One runc-shaped stats event."""
    container = Container.load(root, container_id)
    if container.status() == "stopped":
        raise FlatstackError(f"container {container_id} is not running")
    cg = container.data.get("cgroup")
    if not cg:
        raise FlatstackError(f"container {container_id} has no cgroup")
    from flatstack.runtime.cgroups import manager_from_state

    return {"type": "stats", "id": container_id, "data": manager_from_state(cg).stats()}


def events(root: str, container_id: str, *, stats: bool, interval: float) -> None:
    """Print stats events as JSON lines; also an "oom" event when one happens."""
    if stats:
        sys.stdout.write(_fastjson.dumps(stats_event(root, container_id), compact=True) + "\n")
        return
    from flatstack.runtime.cgroups import manager_from_state

    container = Container.load(root, container_id)
    cg = container.data.get("cgroup")
    ooms = manager_from_state(cg).oom_kill_count() if cg else 0
    while True:
        try:
            event = stats_event(root, container_id)
        except FlatstackError:
            return
        sys.stdout.write(_fastjson.dumps(event, compact=True) + "\n")
        if cg:
            now = manager_from_state(cg).oom_kill_count()
            if now > ooms:
                sys.stdout.write(_fastjson.dumps({"type": "oom", "id": container_id},
                                                 compact=True) + "\n")
                ooms = now
        sys.stdout.flush()
        time.sleep(interval)
