"""The default config.json that ``flatrun spec`` writes: hardened by default."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: Docker's default capability set (14): nothing beyond it.
DEFAULT_CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]

MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/proc/interrupts", "/sys/firmware", "/sys/devices/virtual/powercap",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

USERNS_HOST_ID = 100000
USERNS_SIZE = 65536


def _mounts(rootless: bool) -> list[dict[str, Any]]:
    devpts = ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
    if not rootless:
        devpts.append("gid=5")
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": devpts},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
    ]
    if rootless:
        mounts.append({"destination": "/sys", "type": "none", "source": "/sys",
                       "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
    else:
        mounts.append({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                       "options": ["nosuid", "noexec", "nodev", "ro"]})
        mounts.append({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                       "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]})
    return mounts


def default_spec(*, rootless: bool = False, args: list[str] | None = None,
                 userns: bool = False, seccomp: bool = True) -> dict[str, Any]:
    """A runtime-spec config: Docker's 14 capabilities, no_new_privs, seccomp
    allowlist, masked and read-only /proc paths, pids limit, cgroup namespace.

    ``userns`` adds a user namespace mapping container ids 0-65535 to host ids
    100000-165535; ``rootless`` maps container root to the calling user, as
    ``runc spec --rootless`` does.
    """
    caps = list(DEFAULT_CAPABILITIES)
    namespaces = [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")]
    linux: dict[str, Any] = {
        "resources": {"devices": [{"allow": False, "access": "rwm"}],
                      "pids": {"limit": 4096}},
        "namespaces": namespaces,
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
    }
    if userns or rootless:
        namespaces.append({"type": "user"})
        if rootless:
            uid, gid = os.geteuid(), os.getegid()
            linux["uidMappings"] = [{"containerID": 0, "hostID": uid, "size": 1}]
            linux["gidMappings"] = [{"containerID": 0, "hostID": gid, "size": 1}]
        else:
            linux["uidMappings"] = [{"containerID": 0, "hostID": USERNS_HOST_ID,
                                     "size": USERNS_SIZE}]
            linux["gidMappings"] = [{"containerID": 0, "hostID": USERNS_HOST_ID,
                                     "size": USERNS_SIZE}]
    if rootless:
        del linux["resources"]
    if seccomp:
        from flatstack.oci.seccomp_profile import default_profile

        linux["seccomp"] = default_profile()
    return {
        "ociVersion": "1.2.0",
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": list(args) if args else ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": list(caps),
                             "permitted": list(caps)},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "flatrun",
        "mounts": _mounts(rootless),
        "linux": linux,
    }
