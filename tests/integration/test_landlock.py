"""Landlock through the ``org.flatstack.landlock`` annotation, for real: each test
runs busybox in a container and attempts the access from inside."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cgroup_dirs

ANNOTATION = "org.flatstack.landlock"
FIELD = 'annotations["org.flatstack.landlock"]'



def kernel_abi() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc.syscall(ctypes.c_long(444), None, ctypes.c_size_t(0), ctypes.c_uint(1))


def landlocked(policy: str | None, **extra: Any) -> Any:
    def edit(config: dict[str, Any]) -> None:
        if policy is not None:
            config.setdefault("annotations", {})[ANNOTATION] = policy
        config["process"].update(extra)
    return edit


def run(flatrun: Any, bundle: str) -> subprocess.CompletedProcess[str]:
    return flatrun("run", "--bundle", bundle, flatrun.new_id(), check=False)


def assert_nothing_left(flatrun: Any, cid: str) -> None:
    assert not (Path(flatrun.root) / cid).exists()
    assert cgroup_dirs(cid) == []


WRITE_PROBE = ("touch /etc/x; echo etc=$?; touch /tmp/y && echo tmp-ok; "
               "cat /etc/passwd >/dev/null 2>&1; echo read-etc=$?")


def test_rw_only_on_tmp_denies_writes_elsewhere(flatrun: Any, make_bundle: Any) -> None:
    """ro=/bin:/usr;rw=/tmp: /etc can be neither written nor read (EACCES from
    Landlock, the rootfs itself is writable), /tmp can."""
    bundle = make_bundle(["sh", "-c", WRITE_PROBE], own_rootfs=True,
                         edit=landlocked("ro=/bin:/usr;rw=/tmp"))
    result = run(flatrun, bundle)
    assert result.returncode == 0, result.stderr
    assert "touch: /etc/x: Permission denied" in result.stderr
    assert "etc=1" in result.stdout and "tmp-ok" in result.stdout
    assert "read-etc=1" in result.stdout
    rootfs = Path(bundle) / "rootfs"
    assert not (rootfs / "etc" / "x").exists()
    assert (rootfs / "tmp" / "y").exists()


def test_without_annotation_nothing_changes(flatrun: Any, make_bundle: Any) -> None:
    """The same probe without the annotation writes /etc: the denial above is Landlock's."""
    bundle = make_bundle(["sh", "-c", WRITE_PROBE], own_rootfs=True, edit=landlocked(None))
    result = run(flatrun, bundle)
    assert result.returncode == 0, result.stderr
    assert "etc=0" in result.stdout and "read-etc=0" in result.stdout
    assert (Path(bundle) / "rootfs" / "etc" / "x").exists()


def test_default_policy(flatrun: Any, make_bundle: Any) -> None:
    """default: everything readable and executable, writes only to /tmp, /dev/shm,
    /dev/null and the like; /etc, /root and /proc/sys stay unwritable."""
    script = ("cat /etc/passwd >/dev/null && echo read-ok; echo x >/dev/null && echo null-ok; "
              "touch /tmp/a /dev/shm/b && echo tmp-ok; mkdir /root/d; echo root=$?; "
              "touch /etc/x; echo etc=$?; ls /proc/self/fd >/dev/null && echo ls-ok")
    bundle = make_bundle(["sh", "-c", script], own_rootfs=True, edit=landlocked("default"))
    result = run(flatrun, bundle)
    assert result.returncode == 0, result.stderr
    for word in ("read-ok", "null-ok", "tmp-ok", "ls-ok", "root=1", "etc=1"):
        assert word in result.stdout, (word, result.stdout, result.stderr)
    assert "mkdir: can't create directory '/root/d': Permission denied" in result.stderr
    assert "touch: /etc/x: Permission denied" in result.stderr


def test_exec_is_sandboxed_too(flatrun: Any, make_bundle: Any) -> None:
    """A process started by ``flatrun exec`` gets the container's policy: it must
    not be a way around it."""
    bundle = make_bundle(["sleep", "30"], own_rootfs=True, edit=landlocked("default"))
    cid = flatrun.new_id()
    flatrun("create", "--bundle", bundle, cid)
    flatrun("start", cid)
    result = flatrun("exec", cid, "sh", "-c", "touch /etc/x; echo etc=$?; touch /tmp/e && "
                     "echo tmp-ok", check=False)
    assert "touch: /etc/x: Permission denied" in result.stderr
    assert "etc=1" in result.stdout and "tmp-ok" in result.stdout
    assert not (Path(bundle) / "rootfs" / "etc" / "x").exists()


def test_tcp_bind_limited_to_listed_port(flatrun: Any, make_bundle: Any) -> None:
    """bind=8080 (ABI 4): binding 8081 is EACCES, 8080 listens."""
    assert kernel_abi() >= 4, "Landlock ABI < 4 has no TCP rules"
    script = ("nc -l -p 8081; echo bind8081=$?; nc -l -p 8080 & sleep 0.3; "
              "netstat -ltn | grep -q ':8080 ' && echo listening-8080; kill $!")
    bundle = make_bundle(["sh", "-c", script], edit=landlocked("default;bind=8080"))
    result = run(flatrun, bundle)
    assert "nc: bind: Permission denied" in result.stderr
    assert "bind8081=1" in result.stdout and "listening-8080" in result.stdout


def test_scope_signal_separates_exec_from_init(flatrun: Any, make_bundle: Any) -> None:
    """scope=signal (ABI 6): an exec'd process gets its own Landlock domain, so it may
    not signal the container's init (EPERM); without the scope it may."""
    assert kernel_abi() >= 6, "Landlock ABI < 6 has no scopes"
    outputs = {}
    for policy in ("default", "default;scope=signal"):
        bundle = make_bundle(["sleep", "30"], edit=landlocked(policy))
        cid = flatrun.new_id()
        flatrun("create", "--bundle", bundle, cid)
        flatrun("start", cid)
        outputs[policy] = flatrun("exec", cid, "sh", "-c", "kill -0 1; echo kill=$?",
                                  check=False)
    assert "kill=0" in outputs["default"].stdout
    assert "kill=1" in outputs["default;scope=signal"].stdout
    assert "Operation not permitted" in outputs["default;scope=signal"].stderr


@pytest.mark.parametrize(("policy", "reason"), [
    ("", "empty policy"),
    ("rw=tmp", "'tmp' is not an absolute path"),
    ("ro", "expected 'default' or KEY=VALUE"),
    ("wx=/tmp", "unknown key 'wx'"),
    ("default;bind=70000", "'70000' is not a TCP port"),
    ("scope=ptrace", "unknown scope 'ptrace'"),
])
def test_bad_policy_fails_create_cleanly(flatrun: Any, make_bundle: Any, policy: str,
                                         reason: str) -> None:
    bundle = make_bundle(["true"], edit=landlocked(policy))
    cid = flatrun.new_id()
    result = flatrun("create", "--bundle", bundle, cid, check=False)
    assert result.returncode != 0
    assert f"flatrun: {FIELD}: " in result.stderr and reason in result.stderr, result.stderr
    assert_nothing_left(flatrun, cid)


def test_policy_needs_no_new_privileges(flatrun: Any, make_bundle: Any) -> None:
    """Without no_new_privs or CAP_SYS_ADMIN the kernel refuses landlock_restrict_self:
    create says so up front."""
    bundle = make_bundle(["true"], edit=landlocked("default", noNewPrivileges=False))
    cid = flatrun.new_id()
    result = flatrun("create", "--bundle", bundle, cid, check=False)
    assert result.returncode != 0
    assert f"{FIELD}: needs process.noNewPrivileges" in result.stderr
    assert_nothing_left(flatrun, cid)


def test_cap_sys_admin_instead_of_nnp(flatrun: Any, make_bundle: Any) -> None:
    """CAP_SYS_ADMIN is the kernel's other way in: the sandbox is enforced all the same."""
    def edit(config: dict[str, Any]) -> None:
        landlocked("default", noNewPrivileges=False)(config)
        for key in ("bounding", "effective", "permitted"):
            config["process"]["capabilities"][key].append("CAP_SYS_ADMIN")
    bundle = make_bundle(["sh", "-c", "touch /etc/x; grep NoNewPrivs /proc/self/status"],
                         own_rootfs=True, edit=edit)
    result = run(flatrun, bundle)
    assert "touch: /etc/x: Permission denied" in result.stderr
    assert "NoNewPrivs:\t0" in result.stdout


def test_missing_path_fails_create_cleanly(flatrun: Any, make_bundle: Any) -> None:
    """A listed path is resolved inside the container; a missing one fails create."""
    bundle = make_bundle(["true"], edit=landlocked("ro=/bin;rw=/nonexistent"))
    cid = flatrun.new_id()
    result = flatrun("create", "--bundle", bundle, cid, check=False)
    assert result.returncode != 0
    assert f"{FIELD}: /nonexistent: no such file or directory in the container" \
        in result.stderr
    assert_nothing_left(flatrun, cid)


def test_features_advertises_the_kernel_abi(flatrun: Any) -> None:
    features = json.loads(flatrun("features").stdout)
    assert features["annotations"][ANNOTATION] == str(kernel_abi())
    assert kernel_abi() >= 1


# A kernel without Landlock answers ENOSYS, one booted without it in lsm= EOPNOTSUPP:
# flatrun runs under a seccomp filter that gives exactly those answers.
NO_LANDLOCK = """
import os, sys
from flatstack.kernel import proc
from flatstack.runtime import seccomp
errno = int(sys.argv[1])
rule = {"names": ["landlock_create_ruleset"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno}
bpf = seccomp.compile_filter({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule]})
proc.set_no_new_privs()
seccomp.install_filter(bpf, 0)
os.execv(sys.argv[2], sys.argv[2:])
"""


@pytest.mark.parametrize(("errno", "reason"), [
    (38, "this kernel has no Landlock"),
    (95, "Landlock is disabled on this host"),
])
def test_kernel_without_landlock(flatrun: Any, flatrun_bin: str, make_bundle: Any,
                                 tmp_path: Path, errno: int, reason: str) -> None:
    bundle = make_bundle(["true"], edit=landlocked("default"))
    cid = flatrun.new_id()
    base = [sys.executable, "-c", NO_LANDLOCK, str(errno), flatrun_bin, "--root", flatrun.root]
    out = tmp_path / "features.json"
    err = tmp_path / "err"
    with open(out, "w") as o, open(err, "w") as e:
        subprocess.run([*base, "features"], stdout=o, check=True)
        failed = subprocess.run([*base, "create", "--bundle", bundle, cid], stdout=e, stderr=e,
                                check=False)
    assert json.loads(out.read_text())["annotations"][ANNOTATION] == "0"
    assert failed.returncode != 0
    assert f"flatrun: {FIELD}: {reason}" in err.read_text()
    assert_nothing_left(flatrun, cid)
    # Without the annotation the same kernel runs containers as before.
    with open(err, "w") as e:
        ok = subprocess.run([*base, "run", "--bundle", make_bundle(["true"]), flatrun.new_id()],
                            stdout=e, stderr=e, check=False)
    assert ok.returncode == 0, err.read_text()
