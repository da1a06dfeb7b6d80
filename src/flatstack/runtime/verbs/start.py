"""``flatrun start``: release a created container's process."""

from __future__ import annotations

import posix
import select

from flatstack.errors import FlatstackError, InvalidState
from flatstack.runtime.state import Container


def start(root: str, container_id: str) -> None:
    """Open the exec FIFO so the waiting init execs the user's process."""
    container = Container.load(root, container_id)
    container.lock()
    try:
        status = container.status()
        if status != "created":
            if status == "stopped":
                raise InvalidState(f"cannot start a container that has stopped: {container_id}")
            raise InvalidState(f"cannot start an already {status} container: {container_id}")
        fd = posix.open(container.fifo_path,
                        posix.O_RDONLY | posix.O_NONBLOCK | posix.O_CLOEXEC)
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            while True:
                if poller.poll(100):
                    data = posix.read(fd, 1)
                    if data:
                        break
                if not container.init_alive():
                    raise FlatstackError(f"container {container_id} exited before it was started")
        finally:
            posix.close(fd)
        posix.unlink(container.fifo_path)
        hooks = (container.data.get("hooks") or {}).get("poststart")
        if hooks:
            from flatstack.runtime.hooks import run_hooks

            # The process was started; a short one may already be gone, but the hooks
            # describe the start (runtime-tools' hooks_stdin expects "running"), and a
            # running state carries the init's pid (the spec's MUST), not a stopped 0.
            state = dict(container.oci_state(), status="running",
                         pid=container.data.get("pid", 0))
            for failure in run_hooks({"hooks": {"poststart": hooks}}, "poststart", state,
                                     strict=False):
                posix.write(2, f"flatrun: warning: {failure}\n".encode())
    finally:
        container.unlock()
