"""linux.cgroupsPath resolution and hierarchy discovery (no cgroupfs needed)."""

from __future__ import annotations

import pytest

from flatstack.errors import CgroupError
from flatstack.runtime.cgroups import _fs, manager_from_state, resolve_path
from flatstack.runtime.cgroups.v1 import V1Manager
from flatstack.runtime.cgroups.v2 import V2Manager

HYBRID_MOUNTS = [
    ("/sys/fs/cgroup/cpu,cpuacct", "/", "cgroup", "rw,cpu,cpuacct"),
    ("/sys/fs/cgroup/memory", "/", "cgroup", "rw,memory"),
    ("/sys/fs/cgroup/pids", "/", "cgroup", "rw,pids"),
    ("/sys/fs/cgroup/systemd", "/", "cgroup", "rw,xattr,name=systemd"),
    ("/sys/fs/cgroup/unified", "/", "cgroup2", "rw,nsdelegate"),
]
OWN = {"cpu": "/", "cpuacct": "/", "memory": "/svc/runtime", "pids": "/",
       "name=systemd": "/user.slice", "": "/"}


@pytest.mark.parametrize(("given", "expected"), [
    (None, "/c1"),
    ("", "/c1"),
    ("/a/b", "/a/b"),
    ("/a/../../b/", "/b"),
    ("a/b", "a/b"),
    ("../../a", "a"),
])
def test_cgroupfs_paths_follow_runc(given: str | None, expected: str) -> None:
    assert resolve_path(given, "c1") == expected


@pytest.mark.parametrize(("given", "expected"), [
    ("system.slice:docker:abc", "/system.slice/docker-abc.scope"),
    ("a-b-c.slice:pfx:abc", "/a.slice/a-b.slice/a-b-c.slice/pfx-abc.scope"),
    (":pfx:abc", "/system.slice/pfx-abc.scope"),
    ("-.slice::abc", "/abc.scope"),
    ("machine.slice::", "/machine.slice/c1.scope"),
    ("x.slice:p:my-app.slice", "/my.slice/my-app.slice"),
    ("", "/system.slice/flatrun-c1.scope"),
])
def test_systemd_paths_map_onto_cgroupfs(given: str, expected: str) -> None:
    assert resolve_path(given, "c1", systemd=True) == expected


@pytest.mark.parametrize("given", ["/a/b", "a:b", "bad--name.slice:p:n", "noslice:p:n",
                                   "-a.slice:p:n"])
def test_malformed_systemd_paths_are_refused(given: str) -> None:
    with pytest.raises(CgroupError, match=r"^linux\.cgroupsPath: "):
        resolve_path(given, "c1", systemd=True)


def test_v1_discovery_absolute_path() -> None:
    m = V1Manager.discover("/x/c1", mounts=HYBRID_MOUNTS, own=OWN)
    assert m.paths == {
        "cpu,cpuacct": "/sys/fs/cgroup/cpu,cpuacct/x/c1",
        "memory": "/sys/fs/cgroup/memory/x/c1",
        "pids": "/sys/fs/cgroup/pids/x/c1",
        "systemd": "/sys/fs/cgroup/systemd/x/c1",
        "": "/sys/fs/cgroup/unified/x/c1",
    }
    assert m.controllers["cpuacct"] == "cpu,cpuacct"
    assert m.controllers["name=systemd"] == "systemd"


def test_v1_discovery_relative_path_is_per_hierarchy() -> None:
    m = V1Manager.discover("c1", mounts=HYBRID_MOUNTS, own=OWN)
    assert m.paths["memory"] == "/sys/fs/cgroup/memory/svc/runtime/c1"
    assert m.paths["pids"] == "/sys/fs/cgroup/pids/c1"
    assert m.paths["systemd"] == "/sys/fs/cgroup/systemd/user.slice/c1"


def test_v1_discovery_strips_the_mount_root() -> None:
    # Inside a container: the memory hierarchy's /ctr is mounted at /sys/fs/cgroup/memory.
    mounts = [("/sys/fs/cgroup/memory", "/ctr", "cgroup", "rw,memory")]
    m = V1Manager.discover("sub", mounts=mounts, own={"memory": "/ctr/app"})
    assert m.paths["memory"] == "/sys/fs/cgroup/memory/app/sub"


def test_v2_relative_path_goes_under_own_cgroup() -> None:
    m = V2Manager.discover("/sys/fs/cgroup", "c1", own={"": "/user.slice/u.scope"})
    assert m.dir == "/sys/fs/cgroup/user.slice/u.scope/c1"
    assert m.paths == {"": m.dir}


def test_state_round_trip() -> None:
    m1 = V1Manager.discover("/x/c1", mounts=HYBRID_MOUNTS, own=OWN)
    m1.created = ["/sys/fs/cgroup/memory/x"]
    back = manager_from_state(m1.to_state())
    assert isinstance(back, V1Manager)
    assert (back.paths, back.controllers, back.created) == (m1.paths, m1.controllers,
                                                            m1.created)
    m2 = V2Manager.discover("/sys/fs/cgroup", "c1", own={"": "/a"})
    back2 = manager_from_state(m2.to_state())
    assert isinstance(back2, V2Manager) and back2.dir == m2.dir


def test_mountinfo_parsing(tmp_path: object) -> None:
    info = tmp_path / "mountinfo"  # type: ignore[operator]
    info.write_text(
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
        "99 31 0:29 / /mnt/again rw,relatime - cgroup cgroup rw,cpu\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:5 - cgroup2 cgroup2 rw\n"
        "50 31 0:40 /x /mnt/with\\040space rw - cgroup cgroup rw,name=foo\n")
    assert _fs.cgroup_mounts(str(info)) == [
        ("/sys/fs/cgroup/cpu", "/", "cgroup", "rw,cpu"),
        ("/sys/fs/cgroup/unified", "/", "cgroup2", "rw"),
        ("/mnt/with space", "/x", "cgroup", "rw,name=foo"),
    ]


def test_hugepage_names() -> None:
    assert [_fs.hugepage_name(s) for s in (64 << 10, 2 << 20, 1 << 30, 32 << 20)] == [
        "64KB", "2MB", "1GB", "32MB"]
