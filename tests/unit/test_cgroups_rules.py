"""Pure functions of the cgroups package: checks, conversions, device rules, stats."""

from __future__ import annotations

import pytest

from flatstack.errors import CgroupError
from flatstack.runtime.cgroups import _devices, _stats
from flatstack.runtime.cgroups.base import (
    blkio_weight_to_io,
    check_resources,
    shares_to_weight,
    swap_to_v2,
)

DENY_ALL = {"allow": False, "access": "rwm"}


def test_conversions_match_runc() -> None:
    assert [shares_to_weight(s) for s in (0, 2, 1024, 262144)] == [0, 1, 39, 10000]
    assert [blkio_weight_to_io(w) for w in (0, 10, 500, 1000)] == [0, 1, 4950, 10000]


@pytest.mark.parametrize(("swap", "limit", "expected"), [
    (None, None, None), (0, 64, None), (-1, 64, -1), (0, -1, -1), (128, 64, 64), (64, 64, 0),
])
def test_swap_conversion(swap: int | None, limit: int | None, expected: int | None) -> None:
    assert swap_to_v2(swap, limit) == expected


def test_swap_without_limit_is_refused_on_v2() -> None:
    with pytest.raises(CgroupError, match=r"^linux\.resources\.memory\.swap: "):
        swap_to_v2(128, 0)


@pytest.mark.parametrize(("resources", "field"), [
    ({"memory": {"limit": 4096}}, "memory.limit: must be at least 6291456 bytes"),
    ({"memory": {"limit": -2}}, "memory.limit"),
    ({"memory": {"limit": True}}, "memory.limit: must be an integer"),
    ({"memory": {"disableOOMKiller": 1}}, "memory.disableOOMKiller"),
    ({"cpu": {"idle": 2}}, "cpu.idle"),
    ({"cpu": {"cpus": 3}}, "cpu.cpus"),
    ({"blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0}]}},
     "blockIO.throttleReadBpsDevice[0].rate"),
    ({"network": {"priorities": [{"name": "eth0"}]}}, "network.priorities[0].priority"),
    ({"hugepageLimits": [{"limit": 1}]}, "hugepageLimits[0].pageSize"),
    ({"unified": {"cgroup.procs": "1"}}, "unified"),
    ({"unified": {"../x": "1"}}, "unified"),
    ({"rdma": {"mlx": {"hcaHandles": 1}}}, "rdma"),
    ({"memory": []}, "memory: must be an object"),
])
def test_checks_name_the_field(resources: dict[str, object], field: str) -> None:
    with pytest.raises(CgroupError) as info:
        check_resources(resources)
    assert str(info.value).startswith(f"linux.resources.{field}")


def test_valid_resources_pass() -> None:
    check_resources({"memory": {"limit": -1, "swap": -1, "swappiness": 0},
                     "cpu": {"quota": -1, "period": 100000, "shares": 1024, "idle": 0},
                     "pids": {"limit": -1}, "blockIO": {"weight": 0},
                     "unified": {"memory.high": "max"}})


def test_device_rules_to_v1_lines() -> None:
    rules = _devices.parse([
        DENY_ALL,
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "mwr"},
        {"allow": True, "type": "c", "major": 136, "access": "rwm"},
        {"allow": True, "type": "a", "major": 7, "access": "r"},
        {"allow": False, "type": "b", "major": -1, "minor": -1, "access": "w"},
    ])
    assert _devices.v1_writes(rules) == [
        ("devices.deny", "a", -1),
        ("devices.deny", "a", 0),
        ("devices.allow", "c 1:3 rwm", 1),
        ("devices.allow", "c 136:* rwm", 2),
        ("devices.allow", "c 7:* r", 3),
        ("devices.allow", "b 7:* r", 3),
        ("devices.deny", "b *:* w", 4),
    ]


@pytest.mark.parametrize(("rule", "field"), [
    ({"type": "c"}, "[0].allow"),
    ({"allow": True, "type": "z"}, "[0].type"),
    ({"allow": True, "major": "1"}, "[0].major"),
    ({"allow": True, "access": "rx"}, "[0].access"),
])
def test_bad_device_rules(rule: dict[str, object], field: str) -> None:
    with pytest.raises(CgroupError, match=rf"^linux\.resources\.devices\{field}: "):
        _devices.parse([rule])


def test_v2_device_policy() -> None:
    allow_null = {"allow": True, "type": "c", "major": 1, "minor": 3}
    _devices.check_v2([])
    _devices.check_v2(_devices.parse([DENY_ALL, allow_null]))
    _devices.check_v2(_devices.parse([{"allow": True}, DENY_ALL, allow_null]))
    for rules in ([allow_null], [{"allow": True}], [DENY_ALL, allow_null,
                                                   {"allow": False, "type": "c"}]):
        with pytest.raises(CgroupError, match=r"^linux\.resources\.devices: .*eBPF"):
            _devices.check_v2(_devices.parse(rules))


def test_stats_helpers_follow_go_omitempty() -> None:
    assert _stats.memory_entry(5, 0, 0, 0) == {"limit": 5, "failcnt": 0}
    assert _stats.pids_entry(0, 0) == {}
    assert _stats.cpu_usage(0, [], 0, 0) == {"kernel": 0, "user": 0}
    assert _stats.parse_list("0-2,5, 7-7") == [0, 1, 2, 5, 7]
    assert _stats.blkio_entries("8:0 Read 10\n8:0 Write 0\nTotal 10\n") == [
        {"major": 8, "op": "Read", "value": 10}, {"major": 8, "op": "Write"}]
    assert _stats.io_stat_entries("8:16 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0") == {
        "ioServiceBytesRecursive": [
            {"major": 8, "minor": 16, "op": "Read", "value": 1},
            {"major": 8, "minor": 16, "op": "Write", "value": 2}],
        "ioServicedRecursive": [
            {"major": 8, "minor": 16, "op": "Read", "value": 3},
            {"major": 8, "minor": 16, "op": "Write", "value": 4}]}
