"""Process attributes from config.json applied inside the container's init.

Call order inside the init (after the root filesystem is final):
rlimits, oom_score_adj, I/O priority, scheduler, personality, CPU affinity, then
``prepare_capabilities`` -> ``drop_bounding`` -> ``apply_user(keep_caps=True)`` ->
``apply_final_caps`` (runc's order: the bounding set is dropped while still root,
ids change with PR_SET_KEEPCAPS, then the final sets are installed).
"""

from __future__ import annotations

import os

from flatstack.errors import ConfigError, FlatstackError
from flatstack.kernel import caps as kcaps
from flatstack.kernel import proc
from flatstack.oci.config import RLIMITS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_UNLIMITED = 0xFFFFFFFFFFFFFFFF


class CapPlan:
    """Validated capability masks, ready to apply."""

    def __init__(self, bounding: set[int], effective: set[int], permitted: set[int],
                 inheritable: set[int], ambient: set[int]) -> None:
        self.bounding = bounding
        self.effective = effective
        self.permitted = permitted
        self.inheritable = inheritable
        self.ambient = ambient


def _names(caps: dict[str, Any], key: str, known_max: int) -> set[int]:
    result = set()
    for index, name in enumerate(caps.get(key) or []):
        number = kcaps.CAPABILITIES.get(name)
        if number is None:
            raise ConfigError(f"process.capabilities.{key}[{index}]",
                              f"unknown capability {name!r}")
        if number <= known_max:  # like runc: capabilities this kernel lacks are skipped
            result.add(number)
    return result


def prepare_capabilities(caps: dict[str, Any] | None) -> CapPlan:
    """Masks for process.capabilities; an absent object or set means empty."""
    caps = caps or {}
    top = kcaps.last_cap()
    return CapPlan(*(_names(caps, key, top) for key in
                     ("bounding", "effective", "permitted", "inheritable", "ambient")))


def drop_bounding(plan: CapPlan) -> None:
    kcaps.drop_bounding(plan.bounding)


def apply_final_caps(plan: CapPlan) -> None:
    """Install effective/permitted/inheritable, then the ambient set."""
    kcaps.capset(kcaps.to_mask(plan.effective), kcaps.to_mask(plan.permitted),
                 kcaps.to_mask(plan.inheritable))
    proc.set_keepcaps(False)
    kcaps.clear_ambient()
    if plan.ambient:
        try:
            kcaps.raise_ambient(plan.ambient)
        except FlatstackError as err:
            raise FlatstackError(f"process.capabilities.ambient: {err} (an ambient "
                                 "capability must also be permitted and inheritable)"
                                 ) from None


def apply_user(user: dict[str, Any], *, keep_caps: bool) -> None:
    """additionalGids, gid, uid and umask of process.user."""
    uid = int(user.get("uid", 0))
    gid = int(user.get("gid", 0))
    groups = [int(g) for g in user.get("additionalGids") or []]
    if keep_caps:
        proc.set_keepcaps(True)
    try:
        os.setgroups(groups)
    except OSError as err:
        if groups or not _setgroups_denied():
            raise ConfigError("process.user.additionalGids",
                              f"setgroups: {os.strerror(err.errno or 0).lower()}") from None
    try:
        os.setresgid(gid, gid, gid)
    except OSError as err:
        raise ConfigError("process.user.gid", f"cannot switch to gid {gid}: "
                          f"{os.strerror(err.errno or 0).lower()}") from None
    try:
        os.setresuid(uid, uid, uid)
    except OSError as err:
        raise ConfigError("process.user.uid", f"cannot switch to uid {uid}: "
                          f"{os.strerror(err.errno or 0).lower()}") from None
    umask = user.get("umask")
    os.umask(int(umask) if umask is not None else 0o022)


def _setgroups_denied() -> bool:
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() == "deny"
    except OSError:
        return False


def apply_rlimits(rlimits: list[dict[str, Any]]) -> None:
    """process.rlimits via setrlimit."""
    if not rlimits:
        return
    import resource

    for index, limit in enumerate(rlimits):
        name = limit.get("type")
        number = RLIMITS.get(name or "")
        if number is None:
            raise ConfigError(f"process.rlimits[{index}].type", f"unknown rlimit {name!r}")
        soft = int(limit.get("soft", 0))
        hard = int(limit.get("hard", 0))
        soft = resource.RLIM_INFINITY if soft >= _UNLIMITED else soft
        hard = resource.RLIM_INFINITY if hard >= _UNLIMITED else hard
        try:
            resource.setrlimit(number, (soft, hard))
        except (OSError, ValueError) as err:
            current = resource.getrlimit(number)
            raise ConfigError(f"process.rlimits[{index}]",
                              f"cannot set {name} to soft={soft} hard={hard} (the host's "
                              f"hard limit is {current[1]}): {err}") from None


def apply_oom_score_adj(value: int) -> None:
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(int(value)))
    except OSError as err:
        raise ConfigError("process.oomScoreAdj", f"cannot set {value}: "
                          f"{os.strerror(err.errno or 0).lower()}") from None


_IOPRIO_CLASSES = {"IOPRIO_CLASS_RT": 1, "IOPRIO_CLASS_BE": 2, "IOPRIO_CLASS_IDLE": 3}


def apply_io_priority(io: dict[str, Any]) -> None:
    from flatstack.kernel.libc import syscall

    cls = _IOPRIO_CLASSES.get(io.get("class", ""))
    if cls is None:
        raise ConfigError("process.ioPriority.class", f"unknown class {io.get('class')!r}")
    prio = int(io.get("priority", 0))
    if not 0 <= prio <= 7:
        raise ConfigError("process.ioPriority.priority", "must be between 0 and 7")
    try:
        syscall("ioprio_set", 1, 0, (cls << 13) | prio)
    except FlatstackError as err:
        raise ConfigError("process.ioPriority", str(err)) from None


_POLICIES = {"SCHED_OTHER": 0, "SCHED_FIFO": 1, "SCHED_RR": 2, "SCHED_BATCH": 3,
             "SCHED_ISO": 4, "SCHED_IDLE": 5, "SCHED_DEADLINE": 6}


def apply_scheduler(sched: dict[str, Any]) -> None:
    """process.scheduler: policy and priority (sched_setscheduler) and nice."""
    policy = _POLICIES.get(sched.get("policy", ""))
    if policy is None:
        raise ConfigError("process.scheduler.policy", f"unknown policy {sched.get('policy')!r}")
    if policy == 6:
        raise ConfigError("process.scheduler.policy", "SCHED_DEADLINE is not supported yet")
    try:
        os.sched_setscheduler(0, policy, os.sched_param(int(sched.get("priority", 0))))
        if sched.get("nice") is not None and policy in (0, 3, 5):
            os.setpriority(os.PRIO_PROCESS, 0, int(sched["nice"]))
    except OSError as err:
        raise ConfigError("process.scheduler", os.strerror(err.errno or 0).lower()) from None


def apply_personality(personality: dict[str, Any]) -> None:
    from flatstack.kernel.libc import syscall

    domain = {"LINUX": 0x0000, "LINUX32": 0x0008}.get(personality.get("domain", ""))
    if domain is None:
        raise ConfigError("linux.personality.domain",
                          f"unknown domain {personality.get('domain')!r}")
    syscall("personality", domain)


def apply_exec_cpu_affinity(affinity: dict[str, Any]) -> None:
    cpus = affinity.get("final") or affinity.get("initial")
    if cpus:
        os.sched_setaffinity(0, parse_cpu_list(cpus, "process.execCPUAffinity"))


def parse_cpu_list(text: str, field: str) -> set[int]:
    """"0-2,4" -> {0, 1, 2, 4}."""
    result: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            result.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ConfigError(field, f"invalid CPU list {text!r}") from None
    return result
