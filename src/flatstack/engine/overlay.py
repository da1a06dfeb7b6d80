"""Container root filesystems: overlayfs over shared read-only image layers.

Each container gets ``<dir>/upper`` (its private changes), ``<dir>/work``
(overlayfs' scratch) and ``<dir>/merged`` (the mount); the lower layers are the
image's unpacked layer directories, shared read-only by every container of the
image. Layers are added one by one with the new mount API (``fsconfig``
``lowerdir+``, Linux 6.8+), so an image's layer count is not limited by the
page-sized ``lowerdir=a:b:c`` option string; older kernels get that string.
"""

from __future__ import annotations

import os
import shutil

from flatstack.errors import FlatstackError, KernelError
from flatstack.kernel import mount as m
from flatstack.runtime.idmapped import UsernsCache

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_AT_FDCWD = -100


def mount_rootfs(lowers: list[str], container_dir: str,
                 id_maps: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None = None
                 ) -> str:
    """Mount the overlay for a container; ``lowers`` top layer first. Returns merged.

    With ``id_maps`` (the container's uid and gid maps) every lower layer is first
    given an idmapped mount onto those maps (overlayfs accepts idmapped layers, not
    an idmapped overlay mount), so the image's root-owned files belong to the
    container's root; the upper directory is not idmapped (an overlay over an
    idmapped upper comes up read-only) but owned by the container's root, so what
    the container writes is stored under its own host ids.
    """
    if not lowers:
        raise FlatstackError("overlay: an image needs at least one layer")
    for layer in lowers:
        if not os.path.isdir(layer):
            raise FlatstackError(f"overlay: layer {layer} is not a directory")
    diff = os.path.join(container_dir, "diff")
    merged = os.path.join(container_dir, "merged")
    for path in (os.path.join(diff, "upper"), os.path.join(diff, "work"), merged):
        os.makedirs(path, mode=0o755, exist_ok=True)
    upper, work = os.path.join(diff, "upper"), os.path.join(diff, "work")
    if id_maps is not None:
        lowers = _idmapped_layers(lowers, container_dir, id_maps)
        os.chown(upper, _host_id(id_maps[0], 0), _host_id(id_maps[1], 0))
    try:
        _mount_new_api(lowers, upper, work, merged)
    except KernelError as err:
        if err.errno not in (22, 38):  # EINVAL: no lowerdir+; ENOSYS: no fsopen
            raise FlatstackError(f"overlay: mounting {merged}: "
                                 f"{os.strerror(err.errno).lower()}") from None
        _mount_classic(lowers, upper, work, merged)
    return merged


def _host_id(maps: list[dict[str, Any]], inside: int) -> int:
    for entry in maps:
        if entry["containerID"] <= inside < entry["containerID"] + entry["size"]:
            return entry["hostID"] + inside - entry["containerID"]
    raise FlatstackError(f"overlay: id maps do not map container id {inside}")


#: The mapping namespaces of this process's overlays (the daemon reuses id ranges).
_USERNSES = UsernsCache()


def _idmapped_layers(lowers: list[str], container_dir: str,
                     id_maps: tuple[list[dict[str, Any]], list[dict[str, Any]]]
                     ) -> list[str]:
    from flatstack.runtime.idmapped import attach_at, idmapped_tree

    userns = _USERNSES.get(id_maps[0], id_maps[1], "overlay: id maps")
    mapped_root = os.path.join(container_dir, "mapped")
    mapped: list[str] = []
    try:
        for index, source in enumerate(lowers):
            target = os.path.join(mapped_root, str(index))
            os.makedirs(target, mode=0o755, exist_ok=True)
            tree = idmapped_tree(source, userns, recursive=False, field=f"overlay: {source}")
            try:
                attach_at(tree, target)
            finally:
                os.close(tree)
            mapped.append(target)
    except BaseException:
        _unmount_mapped(container_dir)
        raise
    finally:
        os.close(userns)
    return mapped


def _unmount_mapped(container_dir: str) -> None:
    mapped_root = os.path.join(container_dir, "mapped")
    if not os.path.isdir(mapped_root):
        return
    for name in os.listdir(mapped_root):
        _umount_if_mounted(os.path.join(mapped_root, name))
    shutil.rmtree(mapped_root, ignore_errors=True)


def _umount_if_mounted(path: str) -> None:
    """Detach the mount at ``path``; a bind mount of the same filesystem fools
    os.path.ismount, so ask the kernel and take EINVAL as "not a mount point"."""
    try:
        m.umount(path, m.MNT_DETACH | m.UMOUNT_NOFOLLOW)
    except KernelError as err:
        if err.errno not in (22, 2):  # EINVAL: not mounted; ENOENT: gone
            raise FlatstackError(f"overlay: unmounting {path}: "
                                 f"{os.strerror(err.errno).lower()}") from None


def _mount_new_api(lowers: list[str], upper: str, work: str, merged: str) -> None:
    fs = m.fsopen("overlay")
    try:
        for layer in lowers:
            m.fsconfig(fs, m.FSCONFIG_SET_STRING, "lowerdir+", layer)
        m.fsconfig(fs, m.FSCONFIG_SET_STRING, "upperdir", upper)
        m.fsconfig(fs, m.FSCONFIG_SET_STRING, "workdir", work)
        m.fsconfig(fs, m.FSCONFIG_SET_STRING, "index", "off")
        m.fsconfig(fs, m.FSCONFIG_CMD_CREATE)
        tree = m.fsmount(fs)
    finally:
        os.close(fs)
    try:
        m.move_mount(tree, "", _AT_FDCWD, merged, m.MOVE_MOUNT_F_EMPTY_PATH)
    finally:
        os.close(tree)


def _mount_classic(lowers: list[str], upper: str, work: str, merged: str) -> None:
    for layer in lowers:
        if any(c in layer for c in ",:\\"):
            raise FlatstackError(f"overlay: layer path {layer} has a character the "
                                 "lowerdir option cannot carry")
    data = f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work},index=off"
    if len(data) >= 4096:
        raise FlatstackError(f"overlay: {len(lowers)} layers do not fit in one mount option "
                             "on this kernel (needs Linux 6.8 for lowerdir+)")
    m.mount("overlay", merged, "overlay", 0, data)


def unmount_rootfs(container_dir: str, *, remove: bool = True) -> None:
    """Unmount the container's overlay (if mounted) and, with ``remove``, drop its
    upper and work directories. Idempotent."""
    _umount_if_mounted(os.path.join(container_dir, "merged"))
    _unmount_mapped(container_dir)
    if remove:
        for name in ("merged", "diff"):
            shutil.rmtree(os.path.join(container_dir, name), ignore_errors=True)
