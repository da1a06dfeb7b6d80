"""Mounts a container without a mount namespace leaves in the runtime's own.

The spec lets a config leave ``mount`` out of ``linux.namespaces``: the container then
inherits the runtime's mount namespace, and its ``mounts``, devices, masked and
read-only paths are made there, under the rootfs (runc and crun do the same, and leave
them behind).  flatrun records which mounts were already under the rootfs before
``create``; ``delete`` (or a failed ``create``) detaches every later one, deepest first.
"""

import os

from flatstack._fastos import unescape_mountinfo
from flatstack.errors import KernelError
from flatstack.kernel import mount as m


def mounts_under(root: str) -> list[tuple[int, str]]:
    """(mount id, mount point) of ``root`` and everything mounted below it."""
    root = os.path.realpath(root)
    prefix = root.rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo", errors="surrogateescape") as info:
        for line in info:
            fields = line.split(" ", 5)
            point = unescape_mountinfo(fields[4])
            if point == root or point.startswith(prefix):
                found.append((int(fields[0]), point))
    return found


def snapshot(root: str) -> list[int]:
    """The ids of the mounts under ``root`` now: the ones ``release`` must keep."""
    return [mount_id for mount_id, _ in mounts_under(root)]


def release(root: str, keep: list[int]) -> None:
    """Detach every mount under ``root`` that is not in ``keep``, deepest first.

    Each mount point is opened and its mount id checked before the detach, so a mount
    that is not one of the container's (uncovered by an earlier detach) is never hit.
    """
    kept = set(keep)
    made = [(point, mount_id) for mount_id, point in mounts_under(root)
            if mount_id not in kept]
    # Deepest mount points first; among stacked mounts on one point, the newest first.
    for point, mount_id in sorted(made, key=lambda item: (item[0].count("/"), item[1]),
                                  reverse=True):
        try:
            fd = os.open(point, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if _mount_id(fd) == mount_id:
                m.umount(f"/proc/self/fd/{fd}", m.MNT_DETACH)
        except (OSError, KernelError):
            pass  # gone already, with a parent detached before it
        finally:
            os.close(fd)


def _mount_id(fd: int) -> int:
    with open(f"/proc/self/fdinfo/{fd}") as info:
        for line in info:
            if line.startswith("mnt_id:"):
                return int(line.split()[1])
    return -1
