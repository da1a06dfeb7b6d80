"""The supervisor's parked zygote: made while idle, in the next container's cgroup, for real.

Engine level: the next container gets the zygote's id and cgroup, its limits still
apply, its output still reaches its log; a container the zygote cannot serve (a pids
limit of 1) runs without it. Keeper level (in this process, with real cgroups and a real
forked zygote): reservations, expiry, discard, and recovery after a killed supervisor.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from flatstack.control.reconciler import wait_until
from flatstack.engine import zygotes
from flatstack.engine.client import SupervisorClient
from flatstack.engine.containers import RunOptions
from flatstack.engine.zygotes import ZygoteKeeper
from flatstack.runtime.cgroups import manager_for
from tests.engine._engine_support import (  # noqa: F401 - fixtures
    IMAGE,
    Node,
    empty,
    layouts_fixture,
    node_fixture,
)


def _cgroup_lines(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cgroup").read_text().splitlines()


def _parked(socket_path: str) -> bool:
    return bool(SupervisorClient(socket_path).call("ping").get("zygote"))


def _zygote_pid(supervisor: int) -> int:
    """The supervisor's one child that is not a container init (python, not busybox)."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    found = [int(p) for p in children
             if Path(f"/proc/{p}/exe").resolve().name.startswith("python")]
    assert len(found) == 1, found
    return found[0]


def test_the_next_container_takes_the_parked_zygote(node: Node) -> None:
    engine = node.engine
    supervisor = engine.ensure_supervisor()
    assert wait_until(lambda: _parked(str(node.socket)), timeout=5)
    zygote = _zygote_pid(supervisor)
    # It holds nothing of the supervisor: /dev/null on 0-2 and its socket, nothing else.
    fds = sorted(int(n) for n in os.listdir(f"/proc/{zygote}/fd"))
    assert len(fds) == 4 and fds[:3] == [0, 1, 2]
    assert all(os.readlink(f"/proc/{zygote}/fd/{fd}") == "/dev/null" for fd in (0, 1, 2))
    parked_in = {line.split(":", 2)[2] for line in _cgroup_lines(zygote)}

    info = engine.run(RunOptions(image=IMAGE, command=["sh", "-c", "echo hello; sleep 30"],
                                 network="none", memory=48 << 20, pids_limit=20))
    cid = info["id"]
    # The container has the reserved id and the cgroup the zygote was parked in.
    assert parked_in == {f"/{cid}"}
    assert {line.split(":", 2)[2] for line in _cgroup_lines(info["pid"])} == {f"/{cid}"}
    assert not os.path.exists(f"/proc/{zygote}") or \
        Path(f"/proc/{zygote}/stat").read_text().split()[2] == "Z"
    # Limits applied to the cgroup the zygote brought along; output reaches the log.
    assert Path(f"/sys/fs/cgroup/memory/{cid}/memory.limit_in_bytes").read_text().strip() \
        == str(48 << 20)
    assert Path(f"/sys/fs/cgroup/pids/{cid}/pids.max").read_text().strip() == "20"
    assert wait_until(lambda: node.log_text(cid) == "hello\n", timeout=5)
    engine.remove(cid, force=True)
    assert not os.path.exists(f"/sys/fs/cgroup/memory/{cid}")
    # A new zygote is parked for the next one, under another id.
    assert wait_until(lambda: _parked(str(node.socket)), timeout=5)
    again = _zygote_pid(supervisor)
    assert again != zygote and f"/{cid}" not in _cgroup_lines(again)[0]


def test_a_pids_limit_of_one_runs_without_the_zygote(node: Node) -> None:
    engine = node.engine
    engine.ensure_supervisor()
    assert wait_until(lambda: _parked(str(node.socket)), timeout=5)
    info = engine.run(RunOptions(image=IMAGE, command=["true"], network="none",
                                 pids_limit=1, remove=True))
    done = engine.wait(info["id"], timeout=10)
    assert done["exit_code"] == 0
    assert not os.path.exists(f"/sys/fs/cgroup/pids/{info['id']}")
    assert wait_until(lambda: empty(node.leftovers()), timeout=5), node.leftovers()


@pytest.fixture
def keeper(tmp_path: Path):  # type: ignore[no-untyped-def]
    made = ZygoteKeeper(str(tmp_path))
    made.disabled = False
    yield made
    made.discard()


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_reservations_expire_and_discards_leave_nothing(
        keeper: ZygoteKeeper, monkeypatch: pytest.MonkeyPatch) -> None:
    assert keeper.due(time.monotonic() - 1) == 0  # nothing parked: due now
    keeper.idle()
    first = keeper.zygote
    assert first is not None and _alive(first.pid) and keeper.ready()
    paths = dict(first.cgroup.paths)
    assert all(os.path.isdir(p) for p in paths.values())
    assert {line.split(":", 2)[2] for line in _cgroup_lines(first.pid)} == \
        {f"/{first.container_id}"}
    # The id is handed out once; later callers get fresh ids.
    assert keeper.next_id() == first.container_id
    other = keeper.next_id()
    assert other != first.container_id and len(other) == 64 and not keeper.ready()
    assert keeper.take(other) is None and keeper.zygote is first
    # Nobody started it: after the reservation time it is replaced.
    monkeypatch.setattr(zygotes, "RESERVATION_TTL", 0.0)
    assert keeper.due(time.monotonic() - 1) == 0
    keeper.idle()
    assert keeper.zygote is not None and keeper.zygote is not first
    assert not _alive(first.pid) and not any(os.path.exists(p) for p in paths.values())
    keeper.discard()
    assert keeper.zygote is None and not os.path.exists(keeper.marker)


def test_a_killed_supervisors_zygote_cgroup_is_removed_by_the_next(keeper: ZygoteKeeper,
                                                                   tmp_path: Path) -> None:
    keeper.idle()
    zygote = keeper.zygote
    assert zygote is not None and os.path.exists(keeper.marker)
    paths = dict(zygote.cgroup.paths)
    # The supervisor dies: its zygote goes with it (PR_SET_PDEATHSIG); here, killed.
    os.kill(zygote.pid, signal.SIGKILL)
    os.waitpid(zygote.pid, 0)
    keeper.zygote = None
    assert all(os.path.isdir(p) for p in paths.values())
    ZygoteKeeper(str(tmp_path)).recover()
    assert not any(os.path.exists(p) for p in paths.values())
    assert not os.path.exists(keeper.marker)


def test_an_unusable_cgroup_turns_zygotes_off(keeper: ZygoteKeeper,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    manager = manager_for(None, "probe")
    assert manager is not None

    def refuse(self: object) -> None:
        from flatstack.errors import CgroupError

        raise CgroupError("cgroup: mkdir: permission denied")

    monkeypatch.setattr(type(manager), "create", refuse)
    keeper.idle()
    assert keeper.zygote is None and keeper.disabled and keeper.due(0.0) is None
