"""The config.json that ``flatrun spec`` writes: runc's example, hardened.

Compared with ``runc spec``: Docker's default capabilities less
``CAP_NET_RAW`` (13) instead of 3 (none inheritable or ambient), flatstack's
seccomp allowlist, a cgroup namespace, pids and memory limits, and podman's
longer list of masked paths.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: Docker's default capability set without CAP_NET_RAW (13), as podman >= 4.4 and
#: Kubernetes' baseline pod security standard: raw and packet sockets let a container
#: spoof ARP/IPv6 router advertisements on a shared bridge and reach AF_PACKET kernel
#: bugs (CVE-2020-14386).  ICMP ping still works through datagram sockets where
#: ``net.ipv4.ping_group_range`` allows it (an engine sets that, as Docker does).
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)
#: runc's list plus /proc/interrupts and /sys/devices/virtual/powercap (as podman and Docker).
MASKED_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
#: A ``userns=True`` spec asks flatrun for a private host id range per container
#: (runtime/userns_pool.py) and an idmapped root filesystem (runtime/idmapped.py).
USERNS_ANNOTATIONS = {"org.flatstack.userns": "auto", "org.flatstack.rootfs.idmap": "true"}
PIDS_LIMIT = 4096
#: A fence, not a size: a memory bomb is OOM-killed inside its cgroup long before the
#: host runs short.  Memory+swap equals it, so the container cannot spill into swap
#: either.  Raise it per container (config or ``flatrun update --memory``).
MEMORY_LIMIT = 1 << 30
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _mounts(rootless: bool) -> list[dict[str, Any]]:
    devpts = ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
    if not rootless:
        devpts.append("gid=5")  # tty; not mapped in a single-id rootless user namespace
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
        # sysfs and cgroupfs cannot be mounted without a network namespace the
        # user namespace owns; bind the host's /sys (with /sys/fs/cgroup) read-only.
        # "ro" alone leaves the submounts (the host's cgroupfs) writable, the hole
        # of CVE-2023-25809; "rro" makes the whole tree read-only.
        mounts.append({"destination": "/sys", "type": "none", "source": "/sys",
                       "options": ["rbind", "nosuid", "noexec", "nodev", "ro", "rro"]})
    else:
        mounts.append({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                       "options": ["nosuid", "noexec", "nodev", "ro"]})
        mounts.append({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                       "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]})
    return mounts


def _mapping(host_id: int, size: int) -> list[dict[str, int]]:
    return [{"containerID": 0, "hostID": host_id, "size": size}]


def default_spec(*, rootless: bool = False, args: list[str] | None = None,
                 userns: bool = False) -> dict[str, Any]:
    """A runtime-spec 1.2 config for ``flatrun spec``, hardened by default.

    Docker's capabilities less CAP_NET_RAW (bounding, effective, permitted),
    no_new_privs, the default seccomp allowlist, masked and read-only /proc
    paths, a pids limit of 4096, a 1 GiB memory limit with no swap, a deny-all
    device rule (the runtime always allows the standard /dev nodes),
    pid/network/ipc/uts/mount/cgroup namespaces.

    ``rootless`` follows ``runc spec --rootless``: a user namespace mapping
    container root to the caller's effective uid/gid (size 1), no network
    namespace, /sys bound from the host instead of sysfs + cgroupfs, no
    ``gid=`` on devpts, no ``linux.resources``.  ``userns`` (ignored when
    rootless) adds a user namespace whose maps flatrun fills in at create time
    with a host id range no other container holds (``org.flatstack.userns:
    auto``), and idmaps the root filesystem onto it so an image unpacked as
    host root is owned by the container's root (``org.flatstack.rootfs.idmap``).
    """
    from flatstack.oci.seccomp_profile import default_profile

    caps = list(DEFAULT_CAPABILITIES)
    kinds = ["pid", "network", "ipc", "uts", "mount", "cgroup"]
    if rootless:
        kinds.remove("network")
    linux: dict[str, Any] = {
        "namespaces": [{"type": kind} for kind in kinds],
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
        "seccomp": default_profile(),
    }
    if rootless:
        linux["namespaces"].append({"type": "user"})
        linux["uidMappings"] = _mapping(os.geteuid(), 1)
        linux["gidMappings"] = _mapping(os.getegid(), 1)
    else:
        linux["resources"] = {"devices": [{"allow": False, "access": "rwm"}],
                              "pids": {"limit": PIDS_LIMIT},
                              "memory": {"limit": MEMORY_LIMIT, "swap": MEMORY_LIMIT}}
        if userns:
            linux["namespaces"].append({"type": "user"})
    spec: dict[str, Any] = {
        "ociVersion": "1.2.0",
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": list(args) if args else ["sh"],
            "env": [DEFAULT_PATH, "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": list(caps),
                             "permitted": list(caps), "inheritable": [], "ambient": []},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "flatrun",
        "mounts": _mounts(rootless),
        "linux": linux,
    }
    if userns and not rootless:
        spec["annotations"] = dict(USERNS_ANNOTATIONS)
    return spec
