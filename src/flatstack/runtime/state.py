"""Container state under the runtime root: one directory per container.

Layout of ``<root>/<id>/``:

- ``state``: the saved state, in :mod:`marshal` form (parsing JSON costs a
  runtime invocation more than the rest of ``start`` does; the directory is
  root-owned and only flatrun writes it).  ``flatrun state`` prints JSON.
- ``exec.fifo``: present between ``create`` and ``start``.
- ``lock``: ``flock``-ed for the duration of any state-changing verb.
"""

from __future__ import annotations

import fcntl
import marshal
import posix
import time

from flatstack._fastos import exists
from flatstack.errors import ContainerExists, ContainerNotFound, FlatstackError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

STATE_FILE = "state"
FIFO_FILE = "exec.fifo"
LOCK_FILE = "lock"

_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")


def default_root() -> str:
    """/run/flatrun for root; $XDG_RUNTIME_DIR/flatrun for others."""
    if posix.geteuid() == 0:
        return "/run/flatrun"
    import os

    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "flatrun")
    return f"/tmp/flatrun-{posix.geteuid()}"


def validate_id(container_id: str) -> None:
    """Container ids follow runc: ``[A-Za-z0-9_+.-]+``, not ``.`` or ``..``."""
    if not container_id:
        raise FlatstackError("container id cannot be empty")
    if container_id in (".", "..") or not _ID_CHARS.issuperset(container_id):
        raise FlatstackError(f"invalid container id {container_id!r}: "
                             "use letters, digits and _ + - . only")
    if len(container_id) > 1024:
        raise FlatstackError("invalid container id: longer than 1024 characters")


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None  # a zombie has stopped running
    return int(fields[19])


class Container:
    """A container's directory and saved state."""

    def __init__(self, root: str, container_id: str, data: dict[str, Any]) -> None:
        self.root = root
        self.id = container_id
        self.dir = f"{root}/{container_id}"
        self.data = data
        self._lock_fd: int | None = None
        self.console_peer = -1  # foreground run's end of the console socket pair

    # -- loading and saving -------------------------------------------------
    @classmethod
    def load(cls, root: str, container_id: str) -> Container:
        """Load a container's state, or raise ContainerNotFound."""
        validate_id(container_id)
        path = f"{root}/{container_id}/{STATE_FILE}"
        try:
            with open(path, "rb") as f:
                data = marshal.loads(f.read())
        except FileNotFoundError:
            raise ContainerNotFound(container_id) from None
        except (EOFError, ValueError, TypeError):
            data = {"id": container_id, "pid": 0, "broken": True}
        return cls(root, container_id, data)

    @classmethod
    def new(cls, root: str, container_id: str) -> Container:
        """Create the container's directory; fails if the id is taken."""
        import os

        validate_id(container_id)
        os.makedirs(root, mode=0o711, exist_ok=True)
        path = os.path.join(root, container_id)
        try:
            os.mkdir(path, 0o711)
        except FileExistsError:
            raise ContainerExists(container_id) from None
        container = cls(root, container_id, {"id": container_id, "pid": 0})
        container.lock()
        return container

    def save(self) -> None:
        """Write the state atomically."""
        tmp = f"{self.dir}/{STATE_FILE}.tmp"
        with open(tmp, "wb") as f:
            f.write(marshal.dumps(self.data))
        posix.rename(tmp, f"{self.dir}/{STATE_FILE}")

    def lock(self) -> None:
        """Take the container's exclusive lock (blocks other verbs)."""
        if self._lock_fd is None:
            fd = posix.open(f"{self.dir}/{LOCK_FILE}",
                            posix.O_RDWR | posix.O_CREAT | posix.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            posix.close(self._lock_fd)
            self._lock_fd = None

    # -- derived facts ------------------------------------------------------
    @property
    def pid(self) -> int:
        return int(self.data.get("pid") or 0)

    @property
    def fifo_path(self) -> str:
        return f"{self.dir}/{FIFO_FILE}"

    def init_alive(self) -> bool:
        """True while the container's init process (the same one) runs."""
        pid = self.pid
        if pid <= 0:
            return False
        started = process_start_time(pid)
        return started is not None and started == self.data.get("pid_start")

    def status(self) -> str:
        """creating, created, running, paused or stopped (runtime-spec)."""
        if self.data.get("broken"):
            return "stopped"
        if not self.init_alive():
            return "creating" if self.data.get("creating") and self.pid == 0 else "stopped"
        if self.data.get("creating"):
            return "creating"  # the init lives, but create has not finished setting it up
        if exists(self.fifo_path):
            return "created"
        if self.data.get("paused"):
            from flatstack.runtime.cgroups import manager_from_state

            cg = self.data.get("cgroup")
            if cg and manager_from_state(cg).is_frozen():
                return "paused"
        return "running"

    def oci_state(self) -> dict[str, Any]:
        """The runtime-spec state object."""
        status = self.status()
        state: dict[str, Any] = {
            "ociVersion": self.data.get("ociVersion", "1.2.0"),
            "id": self.id,
            "status": status,
            "bundle": self.data.get("bundle", ""),
            "annotations": self.data.get("annotations") or {},
        }
        if status not in ("stopped", "creating"):
            state["pid"] = self.pid
        else:
            state["pid"] = 0
        return state

    def runc_state(self) -> dict[str, Any]:
        """What ``flatrun state`` prints: runc's shape (a superset of the spec's)."""
        state = self.oci_state()
        return {
            "ociVersion": state["ociVersion"],
            "id": self.id,
            "pid": state["pid"],
            "status": state["status"],
            "bundle": state["bundle"],
            "rootfs": self.data.get("rootfs", ""),
            "created": self.data.get("created", ""),
            "owner": self.data.get("owner", ""),
            "annotations": state["annotations"],
        }

    def remove_dir(self) -> None:
        """Remove the container's directory and everything in it."""
        for name in (STATE_FILE, STATE_FILE + ".tmp", FIFO_FILE, LOCK_FILE):
            try:
                posix.unlink(f"{self.dir}/{name}")
            except FileNotFoundError:
                pass
        try:
            posix.rmdir(self.dir)
        except FileNotFoundError:
            pass
        except OSError:
            import shutil

            shutil.rmtree(self.dir, ignore_errors=True)
        self.unlock()


def list_ids(root: str) -> list[str]:
    """Ids of every container under ``root``."""
    try:
        names = posix.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(n for n in names
                  if exists(f"{root}/{n}/{STATE_FILE}"))


def rfc3339_now() -> str:
    """Current UTC time in RFC 3339 with nanoseconds, like runc."""
    ns = time.time_ns()
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"
