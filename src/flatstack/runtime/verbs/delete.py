"""``flatrun delete``: remove a stopped (or, with --force, any) container."""

from __future__ import annotations

import posix
import time

from flatstack.errors import FlatstackError, InvalidState
from flatstack.runtime import cgroups
from flatstack.runtime.state import Container, process_start_time


def delete(root: str, container_id: str, *, force: bool = False) -> None:
    """Kill what is left, remove the cgroup, run poststop hooks, drop the state."""
    container = Container.load(root, container_id)
    container.lock()
    try:
        status = container.status()
        # runc's behaviour, which containerd's shim relies on (it deletes a task that
        # was created but never started without --force): a created container is
        # killed and deleted; a running or paused one needs --force.
        if status in ("running", "paused") and not force:
            raise InvalidState(f"cannot delete container {container_id} that is not stopped: "
                               f"{status}")
        saved = container.data.get("cgroup")
        cgroup = None
        if container.init_alive():
            cgroup = cgroups.manager_from_state(saved) if saved else None
            if status == "paused" and cgroup is not None:
                cgroup.thaw()
            kill_and_wait(container.pid, container.data.get("pid_start"))
        if saved and cgroup is None and not cgroups.remove_if_idle(saved):
            cgroup = cgroups.manager_from_state(saved)
        if cgroup is not None:
            try:
                cgroup.destroy()
            except FlatstackError as err:
                if not force:
                    raise
                posix.write(2, f"flatrun: warning: {err}\n".encode())
        if container.data.get("host_mounts"):
            from flatstack.runtime import host_mounts

            host_mounts.release(*container.data["host_mounts"])
        hooks = (container.data.get("hooks") or {}).get("poststop")
        if hooks:
            from flatstack.runtime.hooks import run_hooks

            state = container.oci_state()
            state["status"] = "stopped"
            for failure in run_hooks({"hooks": {"poststop": hooks}}, "poststop", state,
                                     strict=False):
                posix.write(2, f"flatrun: warning: {failure}\n".encode())
        if container.data.get("userns_pool"):
            from flatstack.runtime.userns_pool import release

            release(container.data["userns_pool"])
        container.remove_dir()
    finally:
        container.unlock()


def kill_and_wait(pid: int, start_time: int | None, timeout: float = 5.0) -> None:
    """SIGKILL ``pid`` and wait until it is gone (it is not our child)."""
    try:
        posix.kill(pid, 9)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while time.monotonic() < deadline:
        try:
            posix.waitpid(pid, posix.WNOHANG)
        except ChildProcessError:
            pass
        if process_start_time(pid) != start_time:
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
