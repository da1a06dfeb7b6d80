"""The runtime-spec features document (``flatrun features``)."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def features() -> dict[str, Any]:
    """What this flatrun build supports, in the runtime-spec features.md shape."""
    from flatstack import __version__
    from flatstack.kernel.caps import CAPABILITIES
    from flatstack.oci.config import HOOK_KINDS, MOUNT_FLAGS, NAMESPACE_TYPES, PROPAGATION_FLAGS
    from flatstack.runtime.seccomp import ACTIONS, ARCHES, FLAGS, OPERATORS

    mount_options = sorted(set(MOUNT_FLAGS) | set(PROPAGATION_FLAGS) | {"tmpcopyup"})
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": list(HOOK_KINDS),
        "mountOptions": mount_options,
        "linux": {
            "namespaces": list(NAMESPACE_TYPES),
            "capabilities": sorted(CAPABILITIES, key=CAPABILITIES.__getitem__),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False,
                       "rdma": False},
            "seccomp": {
                "enabled": os.path.exists("/proc/self/status"),
                "actions": sorted(ACTIONS),
                "operators": sorted(OPERATORS),
                "archs": sorted(ARCHES),
                "knownFlags": sorted(FLAGS),
                "supportedFlags": sorted(f for f in FLAGS
                                         if f != "SECCOMP_FILTER_FLAG_NEW_LISTENER"),
            },
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        "annotations": {
            "org.flatstack.runtime.version": __version__,
            "org.flatstack.cgroup.driver": "cgroupfs (--systemd-cgroup is accepted and "
                                           "mapped onto cgroupfs paths)",
        },
        "potentiallyUnsafeConfigAnnotations": [],
    }
