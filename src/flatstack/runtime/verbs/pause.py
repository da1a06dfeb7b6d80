"""``flatrun pause`` and ``resume``: the freezer cgroup."""

from __future__ import annotations

from flatstack.errors import FlatstackError, InvalidState
from flatstack.runtime.state import Container


def _manager(container: Container):
    if not container.data.get("cgroup"):
        raise FlatstackError(f"container {container.id} has no cgroup to freeze")
    from flatstack.runtime.cgroups import manager_from_state

    return manager_from_state(container.data["cgroup"])


def pause(root: str, container_id: str) -> None:
    """Freeze every process of a running container."""
    container = Container.load(root, container_id)
    container.lock()
    try:
        status = container.status()
        if status != "running":
            raise InvalidState(f"cannot pause container {container_id}: it is {status}")
        _manager(container).freeze()
        container.data["paused"] = True
        container.save()
    finally:
        container.unlock()


def resume(root: str, container_id: str) -> None:
    """Thaw a paused container."""
    container = Container.load(root, container_id)
    container.lock()
    try:
        status = container.status()
        if status != "paused":
            raise InvalidState(f"cannot resume container {container_id}: it is {status}")
        _manager(container).thaw()
        container.data["paused"] = False
        container.save()
    finally:
        container.unlock()
