"""Idmapped mounts: detached mount trees whose file ownership is shifted.

A mount carrying an id mapping shows a file owned on disk by id ``k`` as owned by
the host id the mapping gives ``k``.  With the container's own mapping, a root
filesystem unpacked as host root appears owned by the container's root, without
a recursive chown and without giving the container any host id.

The trees are made by the runtime on the host side before the container's init
is forked: building the mapping needs a user namespace whose maps are written by
host root, which the container's init (inside its own user namespace) cannot do.
The init attaches each tree with ``move_mount`` through the inherited fd.
"""

from __future__ import annotations

import os

from flatstack.errors import FlatstackError, KernelError
from flatstack.kernel import mount as m
from flatstack.kernel import ns

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: Annotation asking for the root filesystem to be idmapped to the container's
#: user namespace ("true"/"false").
ROOTFS_IDMAP_ANNOTATION = "org.flatstack.rootfs.idmap"


def _map_text(mappings: list[dict[str, Any]]) -> str:
    return "".join(f"{x['containerID']} {x['hostID']} {x['size']}\n" for x in mappings)


def mapping_userns(uid_maps: list[dict[str, Any]], gid_maps: list[dict[str, Any]],
                   field: str) -> int:
    """An fd of a new user namespace with these maps (host root writes them)."""
    if os.geteuid() != 0:
        raise FlatstackError(f"{field}: idmapped mounts need a runtime running as root")
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a placeholder process that only owns the namespace
        try:
            os.close(ready_r)
            os.close(hold_w)
            ns.unshare(ns.CLONE_NEWUSER)
            os.write(ready_w, b"u")
            os.read(hold_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(hold_r)
    try:
        if os.read(ready_r, 1) != b"u":
            raise FlatstackError(f"{field}: cannot create a user namespace for the id mapping")
        for name, maps in (("uid_map", uid_maps), ("gid_map", gid_maps)):
            try:
                with open(f"/proc/{pid}/{name}", "w") as f:
                    f.write(_map_text(maps))
            except OSError as err:
                raise FlatstackError(f"{field}: invalid id mapping: "
                                     f"{os.strerror(err.errno or 0).lower()}") from None
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(hold_w)
        os.waitpid(pid, 0)


class UsernsCache:
    """Mapping user namespaces kept for reuse by a long-lived process (the engine).

    A namespace made only to carry a mapping never changes, and the engine gives
    containers id ranges from a pool, so ranges (and their mappings) come back: a hit
    saves the placeholder fork of :func:`mapping_userns` (about 8 ms in the daemon).
    At most ``size`` namespaces are kept (least recently used goes first).
    """

    def __init__(self, size: int = 64) -> None:
        import threading
        from collections import OrderedDict

        self.size = size
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, uid_maps: list[dict[str, Any]], gid_maps: list[dict[str, Any]],
            field: str) -> int:
        """A new fd (the caller closes it) of a namespace with these maps."""
        key = _map_text(uid_maps) + "/" + _map_text(gid_maps)
        with self._lock:
            fd = self._fds.get(key)
            if fd is not None:
                self._fds.move_to_end(key)
                return os.dup(fd)
        made = mapping_userns(uid_maps, gid_maps, field)
        with self._lock:
            if key in self._fds:  # made by another thread meanwhile
                return made
            self._fds[key] = os.dup(made)
            while len(self._fds) > self.size:
                os.close(self._fds.popitem(last=False)[1])
        return made

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


def idmapped_tree(source: str, userns_fd: int, *, recursive: bool, field: str) -> int:
    """A detached clone of the mount tree at ``source``, idmapped through ``userns_fd``.

    ``recursive`` clones (and maps) the submounts too, as ``rbind``/``ridmap`` ask.
    """
    flags = m.OPEN_TREE_CLONE | (m.AT_RECURSIVE if recursive else 0)
    try:
        tree = m.open_tree(-100, source, flags)  # AT_FDCWD
    except KernelError as err:
        raise FlatstackError(f"{field}: {source}: {os.strerror(err.errno).lower()}") from None
    try:
        m.mount_setattr(tree, "", m.AT_EMPTY_PATH | (m.AT_RECURSIVE if recursive else 0),
                        attr_set=m.MOUNT_ATTR_IDMAP, userns_fd=userns_fd)
    except KernelError as err:
        os.close(tree)
        why = os.strerror(err.errno).lower()
        if err.errno == 22:  # EINVAL: the filesystem cannot be idmapped
            why = "the filesystem does not support idmapped mounts"
        raise FlatstackError(f"{field}: idmapping {source}: {why}") from None
    return tree


def wants_rootfs_idmap(config: dict[str, Any]) -> bool:
    """True when the config asks (by annotation) for an idmapped root filesystem."""
    value = (config.get("annotations") or {}).get(ROOTFS_IDMAP_ANNOTATION)
    if value is None:
        return False
    if value not in ("true", "false"):
        raise FlatstackError(f'annotations["{ROOTFS_IDMAP_ANNOTATION}"]: must be "true" or '
                             f'"false", not {value!r}')
    if value == "true" and not (config.get("linux") or {}).get("uidMappings"):
        raise FlatstackError(f'annotations["{ROOTFS_IDMAP_ANNOTATION}"]: needs a user '
                             "namespace with linux.uidMappings")
    return value == "true"


def wants_idmap(mnt: dict[str, Any]) -> bool:
    """A mount is idmapped when it has uidMappings or the idmap/ridmap option
    (runtime-spec 1.2: without its own maps it takes the container's)."""
    options = mnt.get("options") or ()
    return bool(mnt.get("uidMappings")) or "idmap" in options or "ridmap" in options


def plain_tree(source: str, *, recursive: bool, field: str) -> int:
    """A detached clone of the mount tree at ``source`` (a bind mount not yet placed)."""
    flags = m.OPEN_TREE_CLONE | (m.AT_RECURSIVE if recursive else 0)
    try:
        return m.open_tree(-100, source, flags)  # AT_FDCWD
    except KernelError as err:
        raise FlatstackError(f"{field}: {source}: {os.strerror(err.errno).lower()}") from None


def _is_bind(mnt: dict[str, Any]) -> bool:
    options = mnt.get("options") or ()
    return mnt.get("type") == "bind" or "bind" in options or "rbind" in options


def prepare_trees(config: dict[str, Any], rootfs: str, bundle: str, *,
                  clone_all: bool = False) -> dict[str, int]:
    """Detached trees for the rootfs (key ``"rootfs"``) and bind mounts (key: the
    mount's index as a string), made on the host side.

    Idmapped where asked; with ``clone_all`` (a user-namespaced container created by
    root) the rootfs and every bind source are cloned even without an idmap, so
    the container's root never has to search host directories it has no rights
    on.  The caller closes the fds."""
    trees: dict[str, int] = {}
    linux = config.get("linux") or {}
    try:
        if wants_rootfs_idmap(config):
            userns = mapping_userns(linux["uidMappings"], linux.get("gidMappings") or [],
                                    f'annotations["{ROOTFS_IDMAP_ANNOTATION}"]')
            try:
                trees["rootfs"] = idmapped_tree(rootfs, userns, recursive=True,
                                                field="root.path")
            finally:
                os.close(userns)
        elif clone_all:
            trees["rootfs"] = plain_tree(rootfs, recursive=True, field="root.path")
        for index, mnt in enumerate(config.get("mounts") or []):
            if not wants_idmap(mnt):
                if clone_all and _is_bind(mnt) and mnt.get("source"):
                    source = mnt["source"]
                    if not source.startswith("/"):
                        source = os.path.join(bundle, source)
                    if os.path.exists(source):  # else the init reports it by name
                        trees[str(index)] = plain_tree(
                            source, recursive="rbind" in (mnt.get("options") or ()),
                            field=f"mounts[{index}].source")
                continue
            field = f"mounts[{index}]"
            source = mnt.get("source") or ""
            if not source.startswith("/"):
                source = os.path.join(bundle, source)
            options = mnt.get("options") or []
            uid_maps = mnt.get("uidMappings") or linux.get("uidMappings")
            gid_maps = mnt.get("gidMappings") or linux.get("gidMappings")
            if not uid_maps or not gid_maps:
                raise FlatstackError(f"{field}.options: idmap without uidMappings needs the "
                                     "container's user namespace maps (linux.uidMappings)")
            userns = mapping_userns(uid_maps, gid_maps, f"{field}.uidMappings")
            try:
                trees[str(index)] = idmapped_tree(
                    source, userns, recursive="rbind" in options or "ridmap" in options,
                    field=f"{field}.source")
            finally:
                os.close(userns)
    except BaseException:
        for fd in trees.values():
            os.close(fd)
        raise
    return trees


def attach(tree_fd: int, target_fd: int) -> None:
    """Attach a detached tree on the directory or file ``target_fd`` (an O_PATH fd)."""
    m.move_mount(tree_fd, "", target_fd, "", m.MOVE_MOUNT_F_EMPTY_PATH | m.MOVE_MOUNT_T_EMPTY_PATH)


def attach_at(tree_fd: int, path: str) -> None:
    """Attach a detached tree on the host path ``path``."""
    m.move_mount(tree_fd, "", -100, path, m.MOVE_MOUNT_F_EMPTY_PATH)
