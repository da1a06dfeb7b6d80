"""kernel/proc.py: prctl flags, rlimits, scheduling words, CPU lists, fd sweeping.

State-changing calls run in a forked child so the test process is untouched.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import resource
import signal
from typing import Any

import pytest
from tests._forked import drop_sys_resource, in_child

from flatstack.errors import FlatstackError
from flatstack.kernel import proc

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def test_rlimit_table() -> None:
    for name, number in proc.RLIMITS.items():
        assert getattr(resource, name, number) == number
    assert len(proc.RLIMITS) == 16


def test_rlimit_table_matches_config() -> None:
    from flatstack.oci import config

    assert config.RLIMITS == proc.RLIMITS


@pytest.mark.parametrize("text, cpus", [
    ("0", {0}), ("0-2", {0, 1, 2}), ("0-1,3", {0, 1, 3}), (" 1 , 4-5 ", {1, 4, 5}),
    ("3-3", {3}),
])
def test_parse_cpu_list(text: str, cpus: set[int]) -> None:
    assert proc.parse_cpu_list(text) == cpus


@pytest.mark.parametrize("text", ["", "a", "1-", "-1", "2-1", "1,,2", "1-2-3", "0x1"])
def test_parse_cpu_list_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        proc.parse_cpu_list(text)


def test_ioprio_value() -> None:
    assert proc.ioprio_value("IOPRIO_CLASS_RT", 0) == 1 << 13
    assert proc.ioprio_value("IOPRIO_CLASS_BE", 4) == 2 << 13 | 4
    assert proc.ioprio_value("IOPRIO_CLASS_IDLE", 7) == 3 << 13 | 7
    with pytest.raises(ValueError):
        proc.ioprio_value("IOPRIO_CLASS_BE", 8)
    with pytest.raises(ValueError):
        proc.ioprio_value("BE", 0)


def test_personality_value() -> None:
    assert proc.personality_value("LINUX") == 0
    assert proc.personality_value("LINUX32") == 8
    assert proc.personality_value("LINUX", ["ADDR_NO_RANDOMIZE"]) == 0x0040000
    with pytest.raises(ValueError):
        proc.personality_value("WINDOWS")
    with pytest.raises(ValueError):
        proc.personality_value("LINUX", ["NOPE"])


def test_sched_attr_layout() -> None:
    attr = proc.sched_attr("SCHED_DEADLINE", flags=["SCHED_FLAG_RESET_ON_FORK",
                                                    "SCHED_FLAG_DL_OVERRUN"],
                           runtime=10, deadline=20, period=30)
    assert len(attr.pack()) == attr.size == 56
    assert attr.sched_policy == 6 and attr.sched_flags == 0x05
    assert (attr.sched_runtime, attr.sched_deadline, attr.sched_period) == (10, 20, 30)
    with pytest.raises(ValueError):
        proc.sched_attr("SCHED_NOPE")
    with pytest.raises(ValueError):
        proc.sched_attr("SCHED_OTHER", flags=["SCHED_FLAG_NOPE"])


def test_sched_getattr_reads_self() -> None:
    attr = proc.sched_getattr()
    assert attr.sched_policy == os.sched_getscheduler(0) & 0xFF


def test_prctl_flags_in_child() -> None:
    def child() -> Any:
        before = proc.get_no_new_privs()
        proc.set_no_new_privs()
        proc.set_pdeathsig(signal.SIGKILL)
        proc.set_dumpable(False)
        proc.set_name("flatrun-test-name-too-long")
        with open("/proc/self/comm") as f:
            comm = f.read().strip()
        return [before, proc.get_no_new_privs(), proc.get_pdeathsig(), proc.get_dumpable(),
                comm]

    assert in_child(child) == {"ok": [False, True, signal.SIGKILL, False, "flatrun-test-na"]}


def test_child_subreaper_in_child() -> None:
    def child() -> Any:
        proc.set_child_subreaper()
        value = ctypes.c_int(0)
        proc.prctl(proc.PR_GET_CHILD_SUBREAPER, ctypes.addressof(value))
        return value.value

    assert in_child(child) == {"ok": 1}


def test_set_rlimits_in_child() -> None:
    def child() -> Any:
        proc.set_rlimits([(resource.RLIMIT_NOFILE, 512, 1024),
                          (resource.RLIMIT_CORE, 0, 0)])
        return [resource.getrlimit(resource.RLIMIT_NOFILE), proc.getrlimit(4)]

    assert in_child(child) == {"ok": [[512, 1024], [0, 0]]}


def test_set_rlimits_unlimited() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_STACK)
    assert hard == resource.RLIM_INFINITY, "the test needs an unlimited RLIMIT_STACK hard limit"

    def child() -> Any:
        proc.set_rlimits([(resource.RLIMIT_STACK, 2**64 - 1, 2**64 - 1)])
        return resource.getrlimit(resource.RLIMIT_STACK)

    assert in_child(child) == {"ok": [resource.RLIM_INFINITY, resource.RLIM_INFINITY]}


def test_set_rlimits_above_hard_names_the_entry() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def child() -> Any:
        drop_sys_resource()
        proc.set_rlimits([(resource.RLIMIT_CORE, 0, 0),
                          (resource.RLIMIT_NOFILE, hard + 1, hard + 1)])

    result = in_child(child)
    assert result["error"] == FlatstackError.__name__
    message = result["message"]
    assert message.startswith("process.rlimits[1]: cannot set RLIMIT_NOFILE")
    assert f"hard={hard}" in message and "CAP_SYS_RESOURCE" in message
    assert "operation not permitted" in message


def test_set_rlimits_soft_above_hard() -> None:
    def child() -> Any:
        proc.set_rlimits([(resource.RLIMIT_NOFILE, 100, 50)], "p.r")

    result = in_child(child)
    assert result["message"].startswith("p.r[0]: cannot set RLIMIT_NOFILE to soft=100 hard=50")
    assert result["message"].endswith("the soft limit exceeds the hard limit")


def test_close_fds_from_marks_cloexec() -> None:
    def child() -> Any:
        fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(5)]
        for fd in fds:
            os.set_inheritable(fd, True)
        keep = {fds[1], fds[3]}
        proc.close_fds_from(fds[0], keep)
        return [[fd, os.get_inheritable(fd)] for fd in fds]

    result = in_child(child)["ok"]
    flags = [inheritable for _, inheritable in result]
    assert flags == [False, True, False, True, False]


def test_close_fds_fallback_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proc, "try_syscall", lambda *args: -38)  # ENOSYS: no close_range

    def child() -> Any:
        fd = os.open("/dev/null", os.O_RDONLY)
        os.set_inheritable(fd, True)
        kept = os.open("/dev/null", os.O_RDONLY)
        os.set_inheritable(kept, True)
        proc.close_fds_from(fd, {kept})
        return [fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC,
                fcntl.fcntl(kept, fcntl.F_GETFD) & fcntl.FD_CLOEXEC]

    assert in_child(child) == {"ok": [fcntl.FD_CLOEXEC, 0]}


def test_setgroups_allowed_on_host() -> None:
    assert proc.setgroups_allowed() is True


@root_only
def test_oom_score_adj_self() -> None:
    def child() -> Any:
        proc.set_oom_score_adj("self", 321)
        with open("/proc/self/oom_score_adj") as f:
            return int(f.read())

    assert in_child(child) == {"ok": 321}


def test_cpu_affinity_in_child() -> None:
    def child() -> Any:
        proc.set_cpu_affinity("0")
        return sorted(os.sched_getaffinity(0))

    assert in_child(child) == {"ok": [0]}
