"""kernel/caps.py: the name table, masks, capget/capset, bounding and ambient sets.

State-changing calls run in a forked child so the test process keeps its caps.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from tests._forked import in_child

from flatstack.errors import ConfigError, KernelError
from flatstack.kernel import caps

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def test_table_is_complete_and_consistent() -> None:
    assert caps.CAPABILITIES["CAP_CHOWN"] == 0
    assert caps.CAPABILITIES["CAP_NET_BIND_SERVICE"] == 10
    assert caps.CAPABILITIES["CAP_SYS_ADMIN"] == 21
    assert caps.CAPABILITIES["CAP_CHECKPOINT_RESTORE"] == 40
    assert sorted(caps.CAPABILITIES.values()) == list(range(41))
    assert all(caps.CAP_NAMES[n] == name for name, n in caps.CAPABILITIES.items())


def test_matches_config_table() -> None:
    from flatstack.oci import config

    assert config.CAPABILITIES == caps.CAPABILITIES


def test_masks_round_trip() -> None:
    assert caps.to_mask({0, 10, 40}) == 1 | 1 << 10 | 1 << 40
    assert caps.from_mask(1 | 1 << 10 | 1 << 40) == {0, 10, 40}
    assert caps.to_mask(set()) == 0


def test_last_cap_matches_proc() -> None:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        assert caps.last_cap() == int(f.read())


def test_last_cap_probe_without_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = caps.last_cap()
    monkeypatch.setattr(caps, "_last_cap", None)
    import builtins

    real_open = builtins.open

    def no_proc(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path).startswith("/proc/sys"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_proc)
    assert caps.last_cap() == expected


def test_names_to_mask() -> None:
    assert caps.names_to_mask(["CAP_KILL", "CAP_CHOWN", "CAP_KILL"], "x") == {5, 0}
    assert caps.names_to_mask([], "x") == set()


@pytest.mark.parametrize("names, index, bad", [
    (["CAP_KILL", "CAP_NOPE"], 1, "CAP_NOPE"),
    (["kill"], 0, "kill"),
    (["cap_kill"], 0, "cap_kill"),
])
def test_names_to_mask_unknown(names: list[str], index: int, bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        caps.names_to_mask(names, "process.capabilities.bounding")
    assert info.value.field == f"process.capabilities.bounding[{index}]"
    assert info.value.reason == f'unknown capability "{bad}"'


def test_names_beyond_kernel_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(caps, "_last_cap", 38)
    assert caps.names_to_mask(["CAP_BPF", "CAP_PERFMON", "CAP_CHECKPOINT_RESTORE"], "x") == {38}


def test_capget_and_current_agree() -> None:
    eff, prm, inh = caps.capget()
    sets = caps.current()
    assert set(sets) == {"effective", "permitted", "inheritable", "bounding", "ambient"}
    assert sets["effective"] == caps.from_mask(eff)
    assert sets["permitted"] == caps.from_mask(prm)
    assert sets["inheritable"] == caps.from_mask(inh)
    assert sets["bounding"] == caps.bounding()


@root_only
def test_drop_bounding_keeps_exactly_the_kept() -> None:
    keep = {caps.CAPABILITIES["CAP_CHOWN"], caps.CAPABILITIES["CAP_SETPCAP"]}

    def child() -> Any:
        caps.drop_bounding(keep)
        # Dropping again (now mostly absent caps) must be harmless.
        caps.drop_bounding(keep)
        return sorted(caps.current()["bounding"])

    assert in_child(child) == {"ok": sorted(keep & caps.bounding())}


@root_only
def test_drop_bounding_ignores_absent_caps() -> None:
    host = caps.bounding()
    absent = set(range(caps.last_cap() + 1)) - host

    def child() -> Any:
        caps.drop_bounding(host | absent)  # keeping absent caps cannot add them
        return sorted(caps.bounding())

    assert in_child(child) == {"ok": sorted(host)}


@root_only
def test_set_caps_and_ambient() -> None:
    net = caps.CAPABILITIES["CAP_NET_BIND_SERVICE"]
    kill = caps.CAPABILITIES["CAP_KILL"]

    def child() -> Any:
        caps.set_caps({net}, {net, kill}, {net})
        caps.clear_ambient()
        caps.raise_ambient({net})
        return {k: sorted(v) for k, v in caps.current().items()}

    result = in_child(child)["ok"]
    assert result["effective"] == [net]
    assert result["permitted"] == sorted([net, kill])
    assert result["inheritable"] == [net]
    assert result["ambient"] == [net]


@root_only
def test_raise_ambient_needs_inheritable() -> None:
    kill = caps.CAPABILITIES["CAP_KILL"]

    def child() -> Any:
        caps.set_caps({kill}, {kill}, set())
        caps.raise_ambient({kill})

    result = in_child(child)
    assert result["error"] == KernelError.__name__
    assert "PR_CAP_AMBIENT_RAISE CAP_KILL" in result["message"]


@root_only
def test_capset_cannot_raise_permitted() -> None:
    kill = caps.CAPABILITIES["CAP_KILL"]
    chown = caps.CAPABILITIES["CAP_CHOWN"]

    def child() -> Any:
        caps.set_caps(set(), {kill}, set())
        caps.set_caps(set(), {kill, chown}, set())

    result = in_child(child)
    assert result["error"] == KernelError.__name__
    assert result["message"].startswith("capset")
