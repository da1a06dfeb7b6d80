"""V2Manager's writes on a fake cgroup2 tree in a temporary directory.

This machine's v1 controllers cannot be enabled on cgroup2, so the controller
files (memory, cpu, pids, io, cpuset) are faked here; processes, the freezer,
cgroup.kill and hugetlb run for real in tests/integration/test_cgroups.py.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from flatstack.errors import CgroupError
from flatstack.runtime.cgroups import _fs, manager_from_state
from flatstack.runtime.cgroups.v2 import V2Manager

CONTROLLERS = "cpuset cpu io memory hugetlb pids"
FILES = {
    "cgroup.controllers": CONTROLLERS, "cgroup.subtree_control": "", "cgroup.procs": "",
    "cgroup.events": "populated 0\nfrozen 0", "cgroup.freeze": "0",
    "memory.max": "max", "memory.high": "max", "memory.swap.max": "max", "memory.low": "0",
    "memory.current": "0",
    "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1",
    "memory.stat": "anon 4096\nfile 8192", "memory.peak": "12288",
    "cpu.weight": "100", "cpu.max": "max 100000", "cpu.max.burst": "0", "cpu.idle": "0",
    "cpu.stat": "usage_usec 5\nuser_usec 3\nsystem_usec 2\nnr_periods 0\nnr_throttled 0\n"
                "throttled_usec 0",
    "pids.max": "max", "pids.current": "0", "io.weight": "default 100", "io.max": "",
    "io.stat": "", "cpuset.cpus": "", "cpuset.mems": "", "hugetlb.2MB.max": "max",
}


@pytest.fixture
def fake_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    root = tmp_path / "cgroup"
    root.mkdir()
    for name in ("cgroup.controllers", "cgroup.subtree_control", "cgroup.procs"):
        (root / name).write_text(FILES[name])
    real_mkdir_p = _fs.mkdir_p

    def mkdir_p(path: str, created: list[str]) -> None:
        before = len(created)
        real_mkdir_p(path, created)
        for directory in created[before:]:  # the kernel populates new cgroups
            for name, text in FILES.items():
                Path(directory, name).write_text(text)

    def rmdir(path: str) -> int:
        shutil.rmtree(path, ignore_errors=True)
        return 0

    monkeypatch.setattr(_fs, "mkdir_p", mkdir_p)
    monkeypatch.setattr(_fs, "rmdir", rmdir)
    monkeypatch.setattr(_fs, "hugepage_sizes", lambda: ["2MB", "1GB"])
    return str(root)


def content(m: V2Manager, name: str) -> str:
    return Path(m.dir, name).read_text()


def test_create_enables_controllers_down_to_the_parent(fake_root: str) -> None:
    m = V2Manager(fake_root, "/pod/c1")
    m.create()
    assert m.created == [f"{fake_root}/pod", f"{fake_root}/pod/c1"]
    plus = " ".join(f"+{c}" for c in CONTROLLERS.split())
    assert Path(fake_root, "cgroup.subtree_control").read_text() == plus
    assert Path(fake_root, "pod", "cgroup.subtree_control").read_text() == plus
    assert content(m, "cgroup.subtree_control") == ""  # never in the leaf itself
    m.destroy()
    assert not os.path.exists(f"{fake_root}/pod")


def test_apply_converts_v1_values(fake_root: str) -> None:
    m = V2Manager(fake_root, "/c1")
    m.create()
    m.apply({
        "memory": {"limit": 64 << 20, "swap": 96 << 20, "reservation": 32 << 20,
                   "swappiness": 10, "kernel": 1 << 20, "kernelTCP": 1 << 20},
        "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "burst": 1000,
                "cpus": "0-1", "mems": "0"},
        "pids": {"limit": 64},
        "blockIO": {"weight": 500, "throttleReadBpsDevice": [
            {"major": 8, "minor": 0, "rate": 1048576}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": -1}],
        "devices": [{"allow": False, "access": "rwm"},
                    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}],
        "unified": {"memory.high": "50000000"},
    })
    assert content(m, "memory.max") == str(64 << 20)
    assert content(m, "memory.swap.max") == str(32 << 20)  # swap only, not memory+swap
    assert content(m, "memory.low") == str(32 << 20)
    assert content(m, "cpu.weight") == "39"
    assert content(m, "cpu.max") == "50000 100000"
    assert content(m, "cpu.max.burst") == "1000"
    assert (content(m, "cpuset.cpus"), content(m, "cpuset.mems")) == ("0-1", "0")
    assert content(m, "pids.max") == "64"
    assert content(m, "io.weight") == "4950"
    assert content(m, "io.max") == "8:0 rbps=1048576"
    assert content(m, "hugetlb.2MB.max") == "max"
    assert content(m, "memory.high") == "50000000"


@pytest.mark.parametrize(("memory", "swap_max", "memory_max"), [
    ({"limit": -1}, "max", "max"),
    ({"limit": 64 << 20, "swap": 64 << 20}, "0", str(64 << 20)),
    ({"limit": 64 << 20, "swap": -1}, "max", str(64 << 20)),
    ({"limit": 64 << 20}, "untouched", str(64 << 20)),
])
def test_memory_swap_semantics(fake_root: str, memory: dict[str, int], swap_max: str,
                               memory_max: str) -> None:
    m = V2Manager(fake_root, "/c1")
    m.create()
    Path(m.dir, "memory.swap.max").write_text("untouched")
    m.apply({"memory": memory})
    assert (content(m, "memory.swap.max"), content(m, "memory.max")) == (swap_max, memory_max)


def test_quota_unlimited_and_period_only(fake_root: str) -> None:
    m = V2Manager(fake_root, "/c1")
    m.create()
    m.apply({"cpu": {"quota": -1, "period": 50000}})
    assert content(m, "cpu.max") == "max 50000"
    m.update({"cpu": {"quota": 20000}})
    assert content(m, "cpu.max") == "20000"


@pytest.mark.parametrize(("resources", "message"), [
    ({"cpu": {"realtimeRuntime": 1000}}, "linux.resources.cpu.realtimeRuntime"),
    ({"network": {"classID": 7}}, "linux.resources.network"),
    ({"memory": {"swap": 1 << 30}}, "linux.resources.memory.swap"),
    ({"blockIO": {"leafWeight": 100}}, "linux.resources.blockIO.leafWeight"),
    ({"devices": [{"allow": True, "access": "rwm"}]}, "linux.resources.devices"),
    ({"unified": {"rdma.max": "x"}}, "linux.resources.unified.rdma.max: the rdma "
                                     "controller is not enabled"),
])
def test_v2_refusals_name_the_field(fake_root: str, resources: dict[str, object],
                                    message: str) -> None:
    m = V2Manager(fake_root, "/c1")
    m.create()
    with pytest.raises(CgroupError) as info:
        m.apply(resources)
    assert str(info.value).startswith(message)


def test_check_before_update(fake_root: str) -> None:
    m = V2Manager(fake_root, "/c1")
    m.create()
    Path(m.dir, "memory.current").write_text(str(100 << 20))
    m.apply({"memory": {"limit": 64 << 20, "checkBeforeUpdate": True}})  # create: no check
    with pytest.raises(CgroupError, match="below the current usage"):
        m.update({"memory": {"limit": 64 << 20, "checkBeforeUpdate": True}})


def test_stats_and_oom_count(fake_root: str) -> None:
    m = V2Manager(fake_root, "/c1")
    m.create()
    Path(m.dir, "memory.max").write_text(str(64 << 20))
    Path(m.dir, "memory.current").write_text("4096")
    stats = m.stats()
    assert stats["cpu"]["usage"] == {"total": 5000, "kernel": 2000, "user": 3000}
    assert stats["memory"]["usage"] == {"limit": 64 << 20, "usage": 4096, "max": 12288,
                                        "failcnt": 3}
    assert stats["memory"]["swap"] == {"limit": (1 << 64) - 1, "usage": 4096, "failcnt": 0}
    assert stats["memory"]["cache"] == 8192
    assert stats["hugetlb"] == {}
    assert m.oom_kill_count() == 1


def test_rootless_without_delegation_is_inert(fake_root: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(path: str, created: list[str]) -> None:
        raise _fs.MkdirError(path, PermissionError(13, "Permission denied"))

    monkeypatch.setattr(_fs, "mkdir_p", denied)
    m = V2Manager(fake_root, "/c1", rootless=True)
    m.create()
    assert m.paths == {} and not m.exists()
    m.add_pid(os.getpid())  # nothing to join
    m.apply({})
    with pytest.raises(CgroupError, match="not delegated"):
        m.apply({"pids": {"limit": 5}})
    again = manager_from_state(m.to_state())
    assert again.paths == {}
    again.destroy()


def test_update_leaves_device_rules_alone(fake_root: str) -> None:
    m = V2Manager(fake_root, "/c1")
    m.create()
    m.update({"devices": [{"allow": True, "access": "rwm"}], "pids": {"limit": 9}})
    assert content(m, "pids.max") == "9"
