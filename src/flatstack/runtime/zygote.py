"""A stage one forked ahead of time and parked in the next container's cgroup.

Moving a process into a cgroup (a ``cgroup.procs`` write) waits for an RCU grace
period, 7-15 ms here (docs/cgroups.md), and that wait sat on every create's critical
path. A long-lived caller (the engine's supervisor) pays it while idle instead: it
picks the id of its next container, creates that container's cgroup, forks a zygote and
moves it in. When the container is created, the zygote receives the launch plan over a
unix socket (pickled, its descriptors by ``SCM_RIGHTS`` and put back at the numbers the
plan names, 0-2 included) and runs stage one. The init it forks is born in the cgroup:
no ``cgroup.procs`` write is left on the create path.

The zygote holds nothing of its parent: it closes every inherited descriptor at birth,
points 0-2 at /dev/null and dies with its parent (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import os
import signal
import socket

from flatstack.errors import FlatstackError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from flatstack.runtime.cgroups import CgroupManager
    from flatstack.runtime.init import LaunchPlan

_HEADER = 8
_MAX_FDS = 250  # SCM_MAX_FD is 253


class Zygote:
    """One parked process, reserved for ``container_id`` and its ``cgroup``."""

    def __init__(self, pid: int, sock: socket.socket, container_id: str,
                 cgroup: CgroupManager | None) -> None:
        self.pid = pid
        self.sock = sock
        self.container_id = container_id
        self.cgroup = cgroup
        self.used = False  # set by create() when the container took it (and its cgroup)

    @classmethod
    def spawn(cls, container_id: str, cgroup: CgroupManager) -> Zygote:
        """Fork the zygote and move it into ``cgroup`` (created by the caller, which
        still owns it if this raises)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            try:
                ours.close()
                _zygote_main(theirs)
            finally:
                os._exit(127)
        theirs.close()
        zygote = cls(pid, ours, container_id, cgroup)
        try:
            cgroup.add_pid(pid)
        except BaseException:
            zygote._end()
            raise
        return zygote

    def fits(self, container_id: str, cgroup_paths: dict[str, str],
             resources: dict[str, Any]) -> bool:
        """Whether this zygote can start that container: same id and cgroup, and room
        for the zygote beside the init under a pids limit."""
        from flatstack.runtime.cgroups.base import room_for_a_helper

        return (container_id == self.container_id and self.cgroup is not None
                and cgroup_paths == self.cgroup.paths and room_for_a_helper(resources))

    def launch(self, plan: LaunchPlan) -> int | None:
        """Hand the plan (and fds 0-2 as they are now) over; the zygote's pid, now stage
        one, or None when the zygote is gone (the caller forks instead)."""
        import pickle

        targets = sorted({0, 1, 2, *plan.channel.fds(), plan.fifo_fd, plan.console_fd,
                          *plan.mount_trees.values(), *plan.close_in_child} - {-1})
        if len(targets) > _MAX_FDS:
            return None
        flags = [os.get_inheritable(fd) for fd in targets]
        body = pickle.dumps((plan, targets, flags), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            socket.send_fds(self.sock, [len(body).to_bytes(_HEADER, "little")], targets)
            self.sock.sendall(body)
        except OSError:
            self._end()
            return None
        finally:
            self.sock.close()
        return self.pid

    def settle(self) -> None:
        """After create: discard the zygote if the container did not take it."""
        if self.used:
            self.sock.close()
        else:
            self.discard()

    def discard(self) -> None:
        """End the zygote and remove its cgroup (an unused reservation); idempotent."""
        if self.used:
            raise FlatstackError("internal error: discarding a zygote a container took")
        self._end()
        if self.cgroup is not None:
            cgroup, self.cgroup = self.cgroup, None
            try:
                cgroup.destroy()
            except FlatstackError:
                pass

    def _end(self) -> None:
        self.sock.close()
        pid, self.pid = self.pid, -1
        if pid <= 0:  # already reaped by the caller's loop: never kill(-1)
            return
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _zygote_main(sock: socket.socket) -> None:
    """In the zygote: shed the parent's state, wait for a plan, run stage one."""
    import gc

    from flatstack.kernel import proc

    # The parent's unreachable objects must never be finalized here: a socket or file
    # among them would close an fd number that the plan's descriptors take below.
    gc.disable()
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    proc.set_pdeathsig(signal.SIGKILL)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    proc.close_fds_from(3, {sock.fileno()}, now=True)
    received = _receive(sock)
    if received is None:
        return  # discarded before use
    from flatstack.runtime.init import preload, stage_one

    preload(received)
    stage_one(received)


def _receive(sock: socket.socket) -> LaunchPlan | None:
    """The plan, with the descriptors it names in place; None on EOF."""
    import fcntl
    import pickle

    try:
        header, fds, _flags, _addr = socket.recv_fds(sock, _HEADER, _MAX_FDS)
    except OSError:
        return None
    if len(header) < _HEADER:
        return None
    size = int.from_bytes(header, "little")
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    plan, targets, inheritable = pickle.loads(b"".join(chunks))
    if len(fds) != len(targets):
        return None
    # Two steps, so that no received descriptor is overwritten before it is placed:
    # everything first above every target, then down to its number.
    high = max([*targets, *fds, sock.fileno()]) + 1
    parked = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, high) for fd in fds]
    for fd in fds:
        os.close(fd)
    sock.close()
    for fd, target, keep in zip(parked, targets, inheritable, strict=True):
        os.dup2(fd, target, inheritable=keep)
        os.close(fd)
    return plan  # type: ignore[no-any-return]
