"""Generic escapes, attempted from inside a flatrun container with the hardened
default spec: mounts, kernel modules, raw sockets, ptrace and host pids,
/proc write paths, /proc/1/root, the keyring, regaining capabilities, and fork
and memory bombs.  Each checks the errno or message that stops the attack
and that the host is unaffected.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from flatstack.kernel.caps import CAPABILITIES
from flatstack.oci.defaults import (
    DEFAULT_CAPABILITIES,
    MASKED_PATHS,
    MEMORY_LIMIT,
    PIDS_LIMIT,
)
from tests.conftest import Bundles, Flatrun, cgroup_dirs
from tests.security._harness import (
    BUSYBOX_EPERM_MOUNT,
    EPERM_MSG,
    EROFS_MSG,
    PROBE,
    attack,
    probe_dir,  # noqa: F401 - a fixture
    set_caps,
    status_fields,
)

MiB = 1 << 20
BOTH = pytest.mark.parametrize("variant", ["default", "userns"])


def no_seccomp(config: dict[str, Any]) -> None:
    del config["linux"]["seccomp"]


def cap_mask(names: tuple[str, ...] | list[str]) -> int:
    return sum(1 << CAPABILITIES[name] for name in names)


@BOTH
def test_default_container_is_confined(flatrun: Flatrun, make_bundle: Bundles,
                                       variant: str) -> None:
    """From inside: seccomp filter mode 2, no_new_privs, the default capability
    set (at most 14) in effective/permitted/bounding, none inheritable or
    ambient, the pids and memory limits, and with ``userns`` a uid/gid map
    that sends container root to an unprivileged host id."""
    script = (
        "cat /proc/self/status; echo ---\n"
        "cat /proc/self/uid_map /proc/self/gid_map; echo ---\n"
        "cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/memory/memory.limit_in_bytes\n"
        "cat /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes 2>/dev/null || echo no-memsw\n"
    )
    result = attack(flatrun, make_bundle, script, variant=variant)
    assert result.rc == 0, result.out
    status_text, maps, limits = result.out.split("---")
    status = status_fields(status_text)
    assert status["Seccomp"] == "2" and status["NoNewPrivs"] == "1"
    default = cap_mask(DEFAULT_CAPABILITIES)
    for key in ("CapEff", "CapPrm", "CapBnd"):
        assert int(status[key], 16) == default, (key, status[key])
    assert bin(default).count("1") <= 14
    assert int(status["CapInh"], 16) == 0 and int(status["CapAmb"], 16) == 0
    lines = [line.split() for line in maps.splitlines() if line.strip()]
    assert len(lines) == 2
    for inside, outside, size in lines:
        if variant == "userns":
            assert inside == "0" and int(outside) > 0 and 0 < int(size) <= 65536
        else:
            assert (inside, outside, size) == ("0", "0", "4294967295")
    pids_max, memory, memsw = limits.split()
    assert int(pids_max) == PIDS_LIMIT
    assert int(memory) == MEMORY_LIMIT
    assert memsw in (str(MEMORY_LIMIT), "no-memsw")  # no swap beyond the memory limit


@pytest.mark.parametrize("variant", ["default", "userns", "no-seccomp"])
def test_mount_fails(flatrun: Flatrun, make_bundle: Bundles, probe_dir: str,  # noqa: F811
                     variant: str) -> None:
    """mount(2) fails with EPERM: seccomp refuses it, and without the filter the
    container still lacks CAP_SYS_ADMIN (the "no-seccomp" case)."""
    script = (
        "mount -t tmpfs none /tmp; echo tmpfs_rc=$?\n"
        "mount -o remount,rw /; echo remount_rc=$?\n"
        "mount --bind /proc /tmp; echo bind_rc=$?\n"
        f"{PROBE} mount_tmpfs:/tmp mount_tmpfs:/dev\n"
        "grep -c ' /tmp ' /proc/self/mounts\n"
    )
    edit = no_seccomp if variant == "no-seccomp" else None
    result = attack(flatrun, make_bundle, script, probe=probe_dir,
                    variant="default" if variant == "no-seccomp" else variant, edit=edit)
    assert result.out.count(f"mount: {BUSYBOX_EPERM_MOUNT}") == 3, result.out
    for step in ("tmpfs", "remount", "bind"):
        assert f"{step}_rc=1" in result.out
    assert result.probe() == {"mount_tmpfs:/tmp": "EPERM", "mount_tmpfs:/dev": "EPERM"}
    assert result.out.rstrip().endswith("0")  # nothing got mounted on /tmp


@BOTH
def test_module_loading_fails(flatrun: Flatrun, make_bundle: Bundles, probe_dir: str,  # noqa: F811
                              variant: str) -> None:
    """insmod, init_module, finit_module and delete_module fail with EPERM from
    the seccomp filter (the container has no CAP_SYS_MODULE either)."""
    script = f"insmod /bin/busybox; echo insmod_rc=$?\n{PROBE} init_module finit_module " \
             "delete_module:loop\n"
    result = attack(flatrun, make_bundle, script, variant=variant, probe=probe_dir)
    assert f"insmod: can't insert '/bin/busybox': {EPERM_MSG}" in result.out, result.out
    assert "insmod_rc=1" in result.out
    assert result.probe() == {"init_module": "EPERM", "finit_module": "EPERM",
                              "delete_module:loop": "EPERM"}


@pytest.mark.parametrize(("variant", "net_raw"), [
    ("default", False), ("userns", False), ("default", True)],
    ids=["default", "userns", "with-net-raw"])
def test_raw_sockets_need_cap_net_raw(flatrun: Flatrun, make_bundle: Bundles,
                                      probe_dir: str, variant: str,  # noqa: F811
                                      net_raw: bool) -> None:
    """The default drops CAP_NET_RAW (as podman >= 4.4 does; Docker keeps it):
    raw ICMP and AF_PACKET sockets fail with EPERM and busybox ping gives up.
    Adding the capability back ("with-net-raw") makes both sockets open: the
    capability, not seccomp, is what refuses them."""

    def edit(config: dict[str, Any]) -> None:
        if net_raw:
            set_caps(config, [*DEFAULT_CAPABILITIES, "CAP_NET_RAW"])

    script = f"{PROBE} raw_icmp packet\nping -c 1 -W 1 127.0.0.1; echo ping_rc=$?\n"
    result = attack(flatrun, make_bundle, script, variant=variant, probe=probe_dir, edit=edit)
    expected = "OK" if net_raw else "EPERM"
    assert result.probe() == {"raw_icmp": expected, "packet": expected}, result.out
    if net_raw:  # the raw socket works: ping over the namespace's own lo succeeds
        assert "ping_rc=0" in result.out and "1 packets received" in result.out, result.out
    else:
        assert "ping_rc=1" in result.out
        assert f"ping: {BUSYBOX_EPERM_MOUNT}" in result.out, result.out


@pytest.mark.parametrize("variant", ["default", "userns", "no-seccomp"])
def test_host_processes_invisible_and_ptrace_blocked(flatrun: Flatrun, make_bundle: Bundles,
                                                     probe_dir: str,  # noqa: F811
                                                     variant: str) -> None:
    """Host processes do not exist in the container's pid namespace (kill(pid, 0)
    gives ESRCH for the test runner's pid) and ptrace fails with EPERM from
    seccomp; without the filter, attaching to the host pid gives ESRCH."""
    host_pid = os.getpid()
    # Without the filter, attaching to the container's own init would work (and
    # leave it stopped): only the seccomp variants try it.
    own = "" if variant == "no-seccomp" else "ptrace:1"
    script = (f"{PROBE} kill0:{host_pid} ptrace:{host_pid} {own}\n"
              "echo ---; ls /proc | grep -E '^[0-9]+$'\n")
    edit = no_seccomp if variant == "no-seccomp" else None
    result = attack(flatrun, make_bundle, script, probe=probe_dir, edit=edit,
                    variant="default" if variant == "no-seccomp" else variant)
    assert result.rc == 0, result.out
    probe = result.probe()
    assert probe[f"kill0:{host_pid}"] == "ESRCH", result.out
    if variant == "no-seccomp":
        assert probe[f"ptrace:{host_pid}"] == "ESRCH"
    else:
        assert probe[f"ptrace:{host_pid}"] == "EPERM" and probe["ptrace:1"] == "EPERM"
    pids = [int(p) for p in result.out.split("---")[1].split()]
    assert 1 in pids and host_pid not in pids and len(pids) < 10, pids


@pytest.mark.parametrize("path", ["/proc/sysrq-trigger", "/proc/sys/kernel/core_pattern",
                                  "/proc/sys/kernel/modprobe", "/proc/sys/vm/drop_caches"])
def test_proc_write_paths_are_read_only(flatrun: Flatrun, make_bundle: Bundles,
                                        path: str) -> None:
    """/proc/sysrq-trigger and /proc/sys (core_pattern and modprobe run a host
    program as root) are read-only: opening them for writing fails with EROFS.
    The attack only opens (``true >``) so nothing is written even if it succeeded.
    A kernel built without the file (no magic SysRq, no module support) must not
    let the container create it either: procfs refuses with ENOENT."""
    exists = os.path.exists(path)
    before = Path(path).read_bytes() if exists and os.access(path, os.R_OK) \
        and "sysrq" not in path else b""
    result = attack(flatrun, make_bundle, f"true > {path}; echo rc=$?")
    reason = EROFS_MSG if exists else "nonexistent directory"  # busybox for ENOENT
    assert f"can't create {path}: {reason}" in result.out, result.out
    assert "rc=1" in result.out
    if before:
        assert Path(path).read_bytes() == before


def test_masked_paths_read_empty(flatrun: Flatrun, make_bundle: Bundles) -> None:
    """Every masked path this host has is empty inside: files (/proc/keys,
    /proc/kcore, /proc/timer_list...) read 0 bytes, directories (/sys/firmware,
    /proc/acpi...) list nothing."""
    files = [p for p in MASKED_PATHS if os.path.isfile(p)]
    dirs = [p for p in MASKED_PATHS if os.path.isdir(p)]
    assert "/proc/keys" in files and "/sys/firmware" in dirs  # present on any kernel here
    script = "".join(f"echo \"{f} $(wc -c < {f})\"\n" for f in files)
    script += "".join(f"echo \"{d} $(ls -A {d} | wc -l)\"\n" for d in dirs)
    result = attack(flatrun, make_bundle, script)
    assert result.rc == 0, result.out
    counts = dict(line.split() for line in result.out.splitlines())
    assert counts == {p: "0" for p in files + dirs}, result.out


@BOTH
def test_proc_1_root_is_the_containers_root(flatrun: Flatrun, make_bundle: Bundles,
                                            tmp_path: Path, variant: str) -> None:
    """/proc/1/root (and climbing above it with ..) leads to the container's own
    root: a file on the host is not reachable through it."""
    marker = tmp_path / f"host-marker-{uuid.uuid4().hex[:8]}"
    marker.write_text("host secret\n")
    script = (
        "readlink /proc/1/root; cat /proc/1/root/etc/hostname\n"
        f"cat /proc/1/root{marker}; cat /proc/1/root/../../..{marker}\n"
        "echo ---; ls /proc/1/root/../../..; echo ---; ls /\n"
    )
    result = attack(flatrun, make_bundle, script, variant=variant)
    head, above, root = result.out.split("---")
    lines = head.splitlines()
    assert lines[:2] == ["/", "flatstack"], result.out  # the busybox rootfs's /etc/hostname
    assert "host secret" not in result.out
    assert head.count(f"{marker}': No such file or directory") == 2, head
    assert above.split() == root.split() and "bin" in root.split()


@BOTH
def test_keyring_syscalls_blocked(flatrun: Flatrun, make_bundle: Bundles, probe_dir: str,  # noqa: F811
                                  variant: str) -> None:
    """keyctl, add_key and request_key fail with EPERM from seccomp (the kernel
    keyring is not namespaced); /proc/keys is masked."""
    result = attack(flatrun, make_bundle, f"{PROBE} keyctl add_key request_key\n"
                    "wc -c < /proc/keys", variant=variant, probe=probe_dir)
    assert result.probe() == {"keyctl": "EPERM", "add_key": "EPERM",
                              "request_key": "EPERM"}, result.out
    assert result.out.split()[-1] == "0"


@BOTH
def test_regaining_capabilities_fails(flatrun: Flatrun, make_bundle: Bundles,
                                      probe_dir: str, variant: str) -> None:  # noqa: F811
    """A new user namespace would hand back every capability: unshare -U fails
    with EPERM (seccomp), and capset/ambient raising CAP_SYS_ADMIN fails with
    EPERM (it is not in the bounding or permitted set)."""
    script = (
        "unshare -U true; unshare -r true; echo unshare_rc=$?\n"
        "setpriv --inh-caps +sys_admin true; echo setpriv_rc=$?\n"
        "nsenter -t 1 -U true; echo nsenter_rc=$?\n"
        f"{PROBE} unshare_user capset_sys_admin ambient_sys_admin\n"
        "grep CapEff /proc/self/status\n"
    )
    result = attack(flatrun, make_bundle, script, variant=variant, probe=probe_dir)
    assert f"unshare: unshare(0x10000000): {EPERM_MSG}" in result.out, result.out
    assert result.out.count("unshare(0x10000000)") == 2 and "unshare_rc=1" in result.out
    assert f"setpriv: capset: {EPERM_MSG}" in result.out and "setpriv_rc=1" in result.out
    assert "nsenter_rc=1" in result.out
    assert result.probe() == {"unshare_user": "EPERM", "capset_sys_admin": "EPERM",
                              "ambient_sys_admin": "EPERM"}
    assert int(result.out.split()[-1], 16) == cap_mask(DEFAULT_CAPABILITIES)


# -- resource bombs ------------------------------------------------------------------------

def _create_and_start(flatrun: Flatrun, bundle: str, log: Path) -> str:
    cid = flatrun.new_id()
    with open(log, "w") as out:
        subprocess.run([flatrun.binary, "--root", flatrun.root, "create", "--bundle", bundle,
                        cid], stdout=out, stderr=out, check=True, timeout=30)
    flatrun("start", cid)
    return cid


def _wait(predicate: Any, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _pids_dir(cid: str) -> Path:
    """The container's cgroup directory holding the pids controller (v1 or v2)."""
    found = [Path(d) for d in cgroup_dirs(cid) if Path(d, "pids.current").exists()]
    assert len(found) == 1, cgroup_dirs(cid)
    return found[0]


def test_fork_bomb_stays_inside(flatrun: Flatrun, make_bundle: Bundles, tmp_path: Path) -> None:
    """A fork bomb hits the pids limit: fork fails with EAGAIN inside (busybox:
    "can't fork: Resource temporarily unavailable") while the host still forks."""
    limit = 64

    def edit(config: dict[str, Any]) -> None:
        config["linux"]["resources"]["pids"] = {"limit": limit}

    # Bounded (200 > limit), so a broken limit fails the test instead of the host.
    script = ("(i=0; while [ $i -lt 200 ]; do sleep 60 & i=$((i+1)); done) 2>&1\n"
              "read cur < /sys/fs/cgroup/pids/pids.current\n"
              "echo \"bombed current=$cur\"\nexec sleep 60\n")
    bundle = make_bundle(["sh", "-c", script], edit=edit)
    log = tmp_path / "bomb.log"
    cid = _create_and_start(flatrun, bundle, log)
    assert _wait(lambda: "bombed" in log.read_text()), log.read_text()
    out = log.read_text()
    assert "sh: can't fork: Resource temporarily unavailable" in out, out
    pids_dir = _pids_dir(cid)
    assert int((pids_dir / "pids.current").read_text()) <= limit
    assert _keyed(pids_dir / "pids.events")["max"] > 0  # forks refused at the limit
    # The host is unaffected: it still forks and the container's pids stay capped.
    assert subprocess.run(["true"], check=False).returncode == 0
    assert 2 <= len(json.loads(flatrun("ps", "--format", "json", cid).stdout)) <= limit
    flatrun("delete", "--force", cid)
    assert cgroup_dirs(cid) == []


def _keyed(path: Path) -> dict[str, int]:
    return {k: int(v) for k, v in (row.split() for row in path.read_text().splitlines())}


def _oom_kills_and_peak(cid: str) -> tuple[int, int]:
    """OOM kills and peak usage of the container's memory cgroup (v1 or v2)."""
    v1 = [Path(d) for d in cgroup_dirs(cid) if "/memory/" in d]
    if v1:
        return (_keyed(v1[0] / "memory.oom_control")["oom_kill"],
                int((v1[0] / "memory.max_usage_in_bytes").read_text()))
    v2 = next(Path(d) for d in cgroup_dirs(cid) if Path(d, "memory.events").exists())
    return _keyed(v2 / "memory.events")["oom_kill"], int((v2 / "memory.peak").read_text())


def _own_oom_kills() -> int:
    """oom_kill of this test process's own memory cgroup (v1 or pure v2)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return _keyed(Path(f"/sys/fs/cgroup/memory{path}/memory.oom_control"))["oom_kill"]
        events = Path(f"/sys/fs/cgroup{path}/memory.events")
        if not controllers and events.exists():
            return _keyed(events)["oom_kill"]
    raise AssertionError("no memory cgroup for this process")


def test_memory_bomb_stays_inside(flatrun: Flatrun, make_bundle: Bundles,
                                  tmp_path: Path) -> None:
    """A memory bomb (dd with a 64 MiB buffer) under a 32 MiB limit is OOM-killed
    inside its cgroup: the container stops (``run`` exits 137), the cgroup
    counts the kill, and the host's own cgroup sees none."""
    limit = 32 * MiB

    def edit(config: dict[str, Any]) -> None:
        config["linux"]["resources"]["memory"] = {"limit": limit, "swap": limit}

    host_kills = _own_oom_kills()
    bomb = ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]
    bundle = make_bundle(bomb, edit=edit)
    result = flatrun("run", "--bundle", bundle, flatrun.new_id(), check=False)
    assert result.returncode == 128 + 9, result.stderr

    cid = _create_and_start(flatrun, make_bundle(bomb, edit=edit), tmp_path / "bomb.log")
    assert _wait(lambda: flatrun.state(cid)["status"] == "stopped"), flatrun.state(cid)
    kills, peak = _oom_kills_and_peak(cid)
    assert kills >= 1 and 0 < peak <= limit
    flatrun("delete", cid)
    assert _own_oom_kills() == host_kills
    assert len(bytearray(64 * MiB)) == 64 * MiB  # the host allocates freely
