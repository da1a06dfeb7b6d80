"""Cgroup and capability escapes, performed from inside a flatrun container.

CVE-2022-0492 (cgroup v1 release_agent), CVE-2022-27650 (inheritable
capabilities) and CVE-2023-25809 (writable cgroupfs).  Each test runs the
attack against the hardened ``default_spec()`` and checks the errno or
message that stops it, then that the host is unchanged.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from flatstack.kernel.caps import CAPABILITIES
from flatstack.oci.defaults import DEFAULT_CAPABILITIES, PIDS_LIMIT
from tests.conftest import Bundles, Flatrun
from tests.security._harness import (
    EPERM_MSG,
    EROFS_MSG,
    PROBE,
    attack,
    probe_dir,  # noqa: F401 - a fixture
    status_fields,
)

CGROUP_ROOT = Path("/sys/fs/cgroup")
ESCAPE_DIR = "flatstack-escape"


def release_agents() -> dict[str, str]:
    """Every v1 hierarchy's release_agent on the host, by path."""
    return {str(p): p.read_text() for p in CGROUP_ROOT.glob("*/release_agent")}


def cap_mask(names: list[str] | tuple[str, ...]) -> int:
    return sum(1 << CAPABILITIES[name] for name in names)


# -- CVE-2022-0492: release_agent of a cgroup v1 hierarchy mounted after unshare ----------

@pytest.mark.parametrize("variant", ["default", "userns"])
def test_cve_2022_0492_unshare_then_release_agent(flatrun: Flatrun, make_bundle: Bundles,
                                                  probe_dir: str, variant: str) -> None:  # noqa: F811
    """CVE-2022-0492: ``unshare -UrmC``, mount cgroup v1, write release_agent.

    The first step already fails: seccomp refuses ``unshare`` of a user
    namespace (EPERM; creating one needs no capability, so the EPERM is the
    filter's), and without that namespace there is no CAP_SYS_ADMIN to mount
    a hierarchy.  The existing cgroupfs is read-only and rooted at the
    container's own cgroup, where no release_agent exists.  (Busybox's
    unshare has no -C; the probe adds CLONE_NEWCGROUP.)
    """
    before = release_agents()
    script = (
        "unshare -Urm sh -c 'echo ESCAPED' 2>&1; echo unshare_rc=$?\n"
        "mount -t cgroup -o memory cgroup /tmp 2>&1; echo mount_rc=$?\n"
        "echo /tmp/pwn > /sys/fs/cgroup/memory/release_agent 2>&1; echo agent_rc=$?\n"
        f"{PROBE} unshare_umc mount_cgroup:memory\n"
    )
    result = attack(flatrun, make_bundle, script, variant=variant, probe=probe_dir)
    assert result.rc == 0, result.out
    assert "ESCAPED" not in result.out
    # CLONE_NEWUSER|CLONE_NEWNS = 0x10020000, refused by the filter.
    assert f"unshare: unshare(0x10020000): {EPERM_MSG}" in result.out, result.out
    assert "unshare_rc=1" in result.out and "mount_rc=1" in result.out
    assert "mount: permission denied (are you root?)" in result.out
    assert f"/sys/fs/cgroup/memory/release_agent: {EROFS_MSG}" in result.out
    assert result.probe() == {"unshare_umc": "EPERM", "mount_cgroup:memory": "EPERM"}
    assert release_agents() == before


def test_cve_2022_0492_second_layer_without_seccomp(flatrun: Flatrun, make_bundle: Bundles,
                                                    probe_dir: str) -> None:  # noqa: F811
    """CVE-2022-0492 with the seccomp profile removed: the cgroup namespace holds.

    The attacker now gets a user + mount + cgroup namespace with full
    capabilities, but the kernel refuses to create a new v1 hierarchy from a
    non-initial cgroup namespace (EPERM), and mounting an existing one shows
    only the container's own cgroup, which has no release_agent (ENOENT).
    """
    before = release_agents()

    def no_seccomp(config: dict) -> None:
        del config["linux"]["seccomp"]

    script = (f"{PROBE} unshare_umc map_root mount_cgroup:none,name={ESCAPE_DIR} "
              "mount_cgroup:memory write:/tmp/release_agent")
    result = attack(flatrun, make_bundle, script, probe=probe_dir, edit=no_seccomp)
    assert result.rc == 0, result.out
    assert result.probe() == {
        "unshare_umc": "OK", "map_root": "OK",
        f"mount_cgroup:none,name={ESCAPE_DIR}": "EPERM",
        "mount_cgroup:memory": "OK", "write:/tmp/release_agent": "ENOENT",
    }, result.out
    assert release_agents() == before


# -- CVE-2022-27650: capabilities through the inheritable set ------------------------------

@pytest.mark.parametrize("variant", ["default", "userns"])
def test_cve_2022_27650_no_inheritable_or_ambient(flatrun: Flatrun, make_bundle: Bundles,
                                                  variant: str) -> None:
    """CVE-2022-27650: a default container's inheritable and ambient sets are empty
    and its bounding set is the default list (at most Docker's 14)."""
    result = attack(flatrun, make_bundle, "cat /proc/self/status", variant=variant)
    assert result.rc == 0, result.out
    status = status_fields(result.out)
    assert int(status["CapInh"], 16) == 0 and int(status["CapAmb"], 16) == 0
    bounding = int(status["CapBnd"], 16)
    assert bounding == cap_mask(DEFAULT_CAPABILITIES)
    assert bin(bounding).count("1") <= 14
    assert not bounding & cap_mask(["CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_PTRACE",
                                    "CAP_NET_ADMIN", "CAP_DAC_READ_SEARCH", "CAP_NET_RAW"])


def _file_caps(permitted: list[str], inheritable: list[str], effective: bool) -> bytes:
    """A VFS_CAP_REVISION_2 ``security.capability`` value."""
    p, i = cap_mask(permitted), cap_mask(inheritable)
    return struct.pack("<5I", 0x02000000 | int(effective), p & 0xFFFFFFFF, i & 0xFFFFFFFF,
                       p >> 32, i >> 32)


@pytest.fixture
def privileged_binaries(tmp_path: Path, probe_dir: str) -> str:  # noqa: F811
    """The probe (which, unlike busybox, never drops privileges itself) as
    ``fcap`` and ``fcapeff`` with file capabilities (permitted SYS_ADMIN+NET_ADMIN,
    inheritable SYS_ADMIN+CHOWN; the second with the effective flag) and as
    ``suid``, setuid root."""
    top = tmp_path / "priv"
    top.mkdir(mode=0o755)
    os.chmod(top, 0o755)
    for name in ("fcap", "fcapeff", "suid"):
        shutil.copy2(f"{probe_dir}/escape_probe", top / name)
    for name, effective in (("fcap", False), ("fcapeff", True)):
        os.setxattr(top / name, "security.capability",
                    _file_caps(["CAP_SYS_ADMIN", "CAP_NET_ADMIN"], ["CAP_SYS_ADMIN", "CAP_CHOWN"],
                               effective))
    os.chmod(top / "suid", 0o4755)
    return str(top)


@pytest.mark.parametrize(("nnp", "inheritable", "fcap_permitted", "suid_permitted"), [
    # the default: no_new_privs ignores file capabilities and the setuid bit
    (True, [], [], []),
    # without no_new_privs: file caps are cut to the bounding set, whose
    # inheritable part meets an empty process set; setuid root gets the bounding set
    (False, [], [], list(DEFAULT_CAPABILITIES)),
    # the CVE-2022-27650 state (caps left inheritable): the same file now grants
    # CAP_CHOWN to a non-root user -- the witness that the test can fail
    (False, ["CAP_CHOWN"], ["CAP_CHOWN"], list(DEFAULT_CAPABILITIES)),
], ids=["default", "no-nnp", "inheritable-witness"])
def test_cve_2022_27650_file_caps_gain_nothing(
        flatrun: Flatrun, make_bundle: Bundles, privileged_binaries: str, nnp: bool,
        inheritable: list[str], fcap_permitted: list[str], suid_permitted: list[str]) -> None:
    """CVE-2022-27650: a non-root user executing a binary with file capabilities
    or a setuid-root binary gains nothing beyond the bounding set: the file's
    inheritable caps meet an empty process inheritable set, its permitted caps
    are cut to the bounding set, and a binary whose effective flag demands caps
    outside the bounding set is refused at exec (EPERM)."""

    def edit(config: dict) -> None:
        config["process"]["user"] = {"uid": 1000, "gid": 1000}
        config["process"]["noNewPrivileges"] = nnp
        config["process"]["capabilities"]["inheritable"] = list(inheritable)
        config["mounts"].append({"destination": "/home", "type": "bind",
                                 "source": privileged_binaries, "options": ["rbind", "ro"]})

    script = "/home/fcap status; echo ---; /home/suid status; echo ---; /home/fcapeff status"
    result = attack(flatrun, make_bundle, script, edit=edit)
    assert result.rc == 126, result.out  # the last exec is refused
    fcap_text, suid_text, fcapeff_text = result.out.split("---")
    fcap, suid = status_fields(fcap_text), status_fields(suid_text)
    assert fcap["Uid"].split()[:2] == ["1000", "1000"]
    assert int(fcap["CapPrm"], 16) == cap_mask(fcap_permitted), result.out
    assert int(fcap["CapEff"], 16) == 0  # no effective flag: permitted only
    assert int(fcap["CapBnd"], 16) == cap_mask(DEFAULT_CAPABILITIES)
    assert int(suid["CapPrm"], 16) == cap_mask(suid_permitted), result.out
    assert suid["Uid"].split()[1] == ("1000" if nnp else "0")  # effective uid
    assert fcapeff_text.strip() == f"sh: /home/fcapeff: {EPERM_MSG}"


# -- CVE-2023-25809: writable cgroupfs ----------------------------------------------------

def _escape_dirs() -> list[str]:
    return [str(p) for p in CGROUP_ROOT.glob(f"*/**/{ESCAPE_DIR}")]


@pytest.mark.parametrize("variant", ["default", "userns", "rootless"])
def test_cve_2023_25809_cgroupfs_read_only(flatrun: Flatrun, make_bundle: Bundles,
                                           variant: str) -> None:
    """CVE-2023-25809: /sys/fs/cgroup and every hierarchy under it are read-only
    (EROFS on mkdir, cgroup.procs, pids.max), also for the rootless spec whose
    /sys is a recursive bind of the host's; the cgroup namespace shows "/"."""
    script = (
        "cat /proc/self/cgroup; echo ---\n"
        "grep ' /sys/fs/cgroup' /proc/self/mounts; echo ---\n"
        f"mkdir /sys/fs/cgroup/pids/{ESCAPE_DIR} 2>&1\n"
        f"mkdir /sys/fs/cgroup/unified/{ESCAPE_DIR} 2>&1\n"
        "echo $$ > /sys/fs/cgroup/pids/cgroup.procs 2>&1\n"
        "echo $$ > /sys/fs/cgroup/memory/cgroup.procs 2>&1\n"
        "echo max > /sys/fs/cgroup/pids/pids.max 2>&1\n"
        "echo ---; cat /sys/fs/cgroup/pids/pids.max; true\n"
    )
    result = attack(flatrun, make_bundle, script, variant=variant)
    assert result.rc == 0, result.out
    cgroups, mounts, writes, pids_max = result.out.split("---")
    assert cgroups.split() and all(line.endswith(":/") for line in cgroups.split())
    hierarchies = [line.split() for line in mounts.splitlines() if line]
    assert len(hierarchies) >= 2, mounts
    for _, point, _, options, *_ in hierarchies:
        assert options.split(",")[0] == "ro", f"{point} is writable: {options}"
    for target in (f"pids/{ESCAPE_DIR}", f"unified/{ESCAPE_DIR}", "pids/cgroup.procs",
                   "memory/cgroup.procs", "pids/pids.max"):
        assert f"/sys/fs/cgroup/{target}': {EROFS_MSG}" in writes or \
            f"/sys/fs/cgroup/{target}: {EROFS_MSG}" in writes, writes
    if variant != "rootless":
        # The view is rooted at the container's own cgroup: flatrun's pids limit.
        assert pids_max.strip() == str(PIDS_LIMIT)
    assert _escape_dirs() == []
