"""How ``create`` puts the container into its cgroup: with no ``cgroup.procs`` write.

A ``cgroup.procs`` write waits for an RCU grace period (5-23 ms here).  flatrun forks
its first child with ``clone3(CLONE_INTO_CGROUP)`` into the cgroup2 directory and lets
it join its v1 directories itself through ``tasks``.  With nothing to join and no time
namespace, that child is born in its new namespaces and is the init (no stage one).
The trace of a real ``create`` shows which files were written and which processes were
made; /proc shows where the init ended up.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

from flatstack.runtime.cgroups import _fs
from tests.conftest import Bundles, Flatrun, cgroup_dirs, namespace_holder
from tests.integration.test_userns import _userns


def _traced_create(flatrun: Flatrun, bundle: str, cid: str, tmp: Path,
                   calls: str = "clone3,openat") -> tuple[str, str]:
    """create under ``strace -f``, then start (strace follows the init until it exits).
    Returns the trace and the init's /proc/PID/cgroup as it was after create."""
    trace = tmp / "create.trace"
    with open(tmp / "create.out", "w") as out:
        tracer = subprocess.Popen(
            ["strace", "-f", "-qq", "-e", f"trace={calls}", "-o", str(trace),
             flatrun.binary, "--root", flatrun.root, "create", "--bundle", bundle, cid],
            stdout=out, stderr=out)
        deadline = time.monotonic() + 30
        while not (Path(flatrun.root) / cid / "state").exists() or \
                flatrun.state(cid)["status"] != "created":
            assert tracer.poll() in (None, 0), (tmp / "create.out").read_text()
            assert time.monotonic() < deadline, "create did not finish"
            time.sleep(0.05)
        state = flatrun.state(cid)
        cgroups = Path(f"/proc/{state['pid']}/cgroup").read_text()
        flatrun("start", cid)
        tracer.wait(timeout=30)
    return trace.read_text(), cgroups


def test_init_enters_its_cgroup_without_a_procs_write(flatrun: Flatrun, make_bundle: Bundles,
                                                       tmp_path: Path) -> None:
    bundle = make_bundle(["true"])
    cid = flatrun.new_id()
    text, cgroups = _traced_create(flatrun, bundle, cid, tmp_path)
    writes = re.findall(r'openat\(AT_FDCWD, "([^"]+)", O_WRONLY', text)
    assert not [w for w in writes if w.endswith("/cgroup.procs") and cid in w], writes
    # Every hierarchy the host mounts has the init in the container's directory.
    lines = [line.split(":", 2) for line in cgroups.splitlines()]
    assert lines and all(path.endswith(f"/{cid}") for _n, _c, path in lines), cgroups
    v1 = [m for m, _r, fstype, _o in _fs.cgroup_mounts() if fstype == "cgroup"]
    v2 = [m for m, _r, fstype, _o in _fs.cgroup_mounts() if fstype == "cgroup2"]
    joined = [w for w in writes if w.endswith("/tasks") and cid in w]
    assert len(joined) == len(v1), (joined, v1)
    if v2:
        assert re.search(r"clone3\(\{flags=[A-Z_|]*CLONE_INTO_CGROUP\b", text), text
    flatrun("delete", cid)
    assert cgroup_dirs(cid) == []


def test_pids_limit_of_one_still_places_the_init(flatrun: Flatrun, make_bundle: Bundles,
                                                 tmp_path: Path) -> None:
    """Only the init fits: it is cloned straight into the cgroup, no stage one."""
    bundle = make_bundle(["sh", "-c", "exit 3"])
    config_path = Path(bundle) / "config.json"
    config = json.loads(config_path.read_text())
    config["linux"].setdefault("resources", {})["pids"] = {"limit": 1}
    config_path.write_text(json.dumps(config))
    cid = flatrun.new_id()
    flatrun("create", "--bundle", bundle, cid)
    pid = flatrun.state(cid)["pid"]
    cgroups = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    assert all(line.endswith(f"/{cid}") for line in cgroups), cgroups
    pids_dirs = [d for d in cgroup_dirs(cid) if "/pids/" in d]
    for directory in pids_dirs:
        assert (Path(directory) / "pids.max").read_text().strip() == "1"
    flatrun("delete", "--force", cid)
    assert cgroup_dirs(cid) == []


def test_delete_kills_what_the_init_left_in_its_cgroup(flatrun: Flatrun, make_bundle: Bundles
                                                       ) -> None:
    """Without a PID namespace the init's background child outlives it: delete's quick
    rmdir finds the cgroup busy, and the full teardown kills the child first."""
    bundle = make_bundle(["sh", "-c", "sleep 60 & exit 0"])
    config_path = Path(bundle) / "config.json"
    config = json.loads(config_path.read_text())
    config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"]
                                     if n["type"] != "pid"]
    config_path.write_text(json.dumps(config))
    cid = flatrun.new_id()
    flatrun("create", "--bundle", bundle, cid)
    flatrun("start", cid)
    deadline = time.monotonic() + 10
    while flatrun.state(cid)["status"] != "stopped":
        assert time.monotonic() < deadline, "the init did not exit"
        time.sleep(0.02)
    procs = next(d for d in cgroup_dirs(cid) if "/pids/" in d or "/unified/" in d)
    left = [int(p) for p in (Path(procs) / "cgroup.procs").read_text().split()]
    assert left, "the background sleep should still be in the cgroup"
    flatrun("delete", cid)
    assert cgroup_dirs(cid) == []
    for pid in left:
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def _clones(text: str) -> list[tuple[str, int]]:
    """(flags, child pid) of every clone/clone3/fork in a trace."""
    found = re.findall(r"\b(?:clone3\(\{flags=|clone\(child_stack=\w+, flags=)([A-Z_|0-9x]+)"
                       r"[^\n]*= (\d+)$", text, re.M)
    return [(flags, int(pid)) for flags, pid in found]


def test_init_is_cloned_into_its_namespaces(flatrun: Flatrun, make_bundle: Bundles,
                                             tmp_path: Path) -> None:
    bundle = make_bundle(["true"])  # new pid, mount, net, ipc, uts and cgroup namespaces
    cid = flatrun.new_id()
    text, _ = _traced_create(flatrun, bundle, cid, tmp_path, "clone,clone3,unshare,execve")
    runtime_clones = _clones(text)
    # One process made by create: born in its namespaces; nothing unshared them later
    # but the cgroup namespace, which the init enters once it is placed.
    assert len(runtime_clones) == 1, text
    flags, child = runtime_clones[0]
    assert {"CLONE_NEWNS", "CLONE_NEWPID", "CLONE_NEWNET", "CLONE_NEWIPC",
            "CLONE_NEWUTS"} <= set(flags.split("|")), flags
    assert "CLONE_NEWCGROUP" not in flags
    unshared = re.findall(r"unshare\(([A-Z_|]+)\)", text)
    assert unshared == ["CLONE_NEWCGROUP"], unshared
    assert re.search(rf"^{child} +execve\(", text, re.M), text  # the init itself ran it
    flatrun("delete", cid)


def test_a_user_namespace_is_cloned_with_the_init(flatrun: Flatrun, make_bundle: Bundles,
                                                  tmp_path: Path) -> None:
    """The init is born in its user namespace with the others; the parent writes its
    id maps from outside (the init cannot) and it joins its v1 cgroups through tasks
    fds the parent opened (a tasks write is checked against the opener)."""
    bundle = make_bundle(["true"], edit=_userns)
    cid = flatrun.new_id()
    text, cgroups = _traced_create(flatrun, bundle, cid, tmp_path,
                                   "clone,clone3,unshare,execve,openat")
    # (a plain fork may hold the user namespace of the rootfs idmap: runtime/idmapped.py)
    runtime_clones = [(f, pid) for f, pid in _clones(text) if "CLONE_NEW" in f]
    assert len(runtime_clones) == 1, text
    flags, child = runtime_clones[0]
    assert {"CLONE_NEWUSER", "CLONE_NEWNS", "CLONE_NEWPID", "CLONE_NEWNET"} <= \
        set(flags.split("|")), flags
    assert re.findall(rf"^{child} +unshare\(([A-Z_|]+)\)", text, re.M) == \
        ["CLONE_NEWCGROUP"], text
    parent = int(text.split(None, 1)[0])
    assert re.search(rf'^{parent} +openat\(AT_FDCWD, "/proc/{child}/uid_map", O_WRONLY',
                     text, re.M), text
    execs = {int(pid) for pid in re.findall(r"^(\d+) +execve\(", text, re.M)}
    assert execs == {parent, child}, text  # flatrun itself, then the init: no stage one
    lines = [line.split(":", 2) for line in cgroups.splitlines()]
    assert lines and all(path.endswith(f"/{cid}") for _n, _c, path in lines), cgroups
    flatrun("delete", cid)
    assert cgroup_dirs(cid) == []


def test_a_time_namespace_keeps_stage_one(flatrun: Flatrun, make_bundle: Bundles,
                                         tmp_path: Path) -> None:
    """Clock offsets are written between unshare(CLONE_NEWTIME) and the first process
    born in it: stage one unshares and forks the init."""
    def edit(config: dict) -> None:
        config["linux"]["namespaces"].append({"type": "time"})
        config["linux"]["timeOffsets"] = {"monotonic": {"secs": 86400, "nanosecs": 0}}

    bundle = make_bundle(["true"], edit=edit)
    cid = flatrun.new_id()
    text, _ = _traced_create(flatrun, bundle, cid, tmp_path, "clone,clone3,unshare,execve")
    placed = [(flags, pid) for flags, pid in _clones(text) if "CLONE_INTO_CGROUP" in flags]
    assert len(placed) == 1 and "CLONE_NEWPID" not in placed[0][0], text
    stage_one = placed[0][1]
    assert re.search(rf"^{stage_one} +unshare\([A-Z_|]*CLONE_NEWPID", text, re.M), text
    assert not re.search(rf"^{stage_one} +execve\(", text, re.M), text
    flatrun("delete", cid)


def test_joined_network_namespace_is_entered_around_the_clone(
        flatrun: Flatrun, make_bundle: Bundles, tmp_path: Path) -> None:
    """Joining a network namespace by path (CNI's, a pod sandbox's) with a new user
    namespace: the runtime steps into the network namespace, clones the init there and
    steps back; the init itself never calls setns and there is no stage one."""
    with namespace_holder("net") as target:
        def edit(config: dict) -> None:
            _userns(config)
            spaces = [n for n in config["linux"]["namespaces"] if n["type"] != "network"]
            config["linux"]["namespaces"] = [*spaces, {"type": "network", "path": target}]

        bundle = make_bundle(["readlink", "/proc/self/ns/net"], edit=edit)
        cid = flatrun.new_id()
        text, _ = _traced_create(flatrun, bundle, cid, tmp_path, "clone,clone3,setns,execve")
        assert (tmp_path / "create.out").read_text().split() == [os.readlink(target)]
        parent = int(text.split(None, 1)[0])
        runtime_clones = [(f, pid) for f, pid in _clones(text) if "CLONE_NEW" in f]
        assert len(runtime_clones) == 1, text
        flags, init = runtime_clones[0]
        assert "CLONE_NEWUSER" in flags and "CLONE_NEWNET" not in flags, text
        # in and back out again, both by the runtime; none by the init
        assert len(re.findall(rf"^{parent} +setns\(\d+, CLONE_NEWNET\) += 0", text, re.M)) == 2
        assert not re.search(rf"^{init} +setns\(", text, re.M), text
        assert re.search(rf"^{init} +execve\(", text, re.M), text
        flatrun("delete", cid)
