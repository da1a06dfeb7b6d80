"""``flatrun pause`` and ``resume``: the freezer cgroup."""

from __future__ import annotations

from flatstack.errors import FlatstackError, InvalidState
from flatstack.runtime.state import Container


def _manager(container: Container):
    if not container.data.get("cgroup"):
        raise FlatstackError(f"container {container.id} has no cgroup to freeze")
    from flatstack.runtime.cgroups import manager_from_state

    return manager_from_state(container.data["cgroup"])


def _set_paused(root: str, container_id: str, paused: bool) -> None:
    container = Container.load(root, container_id)
    container.lock()
    try:
        status = container.status()
        wanted, verb = ("running", "pause") if paused else ("paused", "resume")
        if status != wanted:
            raise InvalidState(f"cannot {verb} container {container_id}: it is {status}")
        if paused:
            _manager(container).freeze()
        else:
            _manager(container).thaw()
        container.data["paused"] = paused
        container.save()
    finally:
        container.unlock()


def pause(root: str, container_id: str) -> None:
    """Freeze every process of a running container."""
    _set_paused(root, container_id, True)


def resume(root: str, container_id: str) -> None:
    """Thaw a paused container."""
    _set_paused(root, container_id, False)
