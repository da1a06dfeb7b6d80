"""flatstack.oci.features: the runtime-spec features document."""

from __future__ import annotations

import json

from flatstack.oci.config import CAPABILITIES
from flatstack.oci.features import features


def test_top_level_keys() -> None:
    doc = features()
    assert set(doc) == {"ociVersionMin", "ociVersionMax", "hooks", "mountOptions", "linux",
                        "annotations", "potentiallyUnsafeConfigAnnotations"}
    assert (doc["ociVersionMin"], doc["ociVersionMax"]) == ("1.0.0", "1.2.0")
    assert doc["hooks"] == ["prestart", "createRuntime", "createContainer", "startContainer",
                            "poststart", "poststop"]
    assert doc["potentiallyUnsafeConfigAnnotations"] == []
    assert all(k.startswith("org.flatstack.") and isinstance(v, str)
               for k, v in doc["annotations"].items())
    assert json.loads(json.dumps(doc)) == doc


def test_mount_options() -> None:
    options = features()["mountOptions"]
    assert options == sorted(set(options))
    assert {"ro", "rw", "bind", "rbind", "nosymfollow", "rprivate", "rslave", "rro",
            "rnosuid", "defaults"} <= set(options)
    assert "idmap" in options and "ridmap" in options
    assert features()["linux"]["mountExtensions"] == {"idmap": {"enabled": True}}
    assert not any("=" in o for o in options)  # no filesystem-specific data options


def test_linux_section() -> None:
    linux = features()["linux"]
    assert set(linux) == {"namespaces", "capabilities", "cgroup", "seccomp", "apparmor",
                          "selinux", "intelRdt", "mountExtensions"}
    assert linux["namespaces"] == ["cgroup", "ipc", "mount", "network", "pid", "time", "user",
                                   "uts"]
    assert linux["capabilities"][0] == "CAP_CHOWN"
    assert linux["capabilities"][-1] == "CAP_CHECKPOINT_RESTORE"
    assert len(linux["capabilities"]) == len(CAPABILITIES) == 41
    assert linux["cgroup"] == {"v1": True, "v2": True, "systemd": False, "systemdUser": False,
                               "rdma": False}
    seccomp = linux["seccomp"]
    assert set(seccomp) == {"enabled", "actions", "operators", "archs", "knownFlags",
                            "supportedFlags"}
    assert seccomp["enabled"] is True
    assert {"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL_PROCESS"} <= set(
        seccomp["actions"])
    assert "SCMP_CMP_MASKED_EQ" in seccomp["operators"]
    assert {"SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"} <= set(seccomp["archs"])
    assert "SECCOMP_FILTER_FLAG_LOG" in seccomp["knownFlags"]
    assert "SECCOMP_FILTER_FLAG_NEW_LISTENER" not in seccomp["knownFlags"]
    assert set(seccomp["supportedFlags"]) <= set(seccomp["knownFlags"])
    assert linux["apparmor"] == linux["selinux"] == linux["intelRdt"] == {"enabled": False}
    assert linux["mountExtensions"] == {"idmap": {"enabled": True}}
