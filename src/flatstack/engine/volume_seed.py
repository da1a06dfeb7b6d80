"""Seed a new named volume from the image: what docker and podman do on first use.

When a named volume is created for a container and the image has a non-empty
directory at the mount destination, that directory's content is copied into the
volume (owners, modes, symlinks, FIFOs; not device nodes or xattrs), and the
volume's root takes the directory's owner and mode. The source is the container's
merged root before the container starts, read with ``openat2(RESOLVE_IN_ROOT)`` and
``O_NOFOLLOW`` throughout, so no symlink in the image can point the copy at a host
file. The merged root shows image files under the container's host id range
(``shift``); the volume stores container-neutral ids, like an image layer, so ids
are shifted back (an id outside the range becomes 65534, nobody).
"""

from __future__ import annotations

import errno
import os
import stat

from flatstack.errors import FlatstackError, KernelError

NOBODY = 65534
_COPY_CHUNK = 1 << 20


def seed_volume(data: str, merged: str, destination: str, shift: int, size: int) -> int:
    """Copy ``merged``'s ``destination`` into the empty volume ``data``; returns the
    number of entries copied (0 when the image has nothing there)."""
    from flatstack.kernel import mount as km

    root = os.open(merged, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            src = km.openat2(root, destination,
                             os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                             resolve=km.RESOLVE_IN_ROOT | km.RESOLVE_NO_MAGICLINKS)
        except KernelError as err:
            if err.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return 0  # nothing (or not a directory) in the image: an empty volume
            raise
    finally:
        os.close(root)
    dst = os.open(data, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if os.listdir(dst):
            return 0  # only a new, empty volume is seeded
        copier = _Copier(shift, size)
        count = copier.tree(src, dst)
        copier.own(os.fstat(src), dst)
        return count
    except OSError as err:
        raise FlatstackError(f"seeding volume from the image's {destination}: "
                             f"{os.strerror(err.errno or 0).lower()}") from None
    finally:
        os.close(src)
        os.close(dst)


class _Copier:
    def __init__(self, shift: int, size: int) -> None:
        self.shift, self.size = shift, size

    def _unshift(self, host_id: int) -> int:
        inside = host_id - self.shift
        return inside if 0 <= inside < self.size else NOBODY

    def own(self, st: os.stat_result, fd: int) -> None:
        """Owner, then mode (chown clears setuid bits), of the entry open at ``fd``."""
        os.fchown(fd, self._unshift(st.st_uid), self._unshift(st.st_gid))
        os.fchmod(fd, stat.S_IMODE(st.st_mode))

    def tree(self, src: int, dst: int) -> int:
        count = 0
        for entry in os.scandir(src):
            st = entry.stat(follow_symlinks=False)
            name = entry.name
            if stat.S_ISDIR(st.st_mode):
                os.mkdir(name, 0o700, dir_fd=dst)
                child_src = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                    | os.O_CLOEXEC, dir_fd=src)
                child_dst = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                    | os.O_CLOEXEC, dir_fd=dst)
                try:
                    count += self.tree(child_src, child_dst)
                    self.own(st, child_dst)
                finally:
                    os.close(child_src)
                    os.close(child_dst)
            elif stat.S_ISREG(st.st_mode):
                self._file(src, dst, name, st)
            elif stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(name, dir_fd=src), name, dir_fd=dst)
                os.chown(name, self._unshift(st.st_uid), self._unshift(st.st_gid),
                         dir_fd=dst, follow_symlinks=False)
            elif stat.S_ISFIFO(st.st_mode):
                os.mkfifo(name, 0o600, dir_fd=dst)
                fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW
                             | os.O_CLOEXEC, dir_fd=dst)
                try:
                    self.own(st, fd)
                finally:
                    os.close(fd)
            else:
                continue  # device nodes and sockets are not copied (as podman)
            count += 1
        return count

    def _file(self, src: int, dst: int, name: str, st: os.stat_result) -> None:
        ifd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src)
        try:
            ofd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                          | os.O_CLOEXEC, 0o600, dir_fd=dst)
            try:
                left = st.st_size
                while left > 0:
                    done = os.sendfile(ofd, ifd, None, min(left, _COPY_CHUNK))
                    if done == 0:
                        break
                    left -= done
                self.own(st, ofd)
                os.utime(ofd, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(ofd)
        finally:
            os.close(ifd)
