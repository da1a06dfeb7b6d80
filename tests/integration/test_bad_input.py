"""Malformed bundles and wrong ids: a clear error naming the field, and no leftovers."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Bundles, Flatrun, cgroup_dirs


def assert_no_leftovers(flatrun: Flatrun, cid: str) -> None:
    assert not (Path(flatrun.root) / cid).exists(), "state directory left behind"
    assert cgroup_dirs(cid) == [], "cgroup left behind"
    leftover = [p for p in Path("/proc").iterdir() if p.name.isdigit()
                and _environ_mentions(p, cid)]
    assert leftover == [], "process left behind"


def _environ_mentions(proc: Path, cid: str) -> bool:
    try:
        return cid.encode() in (proc / "cmdline").read_bytes()
    except OSError:
        return False


def _set(path: str, value: Any):
    def edit(config: dict[str, Any]) -> None:
        node = config
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
        last = keys[-1]
        if value is _DELETE:
            del node[last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return edit


_DELETE = object()


def _joined_own(kind: str, link: str):
    def edit(config: dict[str, Any]) -> None:
        spaces = [n for n in config["linux"]["namespaces"] if n["type"] != kind]
        config["linux"]["namespaces"] = [*spaces, {"type": kind, "path": f"/proc/self/ns/{link}"}]
    return edit

CASES = [
    ("process.args", _set("process.args", "sh"), "process.args"),
    ("ociVersion", _set("ociVersion", _DELETE), "ociVersion"),
    ("namespace type", _set("linux.namespaces.0.type", "bogus"), "linux.namespaces[0].type"),
    ("mount destination", _set("mounts.0.destination", 5), "mounts[0].destination"),
    ("rlimit type", _set("process.rlimits", [{"type": "RLIMIT_NOPE", "hard": 1, "soft": 1}]),
     "process.rlimits[0].type"),
    ("capability", _set("process.capabilities.bounding", ["CAP_NOPE"]),
     "process.capabilities.bounding"),
    ("uid mapping without userns",
     _set("linux.uidMappings", [{"containerID": 0, "hostID": 1000, "size": 1}]),
     "linux.uidMappings"),
    ("host sysctl", _set("linux.sysctl", {"vm.swappiness": "10"}), "linux.sysctl.vm.swappiness"),
    # The runtime's own network/ipc namespace given by path: the sysctl would be the host's.
    ("sysctl in the host netns", lambda config: (
        _joined_own("network", "net")(config),
        _set("linux.sysctl", {"net.ipv4.ip_forward": "0"})(config)),
     "linux.sysctl.net.ipv4.ip_forward: not allowed in the host network namespace"),
    ("sysctl in the host ipc ns", lambda config: (
        _joined_own("ipc", "ipc")(config), _set("linux.sysctl", {"kernel.shmmax": "4096"})(config)),
     "linux.sysctl.kernel.shmmax: not allowed in the host ipc namespace"),
]


@pytest.mark.parametrize(("name", "edit", "field"), CASES, ids=[c[0] for c in CASES])
def test_malformed_config_names_the_field(flatrun: Flatrun, make_bundle: Bundles, name: str,
                                          edit: Any, field: str) -> None:
    bundle = make_bundle(["true"], edit=edit)
    cid = flatrun.new_id()
    result = flatrun("create", "-b", bundle, cid, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("flatrun: ")
    assert field in result.stderr, result.stderr
    assert_no_leftovers(flatrun, cid)


def test_invalid_json(flatrun: Flatrun, make_bundle: Bundles) -> None:
    bundle = make_bundle(["true"])
    Path(bundle, "config.json").write_text('{"ociVersion": "1.2.0",\n  "process": }')
    cid = flatrun.new_id()
    result = flatrun("create", "-b", bundle, cid, check=False)
    assert result.returncode == 1
    assert "config.json" in result.stderr and "line 2" in result.stderr
    assert_no_leftovers(flatrun, cid)


def test_missing_rootfs(flatrun: Flatrun, make_bundle: Bundles, tmp_path: Path) -> None:
    bundle = make_bundle(["true"], edit=_set("root.path", str(tmp_path / "nope")))
    cid = flatrun.new_id()
    result = flatrun("create", "-b", bundle, cid, check=False)
    assert result.returncode == 1 and "root.path" in result.stderr
    assert_no_leftovers(flatrun, cid)


def test_missing_executable_fails_create(flatrun: Flatrun, make_bundle: Bundles) -> None:
    bundle = make_bundle(["/no/such/binary"])
    cid = flatrun.new_id()
    result = flatrun("create", "-b", bundle, cid, check=False)
    assert result.returncode == 1
    assert "process.args[0]" in result.stderr and "/no/such/binary" in result.stderr
    assert_no_leftovers(flatrun, cid)


def test_bad_mount_source_cleans_up(flatrun: Flatrun, make_bundle: Bundles) -> None:
    def edit(config: dict[str, Any]) -> None:
        config["mounts"].append({"destination": "/data", "type": "bind",
                                 "source": "/no/such/dir", "options": ["rbind"]})

    bundle = make_bundle(["true"], edit=edit)
    cid = flatrun.new_id()
    result = flatrun("create", "-b", bundle, cid, check=False)
    assert result.returncode == 1
    index = len(json.loads(Path(bundle, "config.json").read_text())["mounts"]) - 1
    assert f"mounts[{index}].source" in result.stderr, result.stderr
    assert_no_leftovers(flatrun, cid)


@pytest.mark.parametrize(("kind", "path", "why"), [
    ("network", "/no/such/netns", "no such file or directory"),
    ("network", "/proc/self/ns/uts", "invalid argument"),
    ("mount", "/no/such/mntns", "no such file or directory"),
    ("user", "/proc/self/ns/user", "it is the runtime's own user namespace")])
def test_bad_namespace_path_cleans_up(flatrun: Flatrun, make_bundle: Bundles, kind: str,
                                      path: str, why: str) -> None:
    """A namespace to join that is missing or of another type, whether the runtime enters
    it around the clone (network) or stage one joins it (mount): the same message."""
    def edit(config: dict[str, Any]) -> None:
        spaces = [n for n in config["linux"]["namespaces"] if n["type"] != kind]
        config["linux"]["namespaces"] = [*spaces, {"type": kind, "path": path}]

    cid = flatrun.new_id()
    result = flatrun("create", "-b", make_bundle(["true"], edit=edit), cid, check=False)
    assert result.returncode == 1
    assert f"linux.namespaces: joining {path}: {why}" in result.stderr, result.stderr
    assert_no_leftovers(flatrun, cid)


def test_duplicate_id(flatrun: Flatrun, make_bundle: Bundles) -> None:
    cid = flatrun.new_id()
    flatrun("create", "-b", make_bundle(["true"]), cid)
    result = flatrun("create", "-b", make_bundle(["true"]), cid, check=False)
    assert result.returncode == 1
    assert f"container {cid!r} already exists" in result.stderr
    assert flatrun.state(cid)["status"] == "created"  # the first one is untouched


@pytest.mark.parametrize("verb", ["start", "state", "kill", "delete", "pause", "exec"])
def test_unknown_id(flatrun: Flatrun, verb: str) -> None:
    args = [verb, "nosuchcontainer"] + (["true"] if verb == "exec" else [])
    result = flatrun(*args, check=False)
    assert result.returncode == 1
    assert "container 'nosuchcontainer' does not exist" in result.stderr


@pytest.mark.parametrize("bad", ["../escape", "a/b", "", "with space"])
def test_invalid_id(flatrun: Flatrun, make_bundle: Bundles, bad: str) -> None:
    result = flatrun("create", "-b", make_bundle(["true"]), bad, check=False)
    assert result.returncode == 1
    assert "container id" in result.stderr
    assert not any(Path(flatrun.root).glob("*")) if Path(flatrun.root).exists() else True


def test_unknown_flag_and_command(flatrun: Flatrun) -> None:
    result = flatrun("create", "--bogus", "x", check=False)
    assert result.returncode == 1 and "flag provided but not defined: --bogus" in result.stderr
    result = flatrun("frobnicate", check=False)
    assert result.returncode == 1 and "no such command 'frobnicate'" in result.stderr


def test_json_log_on_error(flatrun: Flatrun, tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    result = flatrun("--log", str(log), "--log-format", "json", "state", "ghost", check=False)
    assert result.returncode == 1
    line = json.loads(log.read_text().splitlines()[-1])
    assert line["level"] == "error"
    assert "does not exist" in line["msg"]
    assert os.path.getsize(log) > 0


def test_cgroup_that_already_holds_processes_is_refused(flatrun: Flatrun,
                                                        make_bundle: Bundles) -> None:
    """linux.cgroupsPath naming a cgroup with processes in it: refused before anything
    is written, and nothing in it is killed.  (A hierarchy's root, where "/" leads,
    always has processes and takes the same path; it is not tried here, since a
    regression there would kill every process on the machine.)"""
    name = f"flatrun-busy-{os.getpid()}"
    holder = Path("/sys/fs/cgroup/pids") / name
    holder.mkdir()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (holder / "cgroup.procs").write_text(str(sleeper.pid))
        bundle = make_bundle(["true"], edit=_set("linux.cgroupsPath", f"/{name}"))
        cid = flatrun.new_id()
        result = flatrun("create", "-b", bundle, cid, check=False)
        assert result.returncode == 1
        assert f"linux.cgroupsPath: {holder} already has 1 process" in result.stderr
        assert "a container needs its own cgroup" in result.stderr
        assert sleeper.poll() is None, "a process of the existing cgroup was killed"
        assert_no_leftovers(flatrun, cid)
        assert cgroup_dirs(name) == [str(holder)]  # none made in other hierarchies
    finally:
        sleeper.kill()
        sleeper.wait()
        holder.rmdir()
