"""flatstack.oci.defaults: what ``flatrun spec`` writes."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from flatstack.oci.config import validate_config
from flatstack.oci.defaults import default_spec
from flatstack.oci.seccomp_profile import default_profile

#: Docker's 14 less CAP_NET_RAW (dropped as podman >= 4.4 and Kubernetes' baseline do).
DEFAULT_CAPS = {
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}


def _mount(spec: dict[str, Any], destination: str) -> dict[str, Any] | None:
    return next((m for m in spec["mounts"] if m["destination"] == destination), None)


def _ns(spec: dict[str, Any]) -> list[str]:
    return [n["type"] for n in spec["linux"]["namespaces"]]


@pytest.mark.parametrize("kwargs", [{}, {"rootless": True}, {"userns": True},
                                    {"rootless": True, "userns": True}, {"args": ["id", "-u"]}])
def test_default_spec_is_valid_and_round_trips(kwargs: dict[str, Any]) -> None:
    spec = default_spec(**kwargs)
    validate_config(spec)
    assert json.loads(json.dumps(spec)) == spec


def test_default_spec_is_hardened() -> None:
    spec = default_spec()
    process = spec["process"]
    assert spec["ociVersion"] == "1.2.0"
    assert spec["root"] == {"path": "rootfs", "readonly": True}
    assert spec["hostname"] == "flatrun"
    assert process["args"] == ["sh"]
    assert process["terminal"] is True
    assert process["noNewPrivileges"] is True
    caps = process["capabilities"]
    for key in ("bounding", "effective", "permitted"):
        assert set(caps[key]) == DEFAULT_CAPS and len(caps[key]) == 13
    assert caps["inheritable"] == [] and caps["ambient"] == []
    assert process["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    assert _ns(spec) == ["pid", "network", "ipc", "uts", "mount", "cgroup"]
    linux = spec["linux"]
    assert linux["resources"] == {"devices": [{"allow": False, "access": "rwm"}],
                                  "pids": {"limit": 4096},
                                  "memory": {"limit": 1 << 30, "swap": 1 << 30}}
    assert linux["seccomp"] == default_profile()
    assert {"/proc/kcore", "/proc/interrupts", "/sys/firmware", "/proc/sched_debug",
            "/sys/devices/virtual/powercap"} <= set(linux["maskedPaths"])
    assert linux["readonlyPaths"] == ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                      "/proc/sysrq-trigger"]
    assert "uidMappings" not in linux
    devpts = _mount(spec, "/dev/pts")
    assert devpts is not None
    assert {"newinstance", "ptmxmode=0666", "mode=0620", "gid=5"} <= set(devpts["options"])
    sysfs = _mount(spec, "/sys")
    assert sysfs is not None and sysfs["type"] == "sysfs" and "ro" in sysfs["options"]
    cgroup = _mount(spec, "/sys/fs/cgroup")
    assert cgroup is not None and cgroup["type"] == "cgroup" and "ro" in cgroup["options"]
    for destination in ("/proc", "/dev", "/dev/shm", "/dev/mqueue"):
        assert _mount(spec, destination) is not None


def test_default_spec_copies_are_independent() -> None:
    a, b = default_spec(), default_spec()
    a["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")
    a["mounts"][0]["options"].append("ro")
    assert b == default_spec()
    assert a["process"]["capabilities"]["effective"] == b["process"]["capabilities"]["effective"]


def test_args() -> None:
    args = ["echo", "hi"]
    spec = default_spec(args=args)
    assert spec["process"]["args"] == args and spec["process"]["args"] is not args


def test_rootless_follows_runc() -> None:
    spec = default_spec(rootless=True)
    linux = spec["linux"]
    assert _ns(spec) == ["pid", "ipc", "uts", "mount", "cgroup", "user"]
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
    assert linux["gidMappings"] == [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    assert "resources" not in linux
    assert _mount(spec, "/sys") == {"destination": "/sys", "type": "none", "source": "/sys",
                                    "options": ["rbind", "nosuid", "noexec", "nodev", "ro",
                                                "rro"]}
    assert _mount(spec, "/sys/fs/cgroup") is None
    devpts = _mount(spec, "/dev/pts")
    assert devpts is not None
    assert not any(o.startswith(("gid=", "uid=")) for o in devpts["options"])
    assert spec["process"]["noNewPrivileges"] is True
    assert linux["seccomp"] == default_profile()


def test_userns() -> None:
    spec = default_spec(userns=True)
    linux = spec["linux"]
    assert _ns(spec)[-1] == "user" and "network" in _ns(spec)
    assert "uidMappings" not in linux and "gidMappings" not in linux
    assert spec["annotations"] == {"org.flatstack.userns": "auto",
                                   "org.flatstack.rootfs.idmap": "true"}
    assert linux["resources"]["pids"] == {"limit": 4096}
    assert linux["resources"]["memory"] == {"limit": 1 << 30, "swap": 1 << 30}
    assert _mount(spec, "/sys/fs/cgroup") is not None
