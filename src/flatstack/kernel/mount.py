"""mount(2), umount2(2), pivot_root(2) and openat2(2) with RESOLVE_IN_ROOT."""

from __future__ import annotations

import os
import struct

from flatstack.kernel.libc import fsencode, syscall

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25

MNT_FORCE = 1
MNT_DETACH = 2
MNT_EXPIRE = 4
UMOUNT_NOFOLLOW = 8

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    """mount(2); raises KernelError naming the target on failure."""
    syscall("mount", fsencode(source), fsencode(target), fsencode(fstype), flags,
            fsencode(data), detail=f"{source} on {target}")


def umount(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    syscall("umount2", fsencode(target), flags, detail=target)


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2)."""
    syscall("pivot_root", fsencode(new_root), fsencode(put_old), detail=new_root)


_OPEN_HOW = struct.Struct("=3Q")  # struct open_how: flags, mode, resolve


def openat2(dirfd: int, path: str, flags: int, mode: int = 0,
            resolve: int = RESOLVE_IN_ROOT) -> int:
    """openat2(2); by default resolves ``path`` as if ``dirfd`` were ``/``."""
    how = _OPEN_HOW.pack(flags | os.O_CLOEXEC, mode, resolve)
    return syscall("openat2", dirfd, fsencode(path), how, len(how), detail=path)


def fstatfs_type(fd: int) -> int:
    """``f_type`` of the filesystem ``fd`` is on (fstatfs(2))."""
    buf = bytearray(128)  # struct statfs; f_type is the first long
    syscall("fstatfs", fd, buf)
    return int.from_bytes(buf[:8], "little", signed=True)


def fd_path(fd: int) -> str:
    """A path that names what ``fd`` refers to, for calls that take paths."""
    return f"/proc/self/fd/{fd}"


# -- the new mount API (open_tree, mount_setattr, move_mount) ----------------
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x04
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR_IDMAP = 0x100000


# struct mount_attr: attr_set, attr_clr, propagation, userns_fd
_MOUNT_ATTR = struct.Struct("=4Q")


def open_tree(dirfd: int, path: str, flags: int) -> int:
    """open_tree(2): with OPEN_TREE_CLONE, a detached copy of the mount at ``path``."""
    return syscall("open_tree", dirfd, fsencode(path), flags | OPEN_TREE_CLOEXEC, detail=path)


def mount_setattr(dirfd: int, path: str, flags: int, attr_set: int = 0, attr_clr: int = 0,
                  propagation: int = 0, userns_fd: int = 0) -> None:
    """mount_setattr(2): change mount attributes, recursively with AT_RECURSIVE."""
    attr = _MOUNT_ATTR.pack(attr_set, attr_clr, propagation, userns_fd)
    syscall("mount_setattr", dirfd, fsencode(path), flags, attr, len(attr),
            detail=path or fd_path(dirfd))


def move_mount(from_fd: int, from_path: str, to_fd: int, to_path: str, flags: int) -> None:
    """move_mount(2): attach (or move) a mount; fds with *_EMPTY_PATH flags."""
    syscall("move_mount", from_fd, fsencode(from_path), to_fd, fsencode(to_path), flags,
            detail=to_path or fd_path(to_fd))


FSOPEN_CLOEXEC = 1
FSMOUNT_CLOEXEC = 1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6


def fsopen(fstype: str) -> int:
    """fsopen(2): a filesystem context to configure with :func:`fsconfig`."""
    return syscall("fsopen", fsencode(fstype), FSOPEN_CLOEXEC, detail=fstype)


def fsconfig(fs_fd: int, cmd: int, key: str | None = None, value: str | None = None) -> None:
    """fsconfig(2): set one parameter, or (FSCONFIG_CMD_CREATE) create the superblock."""
    syscall("fsconfig", fs_fd, cmd, fsencode(key), fsencode(value), 0,
            detail=f"{key}={value}" if key else "create")


def fsmount(fs_fd: int, attr_flags: int = 0) -> int:
    """fsmount(2): a detached mount of the created superblock."""
    return syscall("fsmount", fs_fd, FSMOUNT_CLOEXEC, attr_flags)
