"""linux.resources.devices: checking rules, v1 device cgroup lines, the v2 policy.

cgroup v1 (``devices`` controller): like runc, the cgroup starts from "deny
everything" and the rules are then written in order; a rule for every device
(type ``a``, no numbers, full access) switches the default, any other rule adds or
removes an exception.

cgroup v2 has no device controller: rules are enforced by an eBPF program
(BPF_CGROUP_DEVICE) attached to the cgroup, which flatrun does not build yet.  Until
it does, a v2 manager accepts exactly the rule lists that only *narrow* access
from a deny-all default, i.e. whose last "all devices" rule is a deny and every
later rule is an allow (the shape of every runtime default, runc's and ours);
those are recorded but not enforced -- the container sees only the device nodes
the runtime creates, but could mknod others if it holds CAP_MKNOD.  Anything else
(an explicit deny the user expects to hold, an allow-all default) raises
CgroupError instead of being dropped silently.
"""

from __future__ import annotations

from flatstack.errors import CgroupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

FIELD = "linux.resources.devices"

Rule = tuple[bool, str, int, int, str]  # allow, type, major (-1: any), minor, access


def parse(rules: Any) -> list[Rule]:
    """Check each rule's shape; majors and minors of -1 or None mean "any"."""
    if not isinstance(rules, list):
        raise CgroupError(f"{FIELD}: must be a list of rules")
    parsed = []
    for i, rule in enumerate(rules):
        where = f"{FIELD}[{i}]"
        if not isinstance(rule, dict):
            raise CgroupError(f"{where}: must be an object")
        allow = rule.get("allow")
        if not isinstance(allow, bool):
            raise CgroupError(f"{where}.allow: required, must be true or false")
        kind = rule.get("type") or "a"
        if kind not in ("a", "c", "b", "u", "p"):
            raise CgroupError(f"{where}.type: {kind!r} is not one of a, c, b, u, p")
        if kind in ("u", "p"):
            kind = "c"  # unbuffered character devices and FIFOs: the kernel says c
        numbers = []
        for key in ("major", "minor"):
            value = rule.get(key)
            if value is None:
                value = -1
            if isinstance(value, bool) or not isinstance(value, int) or value < -1:
                raise CgroupError(f"{where}.{key}: must be a device number or -1 (any)")
            numbers.append(value)
        access = rule.get("access") or "rwm"
        if not isinstance(access, str) or not access or set(access) - set("rwm"):
            raise CgroupError(f"{where}.access: {access!r} must be a combination of r, w, m")
        access = "".join(c for c in "rwm" if c in access)
        parsed.append((allow, kind, numbers[0], numbers[1], access))
    return parsed


def _is_everything(rule: Rule) -> bool:
    _allow, kind, major, minor, access = rule
    return kind == "a" and major == -1 and minor == -1 and access == "rwm"


def v1_writes(rules: list[Rule]) -> list[tuple[str, str, int]]:
    """(file, line, rule index) to write, starting from deny-all as runc does."""
    writes = [("devices.deny", "a", -1)]
    for i, rule in enumerate(rules):
        allow, kind, major, minor, access = rule
        name = "devices.allow" if allow else "devices.deny"
        if _is_everything(rule):
            writes.append((name, "a", i))
            continue
        maj = "*" if major == -1 else str(major)
        mnr = "*" if minor == -1 else str(minor)
        # "a" with numbers or partial access is not a kernel type: spell out c and b.
        for k in ("c", "b") if kind == "a" else (kind,):
            writes.append((name, f"{k} {maj}:{mnr} {access}", i))
    return writes


def check_v2(rules: list[Rule]) -> None:
    """Raise unless the rules only narrow a deny-all default (see the module doc)."""
    if not rules:
        return
    last_all = max((i for i, r in enumerate(rules) if _is_everything(r)), default=-1)
    if last_all >= 0 and not rules[last_all][0] and all(r[0] for r in rules[last_all + 1:]):
        return
    if last_all < 0:
        reason = "rules without a leading deny-all"
    elif rules[last_all][0]:
        reason = "an allow-all default"
    else:
        reason = "deny rules after the deny-all"
    raise CgroupError(f"{FIELD}: {reason} cannot be enforced on cgroup v2 without an "
                      "eBPF device program, which flatrun does not implement yet")
