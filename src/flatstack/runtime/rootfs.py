"""The container's root filesystem: mounts, devices, pivot_root, masks.

Every path inside the container root is resolved with ``openat2`` and
``RESOLVE_IN_ROOT`` and mounted through ``/proc/self/fd/N``, so a symlink in
the image can never point a mount at the host.
"""

from __future__ import annotations

import errno
import os
import stat

from flatstack.errors import FlatstackError, KernelError
from flatstack.kernel import mount as m

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: runc's default devices: (path, type, major, minor, mode)
DEFAULT_DEVICES: list[tuple[str, str, int, int, int]] = [
    ("/dev/null", "c", 1, 3, 0o666),
    ("/dev/zero", "c", 1, 5, 0o666),
    ("/dev/full", "c", 1, 7, 0o666),
    ("/dev/random", "c", 1, 8, 0o666),
    ("/dev/urandom", "c", 1, 9, 0o666),
    ("/dev/tty", "c", 5, 0, 0o666),
]

_DEV_SYMLINKS = [
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
]

_PROCFS_MAGIC = 0x9FA0
_SYSFS_MAGIC = 0x62656572


def _field(index: int, name: str) -> str:
    return f"mounts[{index}].{name}"


# -- safe path handling inside the root --------------------------------------
def open_in_root(root_fd: int, path: str, flags: int = os.O_PATH,
                 resolve: int = m.RESOLVE_IN_ROOT) -> int:
    """Open ``path`` as seen from the container root."""
    return m.openat2(root_fd, path.lstrip("/") or ".", flags, 0, resolve)


def mkdir_all_in_root(root_fd: int, path: str, mode: int = 0o755) -> int:
    """Create ``path`` (and parents) inside the root; return an O_PATH fd to it."""
    try:
        return open_in_root(root_fd, path, os.O_PATH | os.O_DIRECTORY)
    except KernelError as err:
        if err.errno != errno.ENOENT:
            raise
    parent, name = os.path.split(path.rstrip("/"))
    if not name:
        return open_in_root(root_fd, "/", os.O_PATH | os.O_DIRECTORY)
    parent_fd = mkdir_all_in_root(root_fd, parent or "/", mode)
    try:
        try:
            os.mkdir(name, mode, dir_fd=parent_fd)
        except FileExistsError:
            pass
        return m.openat2(parent_fd, name, os.O_PATH | os.O_DIRECTORY, 0,
                         m.RESOLVE_IN_ROOT | m.RESOLVE_NO_SYMLINKS)
    finally:
        os.close(parent_fd)


def create_file_in_root(root_fd: int, path: str) -> int:
    """Create an empty file at ``path`` inside the root (for file bind mounts)."""
    try:
        return open_in_root(root_fd, path, os.O_PATH)
    except KernelError as err:
        if err.errno != errno.ENOENT:
            raise
    parent, name = os.path.split(path.rstrip("/"))
    parent_fd = mkdir_all_in_root(root_fd, parent or "/")
    try:
        fd = os.open(name, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644,
                     dir_fd=parent_fd)
        os.close(fd)
        return m.openat2(parent_fd, name, os.O_PATH, 0,
                         m.RESOLVE_IN_ROOT | m.RESOLVE_NO_SYMLINKS)
    finally:
        os.close(parent_fd)


# -- mount option parsing ----------------------------------------------------
def parse_options(options: list[str]) -> tuple[int, int, list[str], bool]:
    """Split mount options into (flags, propagation flags, data, recursive-bind)."""
    from flatstack.oci.config import MOUNT_FLAGS, PROPAGATION_FLAGS

    flags = 0
    propagation = 0
    data: list[str] = []
    rbind = False
    for option in options:
        if option in MOUNT_FLAGS:
            clear, flag = MOUNT_FLAGS[option]
            if option == "rbind":
                rbind = True
            flags = flags & ~flag if clear else flags | flag
        elif option in PROPAGATION_FLAGS:
            propagation |= PROPAGATION_FLAGS[option]
        elif option in ("tmpcopyup", "copyup", "idmap", "ridmap", "rro", "rrw", "rnosuid",
                        "rsuid", "rnodev", "rdev", "rnoexec", "rexec", "rnoatime", "ratime",
                        "rrelatime", "rnorelatime", "rnodiratime", "rdiratime",
                        "rstrictatime", "rnostrictatime", "rnosymfollow", "rsymfollow"):
            continue  # recursive attributes: mount_setattr, see recursive_attrs()
        else:
            data.append(option)
    return flags, propagation, data, rbind


def recursive_attrs(options: list[str]) -> tuple[int, int]:
    """(attr_set, attr_clr) for mount_setattr from the ``r*`` mount options.

    ``idmap``/``ridmap`` are not attributes here: idmapped trees are built by the
    runtime before the init starts (runtime/idmapped.py).
    """
    from flatstack.oci.config import MOUNT_ATTR__ATIME, RECURSIVE_ATTRS

    attr_set = attr_clr = 0
    for option in options:
        if option in ("idmap", "ridmap") or option not in RECURSIVE_ATTRS:
            continue
        clear, attr = RECURSIVE_ATTRS[option]
        if option in ("rrelatime", "rnoatime", "rstrictatime"):
            attr_clr |= MOUNT_ATTR__ATIME  # the atime mode is a field, not a flag
            attr_set = (attr_set & ~MOUNT_ATTR__ATIME) | attr
        elif option in ("rnorelatime", "ratime", "rnostrictatime"):
            continue  # leaving the mode unchanged is what clearing one value means
        elif clear:
            attr_clr |= attr
            attr_set &= ~attr
        else:
            attr_set |= attr
            attr_clr &= ~attr
    return attr_set, attr_clr


def _locked_flags(path: str) -> int:
    """Flags of an existing mount that a remount inside a user namespace must keep."""
    st = os.statvfs(path)
    flags = 0
    for vfs, ms in ((os.ST_NOSUID, m.MS_NOSUID), (os.ST_NODEV, m.MS_NODEV),
                    (os.ST_NOEXEC, m.MS_NOEXEC), (os.ST_RDONLY, m.MS_RDONLY),
                    (os.ST_NOATIME, m.MS_NOATIME), (os.ST_NODIRATIME, m.MS_NODIRATIME),
                    (os.ST_RELATIME, m.MS_RELATIME)):
        if st.f_flag & vfs:
            flags |= ms
    return flags


def bind_remount(path: str, flags: int) -> None:
    """Apply ``flags`` to an existing bind mount, keeping locked ones."""
    keep = _locked_flags(path) & (m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC | m.MS_NOATIME
                                  | m.MS_NODIRATIME | m.MS_RELATIME)
    m.mount(None, path, None, m.MS_BIND | m.MS_REMOUNT | flags | keep)


# -- the setup itself --------------------------------------------------------
class RootfsBuilder:
    """Builds the container's mount tree under ``rootfs`` in the current mount ns."""

    def __init__(self, config: dict[str, Any], rootfs: str, bundle: str, *,
                 in_userns: bool, cgroup_paths: dict[str, str] | None,
                 cgroup_hook: Any = None, mount_trees: dict[str, int] | None = None,
                 own_mount_ns: bool = True) -> None:
        self.config = config
        #: False: the container shares the runtime's mount namespace (no "mount" in
        #: linux.namespaces); its mounts go under the rootfs there, and its root is a
        #: chroot (pivot_root or a move onto "/" would change the host's root).
        self.own_mount_ns = own_mount_ns
        self.mount_trees = mount_trees or {}  # idmapped detached trees (runtime/idmapped.py)
        self.rootfs = rootfs
        self.bundle = bundle
        self.in_userns = in_userns
        self.cgroup_paths = cgroup_paths or {}
        self.cgroup_hook = cgroup_hook  # called once before the first cgroup mount
        self.root_fd = -1
        linux = config.get("linux") or {}
        self.linux = linux
        self.new_netns = any(ns.get("type") == "network" and not ns.get("path")
                             for ns in linux.get("namespaces") or [])

    def prepare(self) -> None:
        """Everything before pivot_root."""
        if self.own_mount_ns:
            self._own_root()
        else:
            # Shared with the runtime: a bind of the rootfs onto itself only where a
            # read-only root needs a mount of its own.
            if (self.config.get("root") or {}).get("readonly"):
                m.mount(self.rootfs, self.rootfs, None, m.MS_BIND | m.MS_REC)
            self.root_fd = os.open(self.rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        for index, mnt in enumerate(self.config.get("mounts") or []):
            self._mount_one(index, mnt)
        self._devices()

    def _own_root(self) -> None:
        """In the container's own mount namespace: "/" made slave (private if asked),
        the rootfs bound (or its host-side tree attached) as the root to pivot to."""
        propagation = self.linux.get("rootfsPropagation")
        from flatstack.oci.config import PROPAGATION_FLAGS

        # Until pivot_root the host's tree stays slave (private if asked): pivot_root
        # refuses shared mounts and an unbindable root cannot be bound.  The
        # requested rootfsPropagation is applied to the new "/" in finalize().
        root_flag = m.MS_SLAVE | m.MS_REC
        if propagation in ("private", "rprivate"):
            root_flag = PROPAGATION_FLAGS[propagation] | m.MS_REC
        m.mount(None, "/", None, root_flag)
        tree = self.mount_trees.pop("rootfs", None)
        if tree is not None:
            # A detached clone of the rootfs made by the runtime on the host side
            # (idmapped, or simply because the container's root may not be able to
            # search the bundle's parent directories): stage one left the cwd on the
            # rootfs directory; attached there, the tree fd is the new mount's root.
            m.move_mount(tree, "", -100, ".", m.MOVE_MOUNT_F_EMPTY_PATH)
            self.root_fd = tree
        else:
            m.mount(self.rootfs, self.rootfs, None, m.MS_BIND | m.MS_REC)
            self.root_fd = os.open(self.rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def _mount_one(self, index: int, mnt: dict[str, Any]) -> None:
        dest = mnt["destination"]
        if not dest.startswith("/"):
            dest = "/" + dest
        fstype = mnt.get("type") or ""
        options = list(mnt.get("options") or [])
        flags, propagation, data, rbind = parse_options(options)
        is_bind = fstype == "bind" or "bind" in options or "rbind" in options
        if os.path.normpath(dest) == "/proc" and (is_bind or fstype != "proc"):
            # CVE-2019-16884: a fake /proc would take the runtime's own /proc writes.
            raise FlatstackError(f"{_field(index, 'destination')}: /proc must be a proc "
                                 f"filesystem, not {'a bind mount' if is_bind else fstype}")
        try:
            if is_bind:
                self._bind(index, mnt, dest, flags, rbind)
            elif fstype == "cgroup" or fstype == "cgroup2":
                self._cgroup(index, dest, flags)
            else:
                self._fs(index, mnt, dest, fstype, flags, data)
            if propagation:
                fd = open_in_root(self.root_fd, dest, os.O_PATH, m.RESOLVE_IN_ROOT)
                try:
                    m.mount(None, m.fd_path(fd), None, propagation)
                finally:
                    os.close(fd)
            attr_set, attr_clr = recursive_attrs(options)
            if attr_set or attr_clr:
                fd = open_in_root(self.root_fd, dest, os.O_PATH, m.RESOLVE_IN_ROOT)
                try:
                    m.mount_setattr(fd, "", m.AT_EMPTY_PATH | m.AT_RECURSIVE, attr_set,
                                    attr_clr)
                finally:
                    os.close(fd)
        except KernelError as err:
            raise FlatstackError(f"{_field(index, 'destination')}: mounting "
                                 f"{mnt.get('source') or fstype} on {dest}: "
                                 f"{os.strerror(err.errno)}") from None

    def _bind(self, index: int, mnt: dict[str, Any], dest: str, flags: int,
              rbind: bool) -> None:
        source = mnt.get("source") or ""
        if not source:
            raise FlatstackError(f"{_field(index, 'source')}: required for a bind mount")
        if not source.startswith("/"):
            source = os.path.join(self.bundle, source)
        tree = self.mount_trees.get(str(index))
        try:
            st = os.stat(source) if tree is None else os.fstat(tree)
        except OSError as err:
            raise FlatstackError(f"{_field(index, 'source')}: {source}: "
                                 f"{os.strerror(err.errno or 0).lower()}") from None
        if stat.S_ISDIR(st.st_mode):
            fd = mkdir_all_in_root(self.root_fd, dest)
        else:
            fd = create_file_in_root(self.root_fd, dest)
        try:
            if tree is not None:
                from flatstack.runtime.idmapped import attach

                attach(tree, fd)
            else:
                m.mount(source, m.fd_path(fd), None, m.MS_BIND | (m.MS_REC if rbind else 0))
        finally:
            os.close(fd)
        extra = flags & ~(m.MS_BIND | m.MS_REC)
        if extra:
            self._remount_at(dest, extra)

    def _remount_at(self, dest: str, flags: int) -> None:
        """Re-resolve ``dest`` (an fd opened before a mount points below it) and remount."""
        fd = open_in_root(self.root_fd, dest, os.O_PATH)
        try:
            bind_remount(m.fd_path(fd), flags)
        finally:
            os.close(fd)

    def _fs(self, index: int, mnt: dict[str, Any], dest: str, fstype: str, flags: int,
            data: list[str]) -> None:
        resolve = m.RESOLVE_IN_ROOT
        if fstype in ("proc", "sysfs"):
            # CVE-2019-19921 / CVE-2023-27561: never follow a symlink to mount procfs.
            resolve |= m.RESOLVE_NO_SYMLINKS
            try:
                fd = open_in_root(self.root_fd, dest, os.O_PATH | os.O_DIRECTORY, resolve)
            except KernelError as err:
                if err.errno == errno.ELOOP:
                    raise FlatstackError(f"{_field(index, 'destination')}: {dest} is a "
                                         f"symlink; refusing to mount {fstype} there") from None
                if err.errno == errno.ENOTDIR:
                    raise FlatstackError(f"{_field(index, 'destination')}: {dest} is not "
                                         "a directory") from None
                fd = mkdir_all_in_root(self.root_fd, dest)
        else:
            fd = mkdir_all_in_root(self.root_fd, dest)
        try:
            target = m.fd_path(fd)
            source = mnt.get("source") or fstype
            try:
                m.mount(source, target, fstype, flags, ",".join(data) or None)
            except KernelError as err:
                if fstype == "sysfs" and err.errno == errno.EPERM:
                    # sysfs without a new netns, in a user namespace: bind the host's.
                    m.mount("/sys", target, None, m.MS_BIND | m.MS_REC)
                    if flags:
                        self._remount_at(dest, flags & (m.MS_RDONLY | m.MS_NOSUID |
                                                        m.MS_NODEV | m.MS_NOEXEC))
                elif fstype == "mqueue" and err.errno == errno.EPERM:
                    m.mount("/dev/mqueue", target, None, m.MS_BIND)
                else:
                    raise
        finally:
            os.close(fd)

    def _cgroup(self, index: int, dest: str, flags: int) -> None:
        if self.cgroup_hook is not None:
            self.cgroup_hook()
            self.cgroup_hook = None
        readonly = flags & m.MS_RDONLY
        base = m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC
        fd = mkdir_all_in_root(self.root_fd, dest)
        try:
            target = m.fd_path(fd)
            if self.cgroup_paths.get("") is not None and len(self.cgroup_paths) == 1:
                # Pure cgroup v2: the container's own cgroup as the root.
                try:
                    m.mount("cgroup2", target, "cgroup2", base | readonly)
                except KernelError:
                    m.mount(self.cgroup_paths[""], target, None, m.MS_BIND | m.MS_REC)
                    self._remount_at(dest, base | readonly)
                return
            m.mount("tmpfs", target, "tmpfs", base, "mode=755")
        finally:
            os.close(fd)
        # v1 / hybrid: one bind mount per hierarchy, of the container's cgroup.
        subs = []
        for name, host_path in sorted(self.cgroup_paths.items()):
            sub = f"{dest.rstrip('/')}/{name or 'unified'}"
            sfd = mkdir_all_in_root(self.root_fd, sub)
            try:
                m.mount(host_path, m.fd_path(sfd), None, m.MS_BIND | m.MS_REC)
            finally:
                os.close(sfd)
            subs.append(sub)
        if self._seal_tree(dest, readonly):
            return
        for sub in subs:
            self._remount_at(sub, base | readonly)
        if readonly:
            fd = open_in_root(self.root_fd, dest, os.O_PATH | os.O_DIRECTORY)
            try:
                m.mount(None, m.fd_path(fd), None, m.MS_REMOUNT | base | m.MS_RDONLY,
                        "mode=755")
            finally:
                os.close(fd)

    def _seal_tree(self, dest: str, readonly: int) -> bool:
        """nosuid, nodev, noexec (and read-only if asked) on the mount at ``dest`` and
        every mount below it, in one recursive mount_setattr(2) instead of a remount
        per mount.  False when the kernel lacks it (before 5.12): remount instead."""
        attrs = m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NODEV | m.MOUNT_ATTR_NOEXEC
        if readonly:
            attrs |= m.MOUNT_ATTR_RDONLY
        fd = open_in_root(self.root_fd, dest, os.O_PATH | os.O_DIRECTORY)
        try:
            m.mount_setattr(fd, "", m.AT_EMPTY_PATH | m.AT_RECURSIVE, attr_set=attrs)
        except KernelError as err:
            if err.errno != errno.ENOSYS:
                raise
            return False
        finally:
            os.close(fd)
        return True

    def _devices(self) -> None:
        """Default devices, linux.devices and the /dev symlinks, when /dev is ours."""
        dev_is_tmpfs = any(
            (mnt.get("destination") or "").rstrip("/") == "/dev"
            for mnt in self.config.get("mounts") or []
        )
        devices: list[tuple[str, str, int, int, int, int, int]] = []
        if dev_is_tmpfs:
            devices = [(p, t, ma, mi, mode, 0, 0) for p, t, ma, mi, mode in DEFAULT_DEVICES]
        for i, dev in enumerate(self.linux.get("devices") or []):
            mode = dev.get("fileMode", 0o666)
            devices = [d for d in devices if d[0] != dev["path"]]
            devices.append((dev["path"], dev.get("type", "c"), int(dev.get("major", 0)),
                            int(dev.get("minor", 0)), mode, int(dev.get("uid", 0)),
                            int(dev.get("gid", 0))))
            if dev.get("type") not in ("c", "b", "u", "p"):
                raise FlatstackError(f"linux.devices[{i}].type: unknown device type "
                                     f"{dev.get('type')!r}")
        for path, dtype, major, minor, mode, uid, gid in devices:
            self._make_device(path, dtype, major, minor, mode, uid, gid)
        if dev_is_tmpfs:
            dev_fd = open_in_root(self.root_fd, "/dev", os.O_PATH | os.O_DIRECTORY)
            try:
                for target, link in [*_DEV_SYMLINKS, ("pts/ptmx", "/dev/ptmx")]:
                    try:
                        os.symlink(target, os.path.basename(link), dir_fd=dev_fd)
                    except FileExistsError:
                        pass
                if os.path.exists("/proc/kcore"):
                    try:
                        os.symlink("/proc/kcore", "core", dir_fd=dev_fd)
                    except FileExistsError:
                        pass
            finally:
                os.close(dev_fd)

    def _make_device(self, path: str, dtype: str, major: int, minor: int, mode: int,
                     uid: int, gid: int) -> None:
        parent, name = os.path.split(path)
        parent_fd = mkdir_all_in_root(self.root_fd, parent)
        try:
            if self.in_userns:
                # mknod is not allowed in a user namespace: bind the host's node.
                try:
                    fd = os.open(name, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW,
                                 0o644, dir_fd=parent_fd)
                    os.close(fd)
                except FileExistsError:
                    pass
                fd = m.openat2(parent_fd, name, os.O_PATH, 0,
                               m.RESOLVE_IN_ROOT | m.RESOLVE_NO_SYMLINKS)
                try:
                    m.mount(path, m.fd_path(fd), None, m.MS_BIND)
                finally:
                    os.close(fd)
                return
            kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK,
                    "p": stat.S_IFIFO}[dtype]
            try:
                os.unlink(name, dir_fd=parent_fd)
            except FileNotFoundError:
                pass
            old = os.umask(0)
            try:
                os.mknod(name, kind | (mode & 0o7777), os.makedev(major, minor),
                         dir_fd=parent_fd)
            finally:
                os.umask(old)
            os.chown(name, uid, gid, dir_fd=parent_fd, follow_symlinks=False)
        finally:
            os.close(parent_fd)

    def pivot(self, no_pivot: bool = False) -> None:
        """Make the prepared root the process's ``/``."""
        os.fchdir(self.root_fd)
        if not self.own_mount_ns:
            os.chroot(".")
        elif no_pivot:
            m.mount(".", "/", None, m.MS_MOVE)
            os.chroot(".")
        else:
            old_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
            try:
                m.pivot_root(".", ".")
                os.fchdir(old_root)
                m.mount(None, ".", None, m.MS_SLAVE | m.MS_REC)
                m.umount(".", m.MNT_DETACH)
            finally:
                os.close(old_root)
        os.chdir("/")
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1

    # -- after pivot_root: paths are container paths ------------------------
    def finalize(self) -> None:
        """Masked and read-only paths, then a read-only root if asked."""
        for path in self.linux.get("readonlyPaths") or []:
            readonly_path(path)
        for path in self.linux.get("maskedPaths") or []:
            mask_path(path)
        root = self.config.get("root") or {}
        if root.get("readonly"):
            bind_remount("/", m.MS_RDONLY)
        propagation = self.linux.get("rootfsPropagation")
        if propagation:
            # Last: read-only paths above are binds, which an unbindable root refuses.
            from flatstack.oci.config import PROPAGATION_FLAGS

            m.mount(None, "/", None, PROPAGATION_FLAGS[propagation])


def _verified_dev_null() -> int:
    """An O_PATH fd to /dev/null, checked to be the real character device 1:3.

    CVE-2025-31133: a container could replace /dev/null with a symlink to a
    host file and have the runtime bind it over a masked path.
    """
    fd = os.open("/dev/null", os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    st = os.fstat(fd)
    if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
        os.close(fd)
        raise FlatstackError("/dev/null in the container is not the null device; "
                             "refusing to use it to mask paths")
    return fd


def _open_existing(path: str) -> int | None:
    """An O_PATH fd to ``path`` without following symlinks; None if absent or a link.

    Masked and read-only paths the kernel does not have (or that the image made
    symlinks) are skipped, as runc does.
    """
    try:
        return m.openat2(-100, path, os.O_PATH | os.O_NOFOLLOW, 0, m.RESOLVE_NO_SYMLINKS)
    except KernelError as err:
        if err.errno in (errno.ENOENT, errno.ELOOP):
            return None
        raise


def mask_path(path: str) -> None:
    """Hide ``path``: /dev/null over a file, an empty read-only tmpfs over a directory."""
    fd = _open_existing(path)
    if fd is None:
        return
    try:
        st = os.fstat(fd)
        target = m.fd_path(fd)
        if stat.S_ISDIR(st.st_mode):
            m.mount("tmpfs", target, "tmpfs", m.MS_RDONLY, None)
        else:
            null_fd = _verified_dev_null()
            try:
                m.mount(m.fd_path(null_fd), target, None, m.MS_BIND)
            finally:
                os.close(null_fd)
    finally:
        os.close(fd)


def readonly_path(path: str) -> None:
    """Bind ``path`` onto itself read-only."""
    fd = _open_existing(path)
    if fd is None:
        return
    try:
        target = m.fd_path(fd)
        m.mount(target, target, None, m.MS_BIND | m.MS_REC)
    finally:
        os.close(fd)
    fd = m.openat2(-100, path, os.O_PATH | os.O_NOFOLLOW, 0, m.RESOLVE_NO_SYMLINKS)
    try:
        bind_remount(m.fd_path(fd), m.MS_RDONLY)
    finally:
        os.close(fd)


def write_procfs(path: str, value: str) -> None:
    """Write ``value`` to ``/proc/<path>``, refusing anything but the real procfs.

    CVE-2019-16884 / CVE-2025-52881: a symlink or a mount over /proc (or below it,
    e.g. over /proc/sys) would redirect the runtime's writes.  The file is opened
    beneath a verified procfs ``/proc`` without following symlinks or crossing a
    mount, and checked to be on procfs again before the write.
    """
    proc_fd = m.openat2(-100, "/proc", os.O_PATH | os.O_DIRECTORY, 0, m.RESOLVE_NO_SYMLINKS)
    try:
        if m.fstatfs_type(proc_fd) != _PROCFS_MAGIC:
            raise FlatstackError("/proc is not a procfs mount; refusing to write to it")
        try:
            fd = m.openat2(proc_fd, path, os.O_WRONLY, 0,
                           m.RESOLVE_BENEATH | m.RESOLVE_NO_SYMLINKS | m.RESOLVE_NO_XDEV
                           | m.RESOLVE_NO_MAGICLINKS)
        except KernelError as err:
            if err.errno in (errno.EXDEV, errno.ELOOP):
                raise FlatstackError(f"/proc/{path} is not on the container's procfs "
                                     "(a mount or symlink over it); refusing to write "
                                     "to it") from None
            raise OSError(err.errno, os.strerror(err.errno), f"/proc/{path}") from None
    finally:
        os.close(proc_fd)
    try:
        if m.fstatfs_type(fd) != _PROCFS_MAGIC:
            raise FlatstackError(f"/proc/{path} is not on procfs; refusing to write to it")
        os.write(fd, value.encode())
    finally:
        os.close(fd)
