"""Seccomp filters for real: each test forks a child that sets no_new_privs,
installs a compiled filter, makes raw syscalls and reports errno values."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import socket
import struct
import tempfile
from collections.abc import Callable
from typing import Any

import pytest

from flatstack.errors import SeccompError
from flatstack.oci.seccomp_profile import default_profile
from flatstack.runtime import seccomp

assert os.uname().machine == "x86_64", "the raw syscall numbers below are x86_64's"

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
PR_SET_NO_NEW_PRIVS = 38
NR = {"read": 0, "getpid": 39, "socket": 41, "clone": 56, "kill": 62, "ptrace": 101,
      "getppid": 110, "getpgid": 121, "personality": 135, "pivot_root": 155, "mount": 165,
      "umount2": 166, "add_key": 248, "keyctl": 250, "unshare": 272, "perf_event_open": 298,
      "open_by_handle_at": 304, "setns": 308, "bpf": 321, "io_uring_setup": 425,
      "clone3": 435, "fsopen": 430}
CLONE_NEWUSER = 0x10000000
CLONE_NEWNS = 0x00020000
AF_UNIX, AF_VSOCK = 1, 40


def sys_(name: str | int, *args: int) -> int:
    """A raw syscall: its result, or -errno."""
    nr = NR[name] if isinstance(name, str) else name
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(nr), *(ctypes.c_ulong(a & (2**64 - 1)) for a in args))
    return -ctypes.get_errno() if rc == -1 else rc


def filtered(program: bytes, body: Callable[[], Any], flags: int = 0) -> tuple[Any, int]:
    """Run ``body`` in a child under ``program``; (its JSON result, wait status)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            assert libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            seccomp.install_filter(program, flags)
            result = {"ok": body()}
        except BaseException as err:  # report, never unwind into pytest
            result = {"error": f"{type(err).__name__}: {err}"}
            code = 1
        try:
            os.write(w, json.dumps(result).encode())
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    return (json.loads(data) if data else None), status


@pytest.fixture(scope="module")
def default_bpf() -> bytes:
    return seccomp.compile_filter(default_profile())


def allow_all(*rules: dict[str, Any], **extra: Any) -> bytes:
    return seccomp.compile_filter({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": list(rules),
                                   **extra})


def seccomp_status() -> dict[str, str]:
    with open("/proc/self/status") as f:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in f)
                if k.startswith("Seccomp")}


def test_default_profile_blocks_and_allows(default_bpf: bytes) -> None:
    def body() -> dict[str, Any]:
        out: dict[str, Any] = {"status": seccomp_status()}
        for name, args in [("keyctl", (0,)), ("add_key", (0, 0, 0, 0, 0)),
                           ("unshare", (CLONE_NEWUSER,)), ("unshare", (0,)),
                           ("mount", (0, 0, 0, 0, 0)), ("umount2", (0, 0)),
                           ("pivot_root", (0, 0)), ("setns", (-1, 0)), ("bpf", (0, 0, 0)),
                           ("perf_event_open", (0, 0, 0, 0, 0)), ("ptrace", (0, 0, 0, 0)),
                           ("open_by_handle_at", (0, 0, 0)), ("io_uring_setup", (0, 0)),
                           ("fsopen", (0, 0)), ("personality", (0x0040000,)),
                           ("socket", (AF_VSOCK, 1, 0)), ("clone3", (0, 0))]:
            out[f"{name}{args[:1]}"] = sys_(name, *args)
        # clone with a namespace flag is refused before it creates anything.
        rc = sys_("clone", CLONE_NEWUSER | signal.SIGCHLD, 0, 0, 0, 0)
        if rc == 0:
            os._exit(0)
        out["clone(NEWUSER)"] = rc
        out["getpid"] = sys_("getpid") == os.getpid()
        out["personality(query)"] = sys_("personality", 0xFFFFFFFF) >= 0
        fd = sys_("socket", AF_UNIX, socket.SOCK_STREAM, 0)
        out["socket(AF_UNIX)"] = fd >= 0
        os.close(fd)
        pid = os.fork()  # plain clone(SIGCHLD) still works
        if pid == 0:
            os._exit(7)
        out["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        out["beyond_profile"] = sys_(1000)
        return out

    result, status = filtered(default_bpf, body)
    assert status == 0, result
    out = result["ok"]
    assert out.pop("status") == {"Seccomp": "2", "Seccomp_filters": "1"}
    assert out.pop("clone3(0,)") == -errno.ENOSYS
    assert out.pop("beyond_profile") == -errno.ENOSYS
    assert out.pop("getpid") is True
    assert out.pop("personality(query)") is True
    assert out.pop("socket(AF_UNIX)") is True
    assert out.pop("fork") == 7
    assert out == {key: -errno.EPERM for key in out}, out


def test_custom_default_errno(default_bpf: bytes) -> None:
    profile = dict(default_profile(), defaultErrnoRet=errno.EACCES)
    result, status = filtered(seccomp.compile_filter(profile),
                              lambda: [sys_("keyctl", 0), sys_("unshare", CLONE_NEWNS)])
    assert status == 0
    assert result == {"ok": [-errno.EACCES, -errno.EACCES]}, result


def test_argument_filters() -> None:
    me = os.getpid()
    program = allow_all(
        # personality only for the query value 0xffffffff, EOPNOTSUPP otherwise
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EOPNOTSUPP,
         "args": [{"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_NE"}]},
        # two conditions on one index: separate rules, so either matches (as runc)
        {"names": ["getpgid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42,
         "args": [{"index": 0, "value": 100000, "op": "SCMP_CMP_GE"},
                  {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
        # conditions on two indexes: one rule, both must match
        {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 43,
         "args": [{"index": 0, "value": me, "op": "SCMP_CMP_EQ"},
                  {"index": 1, "value": 0, "op": "SCMP_CMP_EQ"}]},
        # masked equality: flags with bit 0x10 set
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 44,
         "args": [{"index": 0, "value": 0x10, "valueTwo": 0x10, "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 45,
         "args": [{"index": 2, "value": 5, "op": "SCMP_CMP_LT"}]},
    )

    def body() -> dict[str, int]:
        return {
            "personality(query)": sys_("personality", 0xFFFFFFFF) >= 0,
            "personality(8)": sys_("personality", 8),
            "getpgid(0)": sys_("getpgid", 0) > 0,
            "getpgid(1)": sys_("getpgid", 1),
            "getpgid(200000)": sys_("getpgid", 200000),
            "kill(me,0)": sys_("kill", me, 0),
            "kill(1,0)": sys_("kill", 1, 0),
            "getppid(0x31)": sys_("getppid", 0x31),
            "getppid(0x21)": sys_("getppid", 0x21) > 0,
            "getpid(_,_,4)": sys_("getpid", 0, 0, 4),
            "getpid(_,_,5)": sys_("getpid", 0, 0, 5) > 0,
        }

    result, status = filtered(program, body)
    assert status == 0, result
    assert result["ok"] == {
        "personality(query)": True, "personality(8)": -errno.EOPNOTSUPP,
        "getpgid(0)": True, "getpgid(1)": -42, "getpgid(200000)": -42,
        "kill(me,0)": -43, "kill(1,0)": 0,
        "getppid(0x31)": -44, "getppid(0x21)": True,
        "getpid(_,_,4)": -45, "getpid(_,_,5)": True,
    }


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL",
                                    "SCMP_ACT_KILL_THREAD"])
def test_kill_actions_kill_with_sigsys(action: str) -> None:
    program = allow_all({"names": ["getppid"], "action": action})
    result, status = filtered(program, lambda: sys_("getppid"))
    assert result is None
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def test_kill_as_default_action() -> None:
    profile = dict(default_profile(), defaultAction="SCMP_ACT_KILL_PROCESS")
    del profile["defaultErrnoRet"]
    result, status = filtered(seccomp.compile_filter(profile), lambda: sys_("keyctl", 0))
    assert result is None
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def test_trap_raises_sigsys_and_log_allows() -> None:
    program = allow_all({"names": ["getppid"], "action": "SCMP_ACT_TRAP"},
                        {"names": ["getpgid"], "action": "SCMP_ACT_LOG"})

    def body() -> list[Any]:
        seen: list[int] = []
        signal.signal(signal.SIGSYS, lambda signum, frame: seen.append(signum))
        sys_("getppid")
        return [seen, sys_("getpgid", 0) > 0]

    result, status = filtered(program, body)
    assert status == 0
    assert result == {"ok": [[int(signal.SIGSYS)], True]}, result


def test_filter_flags_install() -> None:
    program = allow_all({"names": ["keyctl"], "action": "SCMP_ACT_ERRNO"})
    flags = seccomp.filter_flags({"flags": ["SECCOMP_FILTER_FLAG_LOG",
                                            "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                                            "SECCOMP_FILTER_FLAG_TSYNC"]})
    result, status = filtered(program, lambda: sys_("keyctl", 0), flags)
    assert status == 0
    assert result == {"ok": -errno.EPERM}, result


def test_stacked_filters_the_strictest_wins(default_bpf: bytes) -> None:
    inner = allow_all({"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 50})

    def body() -> list[Any]:
        seccomp.install_filter(inner)
        return [seccomp_status()["Seccomp_filters"], sys_("getpid"), sys_("keyctl", 0)]

    result, _ = filtered(default_bpf, body)
    assert result == {"ok": ["2", -50, -errno.EPERM]}, result


def test_install_without_no_new_privs_or_cap_sys_admin_fails() -> None:
    program = allow_all({"names": ["keyctl"], "action": "SCMP_ACT_ERRNO"})
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            # Drop CAP_SYS_ADMIN from the effective set (capset v3), keep no_new_privs off.
            hdr = struct.pack("II", 0x20080522, 0)
            data = (ctypes.c_uint32 * 6)()
            libc.capget(hdr, data)
            data[0] &= ~(1 << 21)
            libc.capset(hdr, data)
            try:
                seccomp.install_filter(program)
                msg = "installed"
            except SeccompError as err:
                msg = str(err)
            os.write(w, msg.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        msg = f.read()
    os.waitpid(pid, 0)
    assert msg.startswith("linux.seccomp: loading the filter: permission denied (no_new_privs")


def test_notify_listener_is_handed_over() -> None:
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "listenerMetadata": "hello",
               "syscalls": [{"names": ["getpgid"], "action": "SCMP_ACT_NOTIFY"}]}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "agent.sock")
        profile["listenerPath"] = path
        program = seccomp.compile_filter(profile)
        flags = seccomp.filter_flags(profile)
        assert flags & seccomp.FLAG_NEW_LISTENER
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(1)
        go_r, go_w = os.pipe()
        state = json.dumps({"ociVersion": "1.2.0", "id": "c1", "status": "creating",
                            "pid": 0, "bundle": "/b"}).encode()

        def body() -> int:
            listener = seccomp.install_filter(program, flags)
            assert listener > 0
            seccomp.send_listener(listener, path, state, profile["listenerMetadata"])
            os.close(listener)
            os.read(go_r, 1)  # the agent closed its copy: notify now answers ENOSYS
            return sys_("getpgid", 0)

        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                assert libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
                res: dict[str, Any] = {"ok": body()}
            except BaseException as err:
                res = {"error": f"{type(err).__name__}: {err}"}
                code = 1
            os.write(w, json.dumps(res).encode())
            os._exit(code)
        os.close(w)
        server.settimeout(10)
        conn, _ = server.accept()
        msg, fds, _, _ = socket.recv_fds(conn, 65536, 4)
        conn.close()
        server.close()
        assert len(fds) == 1
        assert os.readlink(f"/proc/self/fd/{fds[0]}") == "anon_inode:seccomp notify"
        os.close(fds[0])
        os.write(go_w, b"x")
        with os.fdopen(r, "rb") as f:
            result = json.loads(f.read())
        os.waitpid(pid, 0)
    doc = json.loads(msg)
    assert doc["fds"] == ["seccompFd"] and doc["metadata"] == "hello"
    assert doc["state"]["id"] == "c1"
    assert result == {"ok": -errno.ENOSYS}, result
