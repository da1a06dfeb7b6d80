"""The cgroup managers on this machine's real cgroupfs (root only).

v1/hybrid hosts: ``manager_for`` gives a V1Manager, tested end to end; the cgroup2
side (``/sys/fs/cgroup/unified`` here, ``/sys/fs/cgroup`` on a pure v2 host) is
tested with a V2Manager for everything that works without v1-bound controllers
(processes, freezer, cgroup.kill, hugetlb, stats).
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from flatstack.errors import CgroupError
from flatstack.runtime.cgroups import (
    CgroupManager,
    _fs,
    detect_mode,
    manager_for,
    manager_from_state,
)
from flatstack.runtime.cgroups.v2 import V2Manager

PARENT = "flatstack-test"
MiB = 1 << 20

v1_only = pytest.mark.skipif(detect_mode() == "unified", reason="needs cgroup v1 controllers")


def _unique() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def _leftovers(name: str) -> list[str]:
    """Directories named ``name`` (directly or under the test parent) in any hierarchy."""
    found = []
    for mountpoint, _root, _fstype, _opts in _fs.cgroup_mounts():
        for candidate in (f"{mountpoint}/{name}", f"{mountpoint}/{PARENT}/{name}"):
            if os.path.isdir(candidate):
                found.append(candidate)
    return found


class Child:
    """A forked process that waits for "go", runs ``body`` and exits with its result."""

    def __init__(self, body: Callable[[], int] | None = None) -> None:
        r, w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(w)
            code = 1
            try:
                os.read(r, 1)
                code = body() if body else (time.sleep(30) or 0)
            finally:
                os._exit(code)
        os.close(r)
        self._go = w
        self.status: int | None = None

    def go(self) -> None:
        os.write(self._go, b"g")
        os.close(self._go)

    def wait(self, timeout: float = 10) -> int:
        deadline = time.monotonic() + timeout
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
            elif time.monotonic() > deadline:
                raise AssertionError(f"child {self.pid} did not exit")
            else:
                time.sleep(0.005)
        return self.status

    def reap(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.wait()


@pytest.fixture
def cg() -> Iterator[Callable[..., CgroupManager]]:
    """Makes managers under /flatstack-test/<unique>; destroys them all afterwards."""
    made: list[tuple[CgroupManager, str]] = []

    def make(name: str | None = None) -> CgroupManager:
        name = name or _unique()
        manager = manager_for(f"/{PARENT}/{name}", name)
        made.append((manager, name))
        return manager

    yield make
    for manager, name in made:
        manager.destroy()
        assert _leftovers(name) == []


@pytest.fixture
def children() -> Iterator[Callable[..., Child]]:
    made: list[Child] = []

    def make(body: Callable[[], int] | None = None) -> Child:
        child = Child(body)
        made.append(child)
        return child

    yield make
    for child in made:
        child.reap()


def test_lifecycle_leaves_nothing_behind(cg: Any, children: Any) -> None:
    name = _unique()
    m = cg(name)
    m.create()
    m.apply({"memory": {"limit": 64 * MiB}, "pids": {"limit": 50}, "cpu": {"shares": 512}})
    kid = children()
    m.add_pid(kid.pid)
    assert m.exists() and m.pids() == [kid.pid]
    with open(f"/proc/{kid.pid}/cgroup") as f:
        lines = [line.rstrip("\n") for line in f]
    assert all(line.endswith(f"/{PARENT}/{name}") for line in lines), lines
    m.freeze()
    assert m.is_frozen()
    m.thaw()
    assert not m.is_frozen()
    stats = m.stats()
    assert stats["pids"] == {"current": 1, "limit": 50}
    if detect_mode() != "unified":
        assert stats["memory"]["usage"]["limit"] == 64 * MiB
    rebuilt = manager_from_state(json.loads(json.dumps(m.to_state())))
    rebuilt.destroy()  # kills the sleeping child, removes every directory
    assert os.WIFSIGNALED(kid.wait()) and os.WTERMSIG(kid.status) == signal.SIGKILL
    assert not m.exists() and _leftovers(name) == [] and _leftovers(PARENT) == []
    rebuilt.destroy()  # idempotent


def test_kill_all_signals_every_process(cg: Any, children: Any) -> None:
    m = cg()
    m.create()
    kids = [children(), children()]
    for kid in kids:
        m.add_pid(kid.pid)
    m.kill_all(signal.SIGTERM)
    for kid in kids:
        assert os.WTERMSIG(kid.wait()) == signal.SIGTERM
    assert not m.is_frozen() and m.pids() == []


def test_memory_limit_is_enforced(cg: Any, children: Any) -> None:
    m = cg()
    m.create()
    m.apply({"memory": {"limit": 32 * MiB, "swap": 32 * MiB}})

    def hog() -> int:
        data = b"x" * (256 * MiB)  # touches every page
        return len(data) and 0

    kid = children(hog)
    m.add_pid(kid.pid)
    before = m.oom_kill_count()
    kid.go()
    status = kid.wait()
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert m.oom_kill_count() == before + 1


def test_pids_limit_is_enforced(cg: Any, children: Any) -> None:
    m = cg()
    m.create()
    m.apply({"pids": {"limit": 2}})

    def forks() -> int:
        first = os.fork()
        if first == 0:
            time.sleep(5)
            os._exit(0)
        try:
            second = os.fork()
        except BlockingIOError:
            result = 0
        else:
            if second == 0:
                os._exit(0)
            os.waitpid(second, 0)
            result = 3
        os.kill(first, signal.SIGKILL)
        os.waitpid(first, 0)
        return result

    kid = children(forks)
    m.add_pid(kid.pid)
    kid.go()
    assert os.WEXITSTATUS(kid.wait()) == 0


@v1_only
def test_device_rules_are_enforced_on_v1(cg: Any, children: Any) -> None:
    m = cg()
    m.create()
    m.apply({"devices": [{"allow": False, "access": "rwm"},
                         {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}]})

    def opens() -> int:
        os.close(os.open("/dev/null", os.O_RDWR))
        try:
            os.close(os.open("/dev/zero", os.O_RDONLY))
        except PermissionError:
            return 0
        return 4

    kid = children(opens)
    m.add_pid(kid.pid)
    kid.go()
    assert os.WEXITSTATUS(kid.wait()) == 0


@v1_only
def test_update_orders_memory_and_swap_writes(cg: Any) -> None:
    m = cg()
    m.create()
    m.apply({"memory": {"limit": 64 * MiB, "swap": 64 * MiB}})
    path = m.paths[m.controllers["memory"]]  # type: ignore[attr-defined]
    m.update({"memory": {"limit": 128 * MiB, "swap": 256 * MiB}})  # memsw must go first
    m.update({"memory": {"limit": 32 * MiB, "swap": 32 * MiB}})  # limit must go first
    assert _fs.read_int(path, "memory.limit_in_bytes") == 32 * MiB
    assert _fs.read_int(path, "memory.memsw.limit_in_bytes") == 32 * MiB
    m.update({"memory": {"limit": -1}})  # unlimited memory: unlimited memsw too
    assert _fs.read_int(path, "memory.memsw.limit_in_bytes") > 1 << 60


@v1_only
def test_stats_have_runc_field_names(cg: Any, children: Any) -> None:
    m = cg()
    m.create()
    m.apply({"memory": {"limit": 64 * MiB}, "pids": {"limit": 10}})

    def work() -> int:
        data = [i * i for i in range(200_000)]
        return 0 if data else 1

    kid = children(work)
    m.add_pid(kid.pid)
    kid.go()
    kid.wait()
    stats = m.stats()
    assert set(stats) == {"cpu", "cpuset", "memory", "pids", "blkio", "hugetlb", "intel_rdt",
                          "network_interfaces"}
    assert stats["cpu"]["usage"]["total"] > 0
    assert {"kernel", "user", "percpu"} <= set(stats["cpu"]["usage"])
    assert set(stats["memory"]) >= {"usage", "swap", "kernel", "kernelTCP", "raw"}
    assert stats["memory"]["usage"]["limit"] == 64 * MiB
    assert stats["memory"]["usage"]["max"] > 0 and "failcnt" in stats["memory"]["usage"]
    assert stats["pids"] == {"limit": 10}  # omitempty: no process left
    json.dumps(stats)


def test_shared_parent_that_existed_is_kept(cg: Any) -> None:
    parent = _unique()
    outer = manager_for(f"/{PARENT}/{parent}", parent)
    outer.create()
    try:
        inner = manager_for(f"/{PARENT}/{parent}/c1", "c1")
        inner.create()
        inner.destroy()
        assert outer.exists() and not inner.exists()
    finally:
        outer.destroy()
    assert _leftovers(parent) == []


def test_non_empty_existing_cgroup_is_refused(cg: Any, children: Any) -> None:
    name = _unique()
    first = cg(name)
    first.create()
    kid = children()
    first.add_pid(kid.pid)
    second = manager_for(f"/{PARENT}/{name}", name)
    with pytest.raises(CgroupError, match="already has 1 process"):
        second.create()
    second.destroy()  # must not touch the other container's cgroup
    assert first.pids() == [kid.pid]


INVALID = [
    ({"memory": {"limit": 1000}},
     "linux.resources.memory.limit: must be at least 6291456 bytes"),
    ({"memory": {"limit": 64 * MiB, "swap": 32 * MiB}}, "linux.resources.memory.swap"),
    ({"memory": {"swappiness": "high"}}, "linux.resources.memory.swappiness"),
    ({"cpu": {"cpus": "999"}}, "linux.resources.cpu.cpus"),
    ({"cpu": {"period": 10, "quota": 5}}, "linux.resources.cpu."),
    ({"pids": {"limit": "x"}}, "linux.resources.pids.limit"),
    ({"devices": [{"allow": True, "type": "x"}]}, "linux.resources.devices[0].type"),
    ({"blockIO": {"weight": 5}}, "linux.resources.blockIO.weight"),
    ({"hugepageLimits": [{"pageSize": "3MB", "limit": 1}]},
     "linux.resources.hugepageLimits[0].pageSize"),
    ({"network": {"classID": 1}}, "linux.resources.network"),
    ({"unified": {"memory.max": "1"}}, "linux.resources.unified"),
]


@v1_only
@pytest.mark.parametrize(("resources", "message"), INVALID,
                         ids=[m.split(":")[0] for _, m in INVALID])
def test_invalid_values_name_the_field_and_leave_nothing(resources: dict[str, Any],
                                                         message: str) -> None:
    name = _unique()
    manager = manager_for(f"/{PARENT}/{name}", name)
    with pytest.raises(CgroupError) as info:
        try:
            manager.create()
            manager.apply(resources)
        except BaseException:
            manager.destroy()  # what the lead's create does
            raise
    assert message in str(info.value)
    assert _leftovers(name) == []


# -- the cgroup2 hierarchy (hybrid: /sys/fs/cgroup/unified) ------------------

def _cgroup2_root() -> str | None:
    for mountpoint, root, fstype, _opts in _fs.cgroup_mounts():
        if fstype == "cgroup2" and root == "/":
            return mountpoint
    return None


@pytest.fixture
def v2() -> Iterator[V2Manager]:
    root = _cgroup2_root()
    assert root is not None, "no cgroup2 mount (this machine has one at /sys/fs/cgroup/unified)"
    name = _unique()
    manager = V2Manager(root, f"/{PARENT}/{name}")
    yield manager
    manager.destroy()
    assert _leftovers(name) == []


def test_v2_processes_freezer_and_kill(v2: V2Manager, children: Any) -> None:
    v2.create()
    kids = [children(), children()]
    for kid in kids:
        v2.add_pid(kid.pid)
    assert sorted(v2.pids()) == sorted(k.pid for k in kids)
    v2.freeze()
    assert v2.is_frozen()
    v2.thaw()
    assert not v2.is_frozen()
    v2.kill_all(signal.SIGTERM)  # freeze, signal, thaw
    assert os.WTERMSIG(kids[0].wait()) == signal.SIGTERM
    assert os.WTERMSIG(kids[1].wait()) == signal.SIGTERM
    late = children()
    v2.add_pid(late.pid)
    v2.kill_all(signal.SIGKILL)  # cgroup.kill
    assert os.WTERMSIG(late.wait()) == signal.SIGKILL


def test_v2_destroy_kills_and_removes(v2: V2Manager, children: Any) -> None:
    v2.create()
    kid = children()
    v2.add_pid(kid.pid)
    os.mkdir(f"{v2.dir}/sub")  # a child cgroup the container made
    v2.destroy()
    assert os.WTERMSIG(kid.wait()) == signal.SIGKILL
    assert not v2.exists()


def test_v2_hugetlb_limits_and_stats(v2: V2Manager) -> None:
    v2.create()
    available = (_fs.read(v2.root, "cgroup.controllers") or "").split()
    assert "hugetlb" in available and _fs.hugepage_sizes(), "no hugetlb controller on cgroup2"
    v2.apply({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 * MiB}]})
    assert _fs.read(v2.dir, "hugetlb.2MB.max") == str(4 * MiB)
    v2.update({"hugepageLimits": [{"pageSize": "2MB", "limit": -1}]})
    assert _fs.read(v2.dir, "hugetlb.2MB.max") == "max"
    stats = v2.stats()
    assert stats["hugetlb"]["2MB"] == {"failcnt": 0}
    assert "total" in stats["cpu"]["usage"] or stats["cpu"]["usage"]["user"] == 0
    assert v2.oom_kill_count() == 0
    state = json.loads(json.dumps(v2.to_state()))
    assert manager_from_state(state).paths == v2.paths


def test_v2_rejects_device_rules_it_cannot_enforce(v2: V2Manager) -> None:
    v2.create()
    v2.apply({"devices": [{"allow": False, "access": "rwm"},
                          {"allow": True, "type": "c", "major": 1, "minor": 3}]})
    with pytest.raises(CgroupError, match=r"linux\.resources\.devices: .*eBPF"):
        v2.apply({"devices": [{"allow": True, "access": "rwm"},
                              {"allow": False, "type": "c", "major": 1, "minor": 5}]})
