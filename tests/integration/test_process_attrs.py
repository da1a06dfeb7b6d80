"""runtime/process_attrs.py for real: each test forks a child that applies a
piece of config.json and reports what the kernel then says about it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

import pytest

from flatstack.errors import ConfigError
from flatstack.kernel import caps, proc
from flatstack.runtime import process_attrs as pa
from tests._forked import drop_sys_resource
from tests._forked import in_child as forked

NET_BIND = caps.CAPABILITIES["CAP_NET_BIND_SERVICE"]
CHOWN = caps.CAPABILITIES["CAP_CHOWN"]


def status_of(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def read_status() -> dict[str, str]:
    with open("/proc/self/status") as f:
        return status_of(f.read())


def in_child(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a forked child; return its result or raise its error."""
    data = forked(fn)
    if "error" in data:
        raise ChildError(data["error"], data["message"], data["field"])
    return data["ok"]


class ChildError(Exception):
    def __init__(self, kind: str, message: str, field: str | None) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.field = field


def exec_in_child(setup: Callable[[], None], argv: list[str]) -> tuple[int, str]:
    """Fork, run ``setup``, then exec ``argv`` with stdout on a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            setup()
            os.dup2(w, 1)
            os.execv(argv[0], argv)
        except BaseException as err:
            os.write(w, f"SETUP FAILED: {type(err).__name__}: {err}".encode())
        finally:
            os._exit(99)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out


def mask(*numbers: int) -> str:
    return f"{caps.to_mask(numbers):016x}"


def finalize(capabilities: dict[str, Any] | None, user: dict[str, Any],
             nnp: bool = False) -> None:
    """The lead's order: plan, bounding, user (keepcaps), final sets, no_new_privs."""
    plan = pa.prepare_capabilities(capabilities)
    pa.drop_bounding(plan)
    pa.apply_user(user, keep_caps=True)
    pa.apply_final_caps(plan)
    if nnp:
        proc.set_no_new_privs()


# -- capabilities and user -----------------------------------------------------


def test_caps_user_and_no_new_privs() -> None:
    spec = {"bounding": ["CAP_NET_BIND_SERVICE", "CAP_CHOWN"],
            "effective": ["CAP_NET_BIND_SERVICE"],
            "permitted": ["CAP_NET_BIND_SERVICE", "CAP_CHOWN"]}
    user = {"uid": 1000, "gid": 1000, "additionalGids": [1001, 1002], "umask": 0o077}

    def child() -> Any:
        finalize(spec, user, nnp=True)
        return read_status()

    st = in_child(child)
    assert st["CapEff"] == mask(NET_BIND)
    assert st["CapPrm"] == mask(NET_BIND, CHOWN)
    assert st["CapInh"] == mask()
    assert st["CapAmb"] == mask()
    assert st["CapBnd"] == mask(NET_BIND, CHOWN)
    assert st["Uid"].split() == ["1000"] * 4
    assert st["Gid"].split() == ["1000"] * 4
    assert st["Groups"].split() == ["1001", "1002"]
    assert st["NoNewPrivs"] == "1"
    assert st["Umask"] == "0077"


def test_no_capabilities_object_drops_everything() -> None:
    def child() -> Any:
        finalize(None, {"uid": 0, "gid": 0})
        return read_status()

    st = in_child(child)
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert st[key] == mask(), key
    assert st["Uid"].split() == ["0"] * 4
    assert st["Groups"] == ""
    assert st["Umask"] == "0022"


def test_all_caps_requested_on_a_host_lacking_some() -> None:
    every = list(caps.CAPABILITIES)
    spec = {key: every for key in ("bounding", "effective", "permitted", "inheritable")}
    host = caps.bounding()

    def child() -> Any:
        plan = pa.prepare_capabilities(spec)
        finalize(spec, {"uid": 0, "gid": 0})
        return [read_status(), plan.warnings]

    st, warnings = in_child(child)
    assert st["CapBnd"] == st["CapEff"] == st["CapPrm"] == st["CapInh"] == mask(*host)
    missing = set(range(caps.last_cap() + 1)) - host
    assert bool(warnings) == bool(missing)
    for cap in missing:
        assert caps.CAP_NAMES[cap] in warnings[0]


def test_ambient_survives_exec_as_non_root() -> None:
    spec = {"bounding": ["CAP_NET_BIND_SERVICE"], "effective": ["CAP_NET_BIND_SERVICE"],
            "permitted": ["CAP_NET_BIND_SERVICE"], "inheritable": ["CAP_NET_BIND_SERVICE"],
            "ambient": ["CAP_NET_BIND_SERVICE"]}
    code, out = exec_in_child(lambda: finalize(spec, {"uid": 1000, "gid": 1000}, nnp=True),
                              ["/bin/cat", "/proc/self/status"])
    assert code == 0, out
    st = status_of(out)
    assert st["Uid"].split() == ["1000"] * 4
    assert st["CapEff"] == st["CapPrm"] == st["CapAmb"] == mask(NET_BIND)
    assert st["CapBnd"] == mask(NET_BIND)


def test_without_ambient_exec_as_non_root_has_no_caps() -> None:
    spec = {"bounding": ["CAP_NET_BIND_SERVICE"], "effective": ["CAP_NET_BIND_SERVICE"],
            "permitted": ["CAP_NET_BIND_SERVICE"], "inheritable": ["CAP_NET_BIND_SERVICE"]}
    code, out = exec_in_child(lambda: finalize(spec, {"uid": 1000, "gid": 1000}),
                              ["/bin/cat", "/proc/self/status"])
    assert code == 0, out
    st = status_of(out)
    assert st["CapEff"] == st["CapPrm"] == st["CapAmb"] == mask()
    assert st["CapInh"] == mask(NET_BIND)


def test_ambient_not_inheritable_is_ignored_with_warning() -> None:
    plan = pa.prepare_capabilities({"permitted": ["CAP_KILL"], "ambient": ["CAP_KILL"]})
    assert plan.ambient == set()
    assert "CAP_KILL" in plan.warnings[0] and "inheritable" in plan.warnings[0]


def test_capset_without_keepcaps_fails_clearly() -> None:
    def child() -> Any:
        plan = pa.prepare_capabilities({"permitted": ["CAP_KILL"]})
        pa.drop_bounding(plan)
        pa.apply_user({"uid": 1000, "gid": 1000}, keep_caps=False)
        pa.apply_final_caps(plan)

    with pytest.raises(ChildError) as info:
        in_child(child)
    assert info.value.message.startswith("process.capabilities: capset: operation not permitted")


@pytest.mark.parametrize("spec, field, reason", [
    ({"bounding": ["CAP_KILL", "CAP_NOPE"]}, "process.capabilities.bounding[1]",
     'unknown capability "CAP_NOPE"'),
    ({"ambient": ["kill"]}, "process.capabilities.ambient[0]", 'unknown capability "kill"'),
    ({"effective": "CAP_KILL"}, "process.capabilities.effective", "must be an array"),
    ({"effective": ["CAP_KILL"]}, "process.capabilities.effective",
     "CAP_KILL not in process.capabilities.permitted"),
])
def test_capability_config_errors(spec: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        pa.prepare_capabilities(spec)
    assert info.value.field == field
    assert reason in info.value.reason


def test_pdeathsig_survives_user_switch() -> None:
    def child() -> Any:
        proc.set_pdeathsig(9)
        pa.apply_user({"uid": 1000, "gid": 1000}, keep_caps=True)
        return proc.get_pdeathsig()

    assert in_child(child) == 9


def test_additional_gids_denied_in_user_namespace() -> None:
    from flatstack.kernel import ns

    def enter_userns() -> None:
        ns.unshare(ns.CLONE_NEWUSER)
        for name, text in (("setgroups", "deny"), ("uid_map", "0 0 1"), ("gid_map", "0 0 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)

    def child_ok() -> Any:
        enter_userns()
        pa.apply_user({"uid": 0, "gid": 0}, keep_caps=True)
        return proc.setgroups_allowed()

    def child_bad() -> Any:
        enter_userns()
        pa.apply_user({"uid": 0, "gid": 0, "additionalGids": [5]}, keep_caps=True)

    assert in_child(child_ok) is False
    with pytest.raises(ChildError) as info:
        in_child(child_bad)
    assert info.value.field == "process.user.additionalGids"


def test_unmapped_uid_names_the_field() -> None:
    from flatstack.kernel import ns

    def child() -> Any:
        ns.unshare(ns.CLONE_NEWUSER)
        for name, text in (("setgroups", "deny"), ("uid_map", "0 0 1"), ("gid_map", "0 0 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
        pa.apply_user({"uid": 1000, "gid": 0}, keep_caps=True)

    with pytest.raises(ChildError) as info:
        in_child(child)
    assert info.value.field == "process.user.uid"


# -- rlimits, oom score, I/O priority, scheduler, personality, affinity -----------


def limits_of(text: str) -> dict[str, tuple[str, str]]:
    rows = {}
    for line in text.splitlines()[1:]:
        parts = line[26:].split()
        rows[line[:26].strip()] = (parts[0], parts[1])
    return rows


def test_rlimits_visible_in_proc_limits() -> None:
    def child() -> Any:
        pa.apply_rlimits([{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 4096},
                          {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
                          {"type": "RLIMIT_NPROC", "soft": 512, "hard": 1000}])
        with open("/proc/self/limits") as f:
            return f.read()

    rows = limits_of(in_child(child))
    assert rows["Max open files"] == ("1024", "4096")
    assert rows["Max core file size"] == ("0", "0")
    assert rows["Max processes"] == ("512", "1000")


def test_rlimit_nofile_above_hard_limit_is_clear() -> None:
    _, hard = proc.getrlimit(7)

    def child() -> Any:
        drop_sys_resource()  # raising a hard limit is what CAP_SYS_RESOURCE allows
        pa.apply_rlimits([{"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
                          {"type": "RLIMIT_NOFILE", "soft": hard + 1, "hard": hard + 1}])

    with pytest.raises(ChildError) as info:
        in_child(child)
    message = info.value.message
    assert message.startswith(f"process.rlimits[1]: cannot set RLIMIT_NOFILE to "
                              f"soft={hard + 1} hard={hard + 1}")
    assert f"hard={hard};" in message
    assert message.endswith("operation not permitted")


def test_rlimit_unknown_type() -> None:
    with pytest.raises(ConfigError) as info:
        pa.apply_rlimits([{"type": "RLIMIT_NOPE", "soft": 1, "hard": 1}])
    assert info.value.field == "process.rlimits[0].type"


def test_oom_score_adj_visible_from_outside() -> None:
    r, w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(go_w)
            pa.apply_oom_score_adj(500)
            os.write(w, b"ok")
            os.read(go_r, 1)
        finally:
            os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 2) == b"ok"
        with open(f"/proc/{pid}/oom_score_adj") as f:
            assert f.read().strip() == "500"
    finally:
        os.close(go_w)
        os.waitpid(pid, 0)
        for fd in (r, go_r):
            os.close(fd)


def test_oom_score_adj_errors() -> None:
    with pytest.raises(ConfigError) as info:
        pa.apply_oom_score_adj(1001)
    assert info.value.field == "process.oomScoreAdj"
    if proc.prctl(proc.PR_CAPBSET_READ, caps.CAPABILITIES["CAP_SYS_RESOURCE"]) == 1:
        return

    def child() -> Any:
        pa.apply_oom_score_adj(200)
        pa.apply_oom_score_adj(-500)

    with pytest.raises(ChildError) as err:
        in_child(child)
    assert err.value.field == "process.oomScoreAdj"
    assert "CAP_SYS_RESOURCE" in err.value.message


def test_io_priority_visible() -> None:
    def setup() -> None:
        pa.apply_io_priority({"class": "IOPRIO_CLASS_BE", "priority": 5})

    assert in_child(lambda: (setup(), proc.ioprio_get())[1]) == [2, 5]
    ionice = shutil.which("ionice")
    if ionice:
        code, out = exec_in_child(setup, [ionice])
        assert code == 0 and out.strip() == "best-effort: prio 5"
    assert in_child(lambda: (pa.apply_io_priority({"class": "IOPRIO_CLASS_IDLE"}),
                             proc.ioprio_get())[1]) == [3, 0]


@pytest.mark.parametrize("io, field", [
    ({"class": "IOPRIO_CLASS_NOPE", "priority": 0}, "process.ioPriority.class"),
    ({"class": "IOPRIO_CLASS_BE", "priority": 8}, "process.ioPriority.priority"),
])
def test_io_priority_errors(io: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        pa.apply_io_priority(io)
    assert info.value.field == field


def test_scheduler_batch_with_nice() -> None:
    def child() -> Any:
        pa.apply_scheduler({"policy": "SCHED_BATCH", "nice": 7})
        return [os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0)]

    assert in_child(child) == [os.SCHED_BATCH, 7]


def test_scheduler_fifo_reset_on_fork() -> None:
    def child() -> Any:
        pa.apply_scheduler({"policy": "SCHED_FIFO", "priority": 10,
                            "flags": ["SCHED_FLAG_RESET_ON_FORK"]})
        return [os.sched_getscheduler(0), os.sched_getparam(0).sched_priority]

    policy, priority = in_child(child)
    assert policy == os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
    assert priority == 10


@pytest.mark.parametrize("sched, field", [
    ({"policy": "SCHED_NOPE"}, "process.scheduler.policy"),
    ({"policy": "SCHED_OTHER", "nice": 20}, "process.scheduler.nice"),
    ({"policy": "SCHED_OTHER", "priority": 5}, "process.scheduler.priority"),
    ({"policy": "SCHED_FIFO", "priority": 5, "runtime": 100}, "process.scheduler"),
    ({"policy": "SCHED_RR", "priority": 5, "flags": ["SCHED_FLAG_NOPE"]},
     "process.scheduler.flags[0]"),
])
def test_scheduler_config_errors(sched: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        pa.apply_scheduler(sched)
    assert info.value.field == field


def test_scheduler_kernel_refusal_names_the_field() -> None:
    def child() -> Any:
        pa.apply_scheduler({"policy": "SCHED_FIFO", "priority": 1000})

    with pytest.raises(ChildError) as info:
        in_child(child)
    assert info.value.field == "process.scheduler"
    assert "invalid argument" in info.value.message


def test_personality_linux32() -> None:
    def child() -> Any:
        pa.apply_personality({"domain": "LINUX32"})
        return [proc.get_personality(), os.uname().machine]

    persona, machine = in_child(child)
    assert persona & 0xFF == 0x0008
    if os.uname().machine == "x86_64":
        assert machine == "i686"


def test_personality_flags() -> None:
    def child() -> Any:
        pa.apply_personality({"domain": "LINUX", "flags": ["ADDR_NO_RANDOMIZE"]})
        return proc.get_personality()

    assert in_child(child) == 0x0040000
    with pytest.raises(ConfigError) as info:
        pa.apply_personality({"domain": "LINUX", "flags": ["NOPE"]})
    assert info.value.field == "linux.personality.flags[0]"
    with pytest.raises(ConfigError) as info:
        pa.apply_personality({"domain": "LINUX64"})
    assert info.value.field == "linux.personality.domain"


def test_exec_cpu_affinity() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    last = cpus[-1]

    def child() -> Any:
        pa.apply_exec_cpu_affinity({"initial": f"{cpus[0]}-{last}", "final": str(last)})
        final = sorted(os.sched_getaffinity(0))
        pa.apply_exec_cpu_affinity({"initial": str(cpus[0]), "final": str(last)},
                                   initial=True)
        return [final, sorted(os.sched_getaffinity(0))]

    assert in_child(child) == [[last], [cpus[0]]]


def test_exec_cpu_affinity_errors() -> None:
    with pytest.raises(ConfigError) as info:
        pa.apply_exec_cpu_affinity({"final": "0-"})
    assert info.value.field == "process.execCPUAffinity.final"

    def child() -> Any:
        pa.apply_exec_cpu_affinity({"initial": "4000"})

    with pytest.raises(ChildError) as err:
        in_child(child)
    assert err.value.field == "process.execCPUAffinity.initial"
