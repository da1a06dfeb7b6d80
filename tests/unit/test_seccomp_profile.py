"""oci/seccomp_profile.py: the default profile's shape and what it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from flatstack.oci import seccomp_profile as sp


def allowed_unconditionally(profile: dict[str, Any]) -> set[str]:
    return {name for rule in profile["syscalls"]
            if rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("args")
            for name in rule["names"]}


def test_shape() -> None:
    profile = sp.default_profile("x86_64")
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert profile["defaultErrnoRet"] == 1
    assert profile["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert sp.default_profile("aarch64")["architectures"] == ["SCMP_ARCH_AARCH64",
                                                              "SCMP_ARCH_ARM"]
    assert sp.default_profile("arm64") == sp.default_profile("aarch64")
    assert "set_tls" in allowed_unconditionally(sp.default_profile("aarch64"))
    assert "set_tls" not in allowed_unconditionally(profile)
    assert "arch_prctl" in allowed_unconditionally(profile)


@pytest.mark.parametrize("machine", ["x86_64", "aarch64", "s390x"])
def test_blocked_syscalls_are_never_allowed(machine: str) -> None:
    profile = sp.default_profile(machine)
    named = {name for rule in profile["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW"
             for name in rule["names"]}
    for group, (names, _) in sp.BLOCKED.items():
        assert not named & set(names), group


def test_docker_capability_gated_syscalls_are_blocked() -> None:
    allowed = allowed_unconditionally(sp.default_profile("x86_64"))
    for name in ("keyctl", "add_key", "request_key", "bpf", "perf_event_open", "mount",
                 "umount2", "pivot_root", "unshare", "setns", "kexec_load", "kexec_file_load",
                 "init_module", "finit_module", "delete_module", "open_by_handle_at", "ptrace",
                 "clone", "clone3", "personality", "socket", "io_uring_setup", "userfaultfd",
                 "syslog", "reboot", "swapon", "settimeofday", "mbind", "fsopen", "open_tree"):
        assert name not in allowed, name


def test_conditional_rules() -> None:
    rules = sp.default_profile("x86_64")["syscalls"]
    clone = next(r for r in rules if r["names"] == ["clone"])
    assert clone["args"] == [{"index": 0, "value": 0x7E020000, "valueTwo": 0,
                              "op": "SCMP_CMP_MASKED_EQ"}]
    s390_clone = next(r for r in sp.default_profile("s390x")["syscalls"]
                      if r["names"] == ["clone"])
    assert s390_clone["args"][0]["index"] == 1
    clone3 = next(r for r in rules if r["names"] == ["clone3"])
    assert (clone3["action"], clone3["errnoRet"]) == ("SCMP_ACT_ERRNO", 38)
    socket = next(r for r in rules if r["names"] == ["socket"])
    assert socket["args"] == [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]
    persona = sorted(r["args"][0]["value"] for r in rules if r["names"] == ["personality"])
    assert persona == [0, 8, 0x20000, 0x20008, 0xFFFFFFFF]


def test_describe_default() -> None:
    text = sp.describe_default()
    for word in ("keyctl", "ptrace", "unshare", "open_by_handle_at", "clone3", "io_uring_setup"):
        assert word in text
