"""Process attributes from config.json, applied inside the container's init.

Call order in the init, after the root filesystem is final and the process is
in its cgroup (privileged steps first, while the init is still full root)::

    apply_rlimits, apply_oom_score_adj, apply_io_priority, apply_scheduler,
    apply_personality, apply_exec_cpu_affinity
    plan = prepare_capabilities(process.get("capabilities"))
    [seccomp here when noNewPrivileges is false: loading it needs CAP_SYS_ADMIN]
    drop_bounding(plan)                 # needs CAP_SETPCAP: still root
    apply_user(user, keep_caps=True)    # setgroups, setresgid, setresuid, umask
    apply_final_caps(plan)              # capset(eff, prm, inh), then ambient
    proc.set_no_new_privs()             # when noNewPrivileges
    [exec FIFO wait; seccomp here when noNewPrivileges is true; execve]

This is runc's order (libcontainer/init_linux.go: finalizeNamespace).  Every
error names the config field it comes from.
"""

from __future__ import annotations

import os

from flatstack.errors import ConfigError, FlatstackError, KernelError
from flatstack.kernel import caps as kcaps
from flatstack.kernel import proc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CAP_SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")


def _why(err: BaseException) -> str:
    errno = getattr(err, "errno", 0)
    return os.strerror(errno).lower() if errno else str(err)


# -- capabilities --------------------------------------------------------------


class CapPlan:
    """Validated capability sets (numbers), ready to apply.

    ``warnings`` lists what was ignored: capabilities this host cannot grant
    (not in the runtime's own permitted/bounding sets) and ambient capabilities
    that are not both permitted and inheritable (runc warns and goes on too).
    """

    __slots__ = ("ambient", "bounding", "effective", "inheritable", "permitted", "warnings")

    def __init__(self, bounding: set[int], effective: set[int], permitted: set[int],
                 inheritable: set[int], ambient: set[int],
                 warnings: list[str] | None = None) -> None:
        self.bounding = bounding
        self.effective = effective
        self.permitted = permitted
        self.inheritable = inheritable
        self.ambient = ambient
        self.warnings = warnings or []

    def __repr__(self) -> str:
        sets = ", ".join(f"{key}={sorted(getattr(self, key))}" for key in CAP_SETS)
        return f"CapPlan({sets})"


def _cap_list(caps: set[int]) -> str:
    return ", ".join(kcaps.CAP_NAMES[c] for c in sorted(caps))


def prepare_capabilities(caps: dict[str, Any] | None) -> CapPlan:
    """Validate process.capabilities and compute the five sets.

    No object, or an absent set, means empty (runc drops everything then).
    Names unknown to this kernel are skipped; capabilities the runtime itself
    does not hold are dropped with a warning instead of failing capset.
    """
    caps = caps or {}
    if not isinstance(caps, dict):
        raise ConfigError("process.capabilities", "must be an object")
    sets: dict[str, set[int]] = {}
    for key in CAP_SETS:
        names = caps.get(key) or []
        if not isinstance(names, list):
            raise ConfigError(f"process.capabilities.{key}", "must be an array of strings")
        sets[key] = kcaps.names_to_mask(names, f"process.capabilities.{key}")
    if not sets["effective"] <= sets["permitted"]:
        extra = sets["effective"] - sets["permitted"]
        raise ConfigError("process.capabilities.effective",
                          f"{_cap_list(extra)} not in process.capabilities.permitted")
    _, held, _ = kcaps.capget()
    held_set = kcaps.from_mask(held)
    have_bounding = kcaps.bounding()
    warnings: list[str] = []
    for key in CAP_SETS:
        available = have_bounding if key == "bounding" else held_set
        missing = sets[key] - available
        if missing:
            sets[key] -= missing
            warnings.append(f"process.capabilities.{key}: ignoring {_cap_list(missing)}: "
                            "not available to the runtime")
    unraisable = sets["ambient"] - (sets["permitted"] & sets["inheritable"])
    if unraisable:
        sets["ambient"] -= unraisable
        warnings.append(f"process.capabilities.ambient: ignoring {_cap_list(unraisable)}: "
                        "an ambient capability must be permitted and inheritable")
    return CapPlan(sets["bounding"], sets["effective"], sets["permitted"],
                   sets["inheritable"], sets["ambient"], warnings)


def drop_bounding(plan: CapPlan) -> None:
    """Limit the bounding set to ``plan.bounding`` (do it while still root)."""
    try:
        kcaps.drop_bounding(plan.bounding)
    except KernelError as err:
        raise FlatstackError(f"process.capabilities.bounding: {err}") from None


def apply_final_caps(plan: CapPlan) -> None:
    """Install effective/permitted/inheritable, then exactly the ambient set."""
    try:
        kcaps.capset(kcaps.to_mask(plan.effective), kcaps.to_mask(plan.permitted),
                     kcaps.to_mask(plan.inheritable))
    except KernelError as err:
        raise FlatstackError(f"process.capabilities: capset: {_why(err)} (after the user "
                             "switch: was apply_user called with keep_caps=True?)") from None
    try:
        kcaps.clear_ambient()
        kcaps.raise_ambient(plan.ambient)
    except KernelError as err:
        raise FlatstackError(f"process.capabilities.ambient: {err}") from None


# -- user ----------------------------------------------------------------------


def apply_user(user: dict[str, Any], *, keep_caps: bool) -> None:
    """process.user: setgroups(additionalGids), setresgid, setresuid, umask.

    With ``keep_caps`` the permitted set survives the switch away from uid 0
    (PR_SET_KEEPCAPS, cleared again afterwards), so ``apply_final_caps`` can
    still install the configured sets.  The parent-death signal, which the
    kernel clears on a credential change, is restored.
    """
    uid = int(user.get("uid", 0))
    gid = int(user.get("gid", 0))
    groups = [int(g) for g in user.get("additionalGids") or []]
    deathsig = proc.get_pdeathsig()
    if proc.setgroups_allowed():
        try:
            os.setgroups(groups)
        except OSError as err:
            raise ConfigError("process.user.additionalGids",
                              f"setgroups {groups}: {_why(err)}") from None
    elif groups:
        raise ConfigError("process.user.additionalGids",
                          "cannot set additional groups: setgroups is denied in this "
                          "user namespace")
    try:
        os.setresgid(gid, gid, gid)
    except OSError as err:
        raise ConfigError("process.user.gid", f"setresgid {gid}: {_why(err)}") from None
    if keep_caps:
        proc.set_keepcaps(True)
    try:
        os.setresuid(uid, uid, uid)
    except OSError as err:
        raise ConfigError("process.user.uid", f"setresuid {uid}: {_why(err)}") from None
    finally:
        if keep_caps:
            proc.set_keepcaps(False)
    if deathsig:
        proc.set_pdeathsig(deathsig)
    umask = user.get("umask")
    os.umask(0o022 if umask is None else int(umask))


# -- limits and scheduling -----------------------------------------------------


def apply_rlimits(rlimits: list[dict[str, Any]]) -> None:
    """process.rlimits via setrlimit; errors name ``process.rlimits[i]``."""
    if not rlimits:
        return
    limits = []
    for index, limit in enumerate(rlimits):
        name = limit.get("type")
        number = proc.RLIMITS.get(name) if isinstance(name, str) else None
        if number is None:
            raise ConfigError(f"process.rlimits[{index}].type", f'unknown rlimit "{name}"')
        limits.append((number, int(limit.get("soft", 0)), int(limit.get("hard", 0))))
    proc.set_rlimits(limits, "process.rlimits")


def apply_oom_score_adj(value: int) -> None:
    """process.oomScoreAdj (-1000..1000) on the calling process."""
    value = int(value)
    if not -1000 <= value <= 1000:
        raise ConfigError("process.oomScoreAdj", f"must be between -1000 and 1000, got {value}")
    # CVE-2025-52881: written through a verified procfs, never a mount over /proc.
    from flatstack.runtime.rootfs import write_procfs  # loaded by init.preload

    try:
        write_procfs(f"{os.getpid()}/oom_score_adj", str(value))
    except FlatstackError as err:
        raise ConfigError("process.oomScoreAdj", str(err)) from None
    except OSError as err:
        hint = (" (lowering it needs CAP_SYS_RESOURCE)" if err.errno in (1, 13) else "")
        raise ConfigError("process.oomScoreAdj", f"cannot set {value}: {_why(err)}{hint}"
                          ) from None


def apply_io_priority(io: dict[str, Any]) -> None:
    """process.ioPriority: {class: IOPRIO_CLASS_RT|BE|IDLE, priority: 0-7}."""
    cls = io.get("class", "")
    if cls not in ("IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE", "IOPRIO_CLASS_IDLE"):
        raise ConfigError("process.ioPriority.class", f'unknown class "{cls}"')
    prio = int(io.get("priority", 0))
    if not 0 <= prio <= 7:
        raise ConfigError("process.ioPriority.priority", f"must be between 0 and 7, got {prio}")
    try:
        proc.ioprio_set(cls, prio)
    except KernelError as err:
        raise ConfigError("process.ioPriority", _why(err)) from None


def apply_scheduler(sched: dict[str, Any]) -> None:
    """process.scheduler via sched_setattr (validated like runc's validator)."""
    policy = sched.get("policy", "")
    if policy not in proc.SCHED_POLICIES:
        raise ConfigError("process.scheduler.policy", f'unknown policy "{policy}"')
    nice = int(sched.get("nice", 0))
    priority = int(sched.get("priority", 0))
    if not -20 <= nice <= 19:
        raise ConfigError("process.scheduler.nice", f"must be between -20 and 19, got {nice}")
    if priority and policy not in ("SCHED_FIFO", "SCHED_RR"):
        raise ConfigError("process.scheduler.priority",
                          "can only be set for SCHED_FIFO or SCHED_RR")
    dl = {k: int(sched.get(k, 0)) for k in ("runtime", "deadline", "period")}
    if policy != "SCHED_DEADLINE" and any(dl.values()):
        raise ConfigError("process.scheduler",
                          "runtime, deadline and period can only be set for SCHED_DEADLINE")
    flags = sched.get("flags") or []
    for index, flag in enumerate(flags):
        if flag not in proc.SCHED_FLAGS:
            raise ConfigError(f"process.scheduler.flags[{index}]", f'unknown flag "{flag}"')
    try:
        proc.sched_setattr(policy, nice, priority, flags, **dl)
    except KernelError as err:
        raise ConfigError("process.scheduler", f"sched_setattr {policy}: {_why(err)}") from None


def apply_personality(personality: dict[str, Any]) -> None:
    """linux.personality: {domain: LINUX|LINUX32, flags: [...]}."""
    domain = personality.get("domain", "")
    if domain not in proc.PERSONALITY_DOMAINS:
        raise ConfigError("linux.personality.domain", f'unknown domain "{domain}"')
    flags = personality.get("flags") or []
    for index, flag in enumerate(flags):
        if flag not in proc.PERSONALITY_FLAGS:
            raise ConfigError(f"linux.personality.flags[{index}]", f'unknown flag "{flag}"')
    try:
        proc.personality(domain, flags)
    except KernelError as err:
        raise ConfigError("linux.personality", _why(err)) from None


def apply_exec_cpu_affinity(affinity: dict[str, Any], *, initial: bool = False) -> None:
    """process.execCPUAffinity.

    ``initial=True`` applies ``initial`` (before joining the container's
    cgroup); otherwise ``final`` is applied, falling back to ``initial``.
    """
    key = "initial" if initial else ("final" if affinity.get("final") else "initial")
    cpus = affinity.get(key)
    if not cpus:
        return
    field = f"process.execCPUAffinity.{key}"
    try:
        proc.set_cpu_affinity(cpus)
    except ValueError as err:
        raise ConfigError(field, str(err)) from None
    except OSError as err:
        raise ConfigError(field, f"sched_setaffinity {cpus}: {_why(err)}") from None


def parse_cpu_list(text: str, field: str) -> set[int]:
    """"0-2,4" -> {0, 1, 2, 4}; ConfigError naming ``field`` when malformed."""
    try:
        return proc.parse_cpu_list(text)
    except ValueError as err:
        raise ConfigError(field, str(err)) from None
