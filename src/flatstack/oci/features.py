"""The runtime-spec features document that ``flatrun features`` prints.

Shape: runtime-spec 1.2 ``features.md`` and ``features-linux.md``.  The
document describes what this build of flatrun implements, not what the host
offers; the one probe is the kernel's Landlock ABI (one syscall), advertised as
``org.flatstack.landlock`` the way runc advertises its libseccomp version.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

OCI_VERSION_MIN = "1.0.0"
OCI_VERSION_MAX = "1.2.0"
#: rootfs applies mount uidMappings/gidMappings (idmap, ridmap): runtime/idmapped.py.
IDMAP_MOUNTS = True


def features() -> dict[str, Any]:
    """The features document as a dict (JSON-serialisable)."""
    from flatstack import __version__
    from flatstack.oci.config import (
        CAPABILITIES,
        HOOK_KINDS,
        MOUNT_FLAGS,
        NAMESPACE_TYPES,
        PROPAGATION_FLAGS,
        RECURSIVE_ATTRS,
    )
    from flatstack.runtime import seccomp

    options = set(MOUNT_FLAGS) | set(PROPAGATION_FLAGS) | set(RECURSIVE_ATTRS)
    if not IDMAP_MOUNTS:
        options -= {"idmap", "ridmap"}
    # NEW_LISTENER is implied by SCMP_ACT_NOTIFY, never named in linux.seccomp.flags.
    flags = sorted(f for f in seccomp.FLAGS if f != "SECCOMP_FILTER_FLAG_NEW_LISTENER")
    return {
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": OCI_VERSION_MAX,
        "hooks": list(HOOK_KINDS),
        "mountOptions": sorted(options),
        "linux": {
            "namespaces": sorted(NAMESPACE_TYPES),
            "capabilities": sorted(CAPABILITIES, key=CAPABILITIES.__getitem__),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False,
                       "rdma": False},
            "seccomp": {
                "enabled": True,
                "actions": sorted(seccomp.ACTIONS),
                "operators": sorted(seccomp.OPERATORS),
                "archs": sorted(seccomp.ARCHES),
                "knownFlags": flags,
                "supportedFlags": list(flags),
            },
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": IDMAP_MOUNTS}},
        },
        "annotations": {"org.flatstack.runtime.version": __version__,
                        "org.flatstack.userns": "auto, auto:size=N",
                        "org.flatstack.rootfs.idmap": "true, false",
                        "org.flatstack.landlock": str(_landlock_abi())},
        "potentiallyUnsafeConfigAnnotations": [],
    }


def _landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when the kernel has no (enabled) Landlock."""
    from flatstack.errors import FlatstackError
    from flatstack.runtime.landlock import abi_version

    try:
        return abi_version()
    except FlatstackError:
        return 0
