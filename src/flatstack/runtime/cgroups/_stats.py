"""runc's ``events --stats`` data (``types.Stats`` in runc's types/events.go).

Go's ``omitempty`` drops zero numbers, empty strings, lists and maps but never a
nested struct; these helpers reproduce that so the JSON matches runc's field by
field.  (runc 1.2's ``memory.event_count`` is not produced.)
"""

from __future__ import annotations

from flatstack.runtime.cgroups import _fs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_UINT64 = (1 << 64) - 1


def omit(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    """Drop the ``omitempty`` keys whose value is zero or empty."""
    for key in keys:
        if not data.get(key):
            data.pop(key, None)
    return data


def empty() -> dict[str, Any]:
    """Every section present, as runc prints a container without that controller."""
    return {
        "cpu": {"usage": {"kernel": 0, "user": 0}, "throttling": {}},
        "cpuset": cpuset_entry({}),
        "memory": {"usage": memory_entry(), "swap": memory_entry(),
                   "kernel": memory_entry(), "kernelTCP": memory_entry()},
        "pids": {},
        "blkio": {},
        "hugetlb": {},
        "intel_rdt": {},
        "network_interfaces": None,
    }


def cpu_usage(total: int, percpu: list[int], kernel: int, user: int,
              percpu_kernel: list[int] | None = None,
              percpu_user: list[int] | None = None) -> dict[str, Any]:
    return omit({"total": total, "percpu": percpu, "percpu_kernel": percpu_kernel,
                 "percpu_user": percpu_user, "kernel": kernel, "user": user},
                "total", "percpu", "percpu_kernel", "percpu_user")


def throttling(periods: int, throttled: int, time_ns: int) -> dict[str, Any]:
    return omit({"periods": periods, "throttledPeriods": throttled,
                 "throttledTime": time_ns}, "periods", "throttledPeriods", "throttledTime")


def memory_entry(limit: int = 0, usage: int = 0, peak: int = 0,
                 failcnt: int = 0) -> dict[str, Any]:
    return omit({"limit": limit, "usage": usage, "max": peak, "failcnt": failcnt},
                "usage", "max")


def pids_entry(current: int, limit: int) -> dict[str, Any]:
    return omit({"current": current, "limit": limit}, "current", "limit")


def hugetlb_entry(usage: int, peak: int, failcnt: int) -> dict[str, Any]:
    return omit({"usage": usage, "max": peak, "failcnt": failcnt}, "usage", "max")


def cpuset_entry(files: dict[str, str]) -> dict[str, Any]:
    """cpuset.* file contents (v1 names) as runc's CPUSet."""
    def n(key: str) -> int:
        try:
            return int(files.get(key) or 0)
        except ValueError:
            return 0
    return omit({
        "cpus": parse_list(files.get("cpus", "")),
        "cpu_exclusive": n("cpu_exclusive"),
        "mems": parse_list(files.get("mems", "")),
        "mem_hardwall": n("mem_hardwall"),
        "mem_exclusive": n("mem_exclusive"),
        "memory_migrate": n("memory_migrate"),
        "memory_spread_page": n("memory_spread_page"),
        "memory_spread_slab": n("memory_spread_slab"),
        "memory_pressure": n("memory_pressure"),
        "sched_load_balance": n("sched_load_balance"),
        "sched_relax_domain_level": n("sched_relax_domain_level"),
    }, "cpus", "mems")


def parse_list(text: str) -> list[int]:
    """A kernel list such as ``0-3,6`` as numbers."""
    result: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low, _, high = part.partition("-")
        try:
            result.extend(range(int(low), int(high or low) + 1))
        except ValueError:
            continue
    return result


def blkio_entries(text: str | None) -> list[dict[str, Any]]:
    """``MAJ:MIN Op value`` lines (v1 blkio files) as BlkioEntry objects."""
    entries = []
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) != 3 or ":" not in parts[0]:
            continue
        major, _, minor = parts[0].partition(":")
        entries.append(omit({"major": int(major), "minor": int(minor), "op": parts[1],
                             "value": int(parts[2])}, "major", "minor", "op", "value"))
    return entries


def io_stat_entries(text: str | None) -> dict[str, list[dict[str, Any]]]:
    """v2 ``io.stat`` as runc reports it: bytes and operations per device."""
    result: dict[str, list[dict[str, Any]]] = {}
    names = {"rbytes": ("ioServiceBytesRecursive", "Read"),
             "wbytes": ("ioServiceBytesRecursive", "Write"),
             "rios": ("ioServicedRecursive", "Read"),
             "wios": ("ioServicedRecursive", "Write")}
    for line in (text or "").splitlines():
        parts = line.split()
        if not parts or ":" not in parts[0]:
            continue
        major, _, minor = parts[0].partition(":")
        for item in parts[1:]:
            key, _, value = item.partition("=")
            if key in names:
                group, op = names[key]
                result.setdefault(group, []).append(omit(
                    {"major": int(major), "minor": int(minor), "op": op, "value": int(value)},
                    "major", "minor", "op", "value"))
    return result


def psi(directory: str, name: str) -> dict[str, Any] | None:
    """A v2 ``*.pressure`` file as runc's PSIStats, or None without one."""
    text = _fs.read(directory, name)
    if not text:
        return None
    result: dict[str, Any] = {}
    for line in text.splitlines():
        kind, *fields = line.split()
        data: dict[str, Any] = {"avg10": 0.0, "avg60": 0.0, "avg300": 0.0, "total": 0}
        for item in fields:
            key, _, value = item.partition("=")
            if key in data:
                data[key] = int(value) if key == "total" else float(value)
        result[kind] = data
    return result
