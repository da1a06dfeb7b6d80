"""Rootless flatrun: containers created and run by a real unprivileged host user.

Every flatrun here runs as the user the session creates (tests/rootless/conftest.py),
with its own /etc/subuid range and the default state root $XDG_RUNTIME_DIR/flatrun.
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from flatstack.runtime.cgroups import detect_mode
from tests.rootless.conftest import RootlessFlatrun, RootlessUser

WARNING = "flatrun: warning: cgroups not delegated to uid {uid}: skipped"


def _config(spec: dict[str, Any], args: list[str]) -> dict[str, Any]:
    config = copy.deepcopy(spec)
    config["process"]["args"] = args
    return config


def _host_ids(pid: int) -> tuple[list[str], list[str]]:
    """Real, effective, saved and fs uids and gids of a host process."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    uids = next(ln.split()[1:] for ln in status if ln.startswith("Uid:"))
    gids = next(ln.split()[1:] for ln in status if ln.startswith("Gid:"))
    return uids, gids


def _alive(pid: int, uid: int) -> bool:
    """A live (not zombie) process of ``uid`` has ``pid``."""
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return False
    state = next(ln.split()[1] for ln in status if ln.startswith("State:"))
    uids = next(ln.split()[1:] for ln in status if ln.startswith("Uid:"))
    return state != "Z" and str(uid) in uids


def _wait_status(rootless: RootlessFlatrun, cid: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while True:
        state = rootless.state(cid)
        if state["status"] == status or time.monotonic() > deadline:
            return state
        time.sleep(0.01)


def test_spec_rootless_runs_with_root_mapped_to_the_user(rootless: RootlessFlatrun,
                                                         rootless_user: RootlessUser) -> None:
    """``flatrun spec --rootless`` as the user gives a config that runs as is (bar the
    rootfs and args): container root is the user on the host, not host root."""
    bundle = rootless_user.home / f"spec-{rootless.new_id()}"
    bundle.mkdir()
    rootless_user.chown(bundle)
    rootless_user.run([rootless_user.flatrun, "spec", "--rootless"], cwd=str(bundle),
                      out_dir=rootless.out_dir)
    config = json.loads((bundle / "config.json").read_text())
    assert (bundle / "config.json").stat().st_uid == rootless_user.uid
    uid, gid = rootless_user.uid, rootless_user.gid
    assert config["linux"]["uidMappings"] == [{"containerID": 0, "hostID": uid, "size": 1}]
    assert config["linux"]["gidMappings"] == [{"containerID": 0, "hostID": gid, "size": 1}]
    config["root"]["path"] = rootless_user.rootfs
    config["process"]["terminal"] = False
    config["process"]["args"] = ["sh", "-c", "id; cat /proc/self/uid_map /proc/self/gid_map;"
                                 " grep -E '^(Uid|CapEff):' /proc/self/status"]
    (bundle / "config.json").write_text(json.dumps(config))
    result = rootless("run", "--bundle", str(bundle), rootless.new_id())
    lines = result.stdout.splitlines()
    assert lines[0].startswith("uid=0(root) gid=0(root)"), result.stdout
    assert lines[1].split() == ["0", str(uid), "1"]
    assert lines[2].split() == ["0", str(gid), "1"]
    assert lines[3].split() == ["Uid:", "0", "0", "0", "0"]
    assert int(lines[4].split()[1], 16) != 0, "container root keeps its (namespaced) caps"
    assert WARNING.format(uid=uid) in result.stderr


def test_lifecycle_in_the_default_state_root(rootless: RootlessFlatrun,
                                             rootless_user: RootlessUser,
                                             rootless_spec: dict[str, Any]) -> None:
    """create/start/state/ps/kill/delete as the user; state under $XDG_RUNTIME_DIR/flatrun;
    every process of the container is the user on the host."""
    bundle = rootless.bundle(_config(rootless_spec, ["sh", "-c", "sleep 60 & exec sleep 61"]))
    cid = rootless.new_id()
    rootless("create", "--bundle", bundle, cid)
    state_dir = rootless.state_root / cid
    assert state_dir.is_dir() and state_dir.stat().st_uid == rootless_user.uid
    state = rootless.state(cid)
    assert state["status"] == "created"
    assert state["owner"] == str(rootless_user.uid)
    assert next(c for c in json.loads(rootless("list", "--format", "json").stdout)
                if c["id"] == cid)["status"] == "created"
    rootless("start", cid)
    assert _wait_status(rootless, cid, "running")["status"] == "running"
    deadline = time.monotonic() + 5
    while len(pids := json.loads(rootless("ps", "--format", "json", cid).stdout)) < 2:
        assert time.monotonic() < deadline, f"ps without a cgroup found only {pids}"
        time.sleep(0.01)
    assert state["pid"] in pids
    host = str(rootless_user.uid)
    for pid in pids:
        uids, gids = _host_ids(pid)
        assert uids == [host] * 4, f"pid {pid} runs as host uids {uids}"
        assert gids == [str(rootless_user.gid)] * 4
    rootless("kill", "--all", cid, "KILL")
    assert _wait_status(rootless, cid, "stopped")["status"] == "stopped"
    deadline = time.monotonic() + 5
    while left := [pid for pid in pids if _alive(pid, rootless_user.uid)]:
        assert time.monotonic() < deadline, f"kill --all (no cgroup) left {left} alive"
        time.sleep(0.01)
    rootless("delete", cid)
    assert not state_dir.exists()
    assert cid not in rootless("list", "--quiet").stdout.split()


def test_container_root_cannot_write_root_owned_host_files(
        rootless: RootlessFlatrun, rootless_user: RootlessUser,
        rootless_spec: dict[str, Any], tmp_path: Path) -> None:
    """A bundle binds a host root-owned directory read-write: container root holds
    CAP_DAC_OVERRIDE/CAP_FOWNER only over ids its namespace maps, so host root's
    files stay out of reach (EACCES / EPERM), and show as the overflow id."""
    host_dir = rootless_user.base / "root-owned"
    host_dir.mkdir(mode=0o755)
    victim = host_dir / "victim"
    victim.write_text("host data\n")
    os.chmod(victim, 0o644)
    script = ("stat -c 'owner=%u mode=%a' /tmp/victim; echo pwned >> /tmp/victim;"
              " echo append=$?; touch /tmp/new; echo create=$?; chmod 666 /tmp/victim;"
              " echo chmod=$?; rm -f /tmp/victim; echo rm=$?")
    config = _config(rootless_spec, ["sh", "-c", script])
    config["mounts"].append({"destination": "/tmp", "type": "bind", "source": str(host_dir),
                             "options": ["rbind", "rw"]})
    result = rootless("run", "--bundle", rootless.bundle(config), rootless.new_id())
    out = result.stdout.split()
    assert out[:2] == ["owner=65534", "mode=644"], result.stdout
    assert out[2:] == ["append=1", "create=1", "chmod=1", "rm=1"], result.stdout
    assert "can't create /tmp/victim: Permission denied" in result.stderr
    assert "/tmp/new: Permission denied" in result.stderr
    assert "/tmp/victim: Operation not permitted" in result.stderr  # chmod: not the owner
    assert "can't remove '/tmp/victim': Permission denied" in result.stderr
    assert victim.read_text() == "host data\n"
    assert victim.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in host_dir.iterdir()) == ["victim"]


@pytest.mark.parametrize("host_root", [0, 1], ids=["host-root-as-root", "host-root-as-uid-1"])
def test_bundle_mapping_host_root_is_refused(rootless: RootlessFlatrun,
                                             rootless_user: RootlessUser,
                                             rootless_spec: dict[str, Any],
                                             host_root: int) -> None:
    """A malicious bundle maps host uid 0 into its user namespace: newuidmap refuses
    an id outside the user's /etc/subuid ranges; flatrun fails naming the field and
    leaves no state or process behind."""
    config = _config(rootless_spec, ["id"])
    maps = [{"containerID": 0, "hostID": rootless_user.uid, "size": 1},
            {"containerID": 1, "hostID": 0, "size": 1}]
    config["linux"]["uidMappings"] = ([{"containerID": 0, "hostID": 0, "size": 1}]
                                      if host_root == 0 else maps)
    cid = rootless.new_id()
    result = rootless("run", "--bundle", rootless.bundle(config), cid, check=False)
    assert result.returncode != 0
    assert "flatrun: linux.uidMappings: newuidmap failed" in result.stderr
    assert "-> [0-1) not allowed" in result.stderr, result.stderr
    assert result.stdout == ""
    assert not (rootless.state_root / cid).exists()
    assert cid not in rootless("list", "--quiet").stdout.split()


@pytest.mark.parametrize("ranges", ["uids-and-gids", "gids-only", "root-group-from-subgid"])
def test_subuid_range_maps_many_ids(rootless: RootlessFlatrun, rootless_user: RootlessUser,
                                    rootless_spec: dict[str, Any], ranges: str) -> None:
    """Mappings with ranges from /etc/subuid and /etc/subgid (written through newuidmap
    and newgidmap): ids the container sets on files land on the subordinate ids on the
    host; ids outside its maps cannot be set."""
    uid, gid, sub = rootless_user.uid, rootless_user.gid, rootless_user.subid_start
    count = rootless_user.subid_count
    data = rootless_user.home / f"data-{ranges}"
    data.mkdir()
    rootless_user.chown(data)
    script = ("touch /home/f; chown 1000 /home/f; chgrp 1000 /home/f; stat -c '%u:%g' /home/f;"
              " cat /proc/self/uid_map /proc/self/gid_map")
    config = _config(rootless_spec, ["sh", "-c", script])
    own = {"containerID": 0, "hostID": uid, "size": 1}
    own_group = {"containerID": 0, "hostID": gid, "size": 1}
    extra = {"containerID": 1, "hostID": sub, "size": count}
    linux = config["linux"]
    if ranges == "uids-and-gids":
        linux["uidMappings"], linux["gidMappings"] = [own, extra], [own_group, dict(extra)]
        inside, host = "1000:1000", (sub + 999, sub + 999)
        errors: list[str] = []
    elif ranges == "gids-only":
        linux["uidMappings"], linux["gidMappings"] = [own], [own_group, dict(extra)]
        inside, host = "0:1000", (uid, sub + 999)
        errors = ["chown: /home/f: Invalid argument"]  # uid 1000 is not mapped
    else:
        # One line each, but the gid line is not the user's own gid: a map the user
        # may not write itself, only through newgidmap.
        root_group = {"containerID": 0, "hostID": sub, "size": 1}
        linux["uidMappings"], linux["gidMappings"] = [own], [root_group]
        inside, host = "0:0", (uid, sub)
        errors = ["chown: /home/f: Invalid argument", "chgrp: /home/f: Invalid argument"]
    config["mounts"].append({"destination": "/home", "type": "bind", "source": str(data),
                             "options": ["rbind", "rw"]})
    result = rootless("run", "--bundle", rootless.bundle(config), rootless.new_id(),
                      check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == inside
    expected_maps = [linux["uidMappings"], linux["gidMappings"]]
    assert [line.split() for line in lines[1:]] == [
        [str(m["containerID"]), str(m["hostID"]), str(m["size"])]
        for maps in expected_maps for m in maps]
    st = (data / "f").stat()
    assert (st.st_uid, st.st_gid) == host
    for error in errors:
        assert error in result.stderr


def test_undelegated_cgroups_are_skipped_with_a_warning(rootless: RootlessFlatrun,
                                                         rootless_user: RootlessUser,
                                                         rootless_spec: dict[str, Any]) -> None:
    """The host's cgroups belong to root: the container runs without one, flatrun says
    so on stderr, and what needs a cgroup says why it cannot work."""
    bundle = rootless.bundle(_config(rootless_spec, ["sleep", "60"]))
    cid = rootless.new_id()
    created = rootless("create", "--bundle", bundle, cid)
    warning = next(line for line in created.stderr.splitlines()
                   if line.startswith(WARNING.format(uid=rootless_user.uid)))
    skipped = warning.split("skipped ", 1)[1].split(" (")[0].split(", ")
    if detect_mode() == "unified":
        assert skipped == ["unified"], warning
    else:
        assert {"pids", "memory", "freezer"} <= set(skipped), warning
    cgroups = Path(f"/proc/{rootless.state(cid)['pid']}/cgroup").read_text()
    assert cid not in cgroups, cgroups
    rootless("start", cid)
    paused = rootless("pause", cid, check=False)
    assert paused.returncode != 0
    assert f"container {cid} has no cgroup to freeze" in paused.stderr
    updated = rootless("update", "--pids-limit", "10", cid, check=False)
    assert updated.returncode != 0 and f"container {cid} has no cgroup" in updated.stderr


def test_limits_need_a_delegated_cgroup(rootless: RootlessFlatrun,
                                        rootless_user: RootlessUser,
                                        rootless_spec: dict[str, Any]) -> None:
    """A limit cannot be silently dropped: asking for one in a hierarchy the user may
    not write fails, naming the field, and leaves nothing behind (as runc)."""
    config = _config(rootless_spec, ["true"])
    config["linux"]["resources"] = {"pids": {"limit": 10}}
    cid = rootless.new_id()
    result = rootless("run", "--bundle", rootless.bundle(config), cid, check=False)
    assert result.returncode != 0
    assert "flatrun: linux.resources.pids.limit: " in result.stderr, result.stderr
    assert "delegated" in result.stderr, result.stderr
    assert not (rootless.state_root / cid).exists()


@pytest.fixture
def delegated(rootless_user: RootlessUser) -> Any:
    """v1 pids and freezer subtrees handed to the user (chown, as a delegating
    manager would); removed afterwards."""
    name = f"{rootless_user.name}-{os.urandom(3).hex()}"
    dirs = [Path(f"/sys/fs/cgroup/{c}/{name}") for c in ("pids", "freezer")]
    for d in dirs:
        d.mkdir()
        for path in (d, d / "cgroup.procs", d / "tasks"):
            rootless_user.chown(path)
    yield name, dirs
    for d in dirs:
        for child in sorted(d.iterdir(), reverse=True):
            if child.is_dir():
                child.rmdir()
        d.rmdir()


@pytest.mark.skipif(detect_mode() == "unified",
                    reason="delegation here is by v1 subtree; this host has v1 controllers")
def test_delegated_v1_cgroups_are_used(rootless: RootlessFlatrun, rootless_user: RootlessUser,
                                       rootless_spec: dict[str, Any], delegated: Any) -> None:
    """With pids and freezer delegated, the limit is applied (forks beyond it fail in
    the container), pause/resume work, and only the other hierarchies are skipped."""
    name, (pids_dir, freezer_dir) = delegated
    cid = rootless.new_id()
    # A subshell forks past the limit (ash gives up on the first refused fork);
    # the init then becomes a sleep, keeping the container and its sleeps alive.
    script = "(i=0; while [ $i -lt 12 ]; do sleep 60 & i=$((i+1)); done); exec sleep 61"
    config = _config(rootless_spec, ["sh", "-c", script])
    config["linux"]["cgroupsPath"] = f"/{name}/{cid}"
    config["linux"]["resources"] = {"pids": {"limit": 8}}
    created = rootless("create", "--bundle", rootless.bundle(config), cid)
    warning = next(line for line in created.stderr.splitlines()
                   if line.startswith(WARNING.format(uid=rootless_user.uid)))
    skipped = warning.split("skipped ", 1)[1].split(" (")[0].split(", ")
    assert "pids" not in skipped and "freezer" not in skipped and "memory" in skipped
    leaf = pids_dir / cid
    assert (leaf / "pids.max").read_text().strip() == "8"
    init = rootless.state(cid)["pid"]
    assert str(init) in (leaf / "cgroup.procs").read_text().split()
    rootless("start", cid)
    deadline = time.monotonic() + 5
    while int((leaf / "pids.events").read_text().split()[1]) == 0:
        assert time.monotonic() < deadline, "no fork in the container hit pids.max"
        time.sleep(0.02)
    assert rootless.state(cid)["status"] == "running"
    pids = json.loads(rootless("ps", "--format", "json", cid).stdout)
    assert 2 <= len(pids) <= 8, pids
    assert sorted(int(p) for p in (leaf / "cgroup.procs").read_text().split()) == pids
    rootless("pause", cid)
    assert (freezer_dir / cid / "freezer.state").read_text().strip() == "FROZEN"
    assert rootless.state(cid)["status"] == "paused"
    rootless("resume", cid)
    assert (freezer_dir / cid / "freezer.state").read_text().strip() == "THAWED"
    rootless("delete", "--force", cid)
    assert not leaf.exists() and not (freezer_dir / cid).exists()
