"""Unpack image layers into directories usable as overlayfs lower layers.

Each layer is unpacked once into ``layers/sha256/<diff_id>`` and shared by every
image and container using it. The tar stream is read member by member (never
``extractall``): every path is split into components, absolute names and ``..``
are refused, and each parent directory is opened from the layer root with
``O_NOFOLLOW | O_DIRECTORY`` so nothing is ever written through a symlink. Files are
created relative to that directory fd (``O_CREAT | O_EXCL | O_NOFOLLOW``). Relative
symlinks that climb above the layer root and hard links to anything outside the
layer are refused, naming the member. The layer is unpacked into a temporary
directory and renamed into place only when complete and its uncompressed digest
matches the config's diff_id.

Whiteouts: in overlay form (the default) ``.wh.NAME`` becomes a 0:0 character
device and ``.wh..wh..opq`` the ``trusted.overlay.opaque=y`` xattr on its
directory, which is what overlayfs reads in lower layers. In flattened form
(``overlay=False``, several layers applied to one directory) they delete what the
lower layers put there.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from flatstack.image import ImageError
from flatstack.image import store as st
from flatstack.image.progress import NullProgress, Progress

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_XATTR = "SCHILY.xattr."
_FORBIDDEN_XATTRS = ("trusted.overlay.",)


class _Hashing(io.RawIOBase):
    """A reader that hashes (and counts) what passes through."""

    def __init__(self, f: IO[bytes], on_bytes: Callable[[int], None] | None = None) -> None:
        self.f, self.hash, self.on_bytes = f, hashlib.sha256(), on_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.f.read(len(b))
        n = len(data)
        b[:n] = data
        self.hash.update(data)
        if self.on_bytes is not None and n:
            self.on_bytes(n)
        return n

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


@dataclass
class _State:
    root: int
    overlay: bool
    layer: str
    written: set[tuple[str, ...]] = field(default_factory=set)
    dirs: list[tuple[tuple[str, ...], tarfile.TarInfo]] = field(default_factory=list)


def _fail(state: _State, member: str, why: str) -> ImageError:
    return ImageError(f"layer {state.layer}: member {member!r}: {why}")


def _parts(name: str) -> tuple[str, ...] | None:
    """Components of an archive path; None if absolute or climbing with ``..``."""
    if name.startswith("/"):
        return None
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        return None
    return parts


def _open_dir(state: _State, parts: tuple[str, ...], member: str, create: bool) -> int:
    """Open ``parts`` under the root, never following a symlink; maybe create dirs."""
    fd = os.dup(state.root)
    try:
        for i, part in enumerate(parts):
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise _fail(state, member, f"{'/'.join(parts[:i + 1])} does not exist "
                                "in the layer") from None
                os.mkdir(part, 0o755, dir_fd=fd)
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as err:
                if err.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                where = "/".join(parts[:i + 1])
                if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise _fail(state, member, f"parent {where} is a symlink; refusing to "
                                "write through it") from None
                raise _fail(state, member, f"parent {where} is not a directory") from None
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _lstat(name: str, dfd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _remove(name: str, dfd: int) -> None:
    st_ = _lstat(name, dfd)
    if st_ is None:
        return
    if stat.S_ISDIR(st_.st_mode):
        shutil.rmtree(name, dir_fd=dfd)
    else:
        os.unlink(name, dir_fd=dfd)


def _xattrs(member: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    out = []
    for key, value in member.pax_headers.items():
        if key.startswith(_XATTR):
            name = key[len(_XATTR):]
            if name.startswith(_FORBIDDEN_XATTRS):
                continue
            out.append((name, value.encode("utf-8", "surrogateescape")))
    return out


def _apply_xattrs(state: _State, member: tarfile.TarInfo, target: int | str) -> None:
    for name, value in _xattrs(member):
        try:
            if isinstance(target, int):
                os.setxattr(target, name, value)
            else:
                os.setxattr(target, name, value, follow_symlinks=False)
        except OSError as err:
            raise _fail(state, member.name, f"setting xattr {name}: "
                        f"{os.strerror(err.errno).lower()}") from None


def _symlink_escapes(parent: tuple[str, ...], target: str) -> bool:
    if target.startswith("/"):
        return False  # resolved inside the container's root at run time
    depth = len(parent)
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _whiteout(state: _State, pfd: int, parts: tuple[str, ...], member: str) -> None:
    base = parts[-1]
    if base == OPAQUE:
        if state.overlay:
            os.setxattr(pfd, "trusted.overlay.opaque", b"y")
        else:
            prefix = parts[:-1]
            for entry in os.listdir(pfd):
                if (*prefix, entry) not in state.written:
                    _remove(entry, pfd)
        return
    name = base[len(WHITEOUT):]
    if name in ("", ".", "..") or name.startswith(WHITEOUT):
        raise _fail(state, member, "malformed whiteout")
    path = (*parts[:-1], name)
    if path in state.written:
        return  # a whiteout hides lower layers only; this layer's entry stays
    if state.overlay:
        _remove(name, pfd)
        os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
    else:
        _remove(name, pfd)


def _entry(state: _State, tf: tarfile.TarFile, member: tarfile.TarInfo) -> None:
    name = member.name
    parts = _parts(name)
    if parts is None:
        raise _fail(state, name, "absolute path or '..' component escapes the layer root")
    if not parts:
        if member.isdir():
            state.dirs.append(((), member))
            return
        raise _fail(state, name, "names the layer root but is not a directory")
    pfd = _open_dir(state, parts[:-1], name, create=True)
    try:
        base = parts[-1]
        if base.startswith(WHITEOUT):
            _whiteout(state, pfd, parts, name)
            return
        existing = _lstat(base, pfd)
        if existing is not None and not (member.isdir() and stat.S_ISDIR(existing.st_mode)):
            _remove(base, pfd)
        mode = member.mode & 0o7777
        if member.isdir():
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                os.mkdir(base, 0o700, dir_fd=pfd)
            os.chown(base, member.uid, member.gid, dir_fd=pfd, follow_symlinks=False)
            dfd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
            try:
                _apply_xattrs(state, member, dfd)
            finally:
                os.close(dfd)
            state.dirs.append((parts, member))
        elif member.isreg():
            fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=pfd)
            try:
                src = tf.extractfile(member)
                if src is not None:
                    with os.fdopen(os.dup(fd), "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                os.fchown(fd, member.uid, member.gid)
                os.fchmod(fd, mode)
                _apply_xattrs(state, member, fd)
                os.utime(fd, (member.mtime, member.mtime))
            finally:
                os.close(fd)
        elif member.issym():
            if _symlink_escapes(parts[:-1], member.linkname):
                raise _fail(state, name, f"symlink target {member.linkname!r} escapes the "
                            "layer root")
            os.symlink(member.linkname, base, dir_fd=pfd)
            os.chown(base, member.uid, member.gid, dir_fd=pfd, follow_symlinks=False)
            _apply_xattrs(state, member, f"/proc/self/fd/{pfd}/{base}")
            os.utime(base, (member.mtime, member.mtime), dir_fd=pfd, follow_symlinks=False)
        elif member.islnk():
            target = _parts(member.linkname)
            if not target:
                raise _fail(state, name, f"hard link target {member.linkname!r} escapes the "
                            "layer root")
            tfd = _open_dir(state, target[:-1], name, create=False)
            try:
                found = _lstat(target[-1], tfd)
                if found is None or target not in state.written:
                    raise _fail(state, name, f"hard link target {member.linkname!r} is not "
                                "in this layer")
                if stat.S_ISDIR(found.st_mode):
                    raise _fail(state, name, "hard link to a directory")
                os.link(target[-1], base, src_dir_fd=tfd, dst_dir_fd=pfd,
                        follow_symlinks=False)
            finally:
                os.close(tfd)
        elif member.ischr() or member.isblk() or member.isfifo():
            kind = stat.S_IFCHR if member.ischr() else (
                stat.S_IFBLK if member.isblk() else stat.S_IFIFO)
            os.mknod(base, kind | 0o600, os.makedev(member.devmajor, member.devminor),
                     dir_fd=pfd)
            os.chown(base, member.uid, member.gid, dir_fd=pfd, follow_symlinks=False)
            os.chmod(base, mode, dir_fd=pfd)
            os.utime(base, (member.mtime, member.mtime), dir_fd=pfd, follow_symlinks=False)
        else:
            raise _fail(state, name, f"unsupported tar member type {member.type!r}")
        state.written.add(parts)
    finally:
        os.close(pfd)


def _finish_dirs(state: _State) -> None:
    for parts, member in reversed(state.dirs):
        try:
            fd = _open_dir(state, parts, member.name, create=False)
        except ImageError:
            continue  # replaced later in the layer by a non-directory
        try:
            if not parts:
                os.fchown(fd, member.uid, member.gid)
            os.fchmod(fd, member.mode & 0o7777)
            os.utime(fd, (member.mtime, member.mtime))
        finally:
            os.close(fd)


def _decompressed(raw: IO[bytes], layer: str) -> IO[bytes]:
    buffered = io.BufferedReader(raw, 1 << 16)  # type: ignore[arg-type]
    head = buffered.peek(4)[:4]
    if head[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]
    if head == b"\x28\xb5\x2f\xfd":
        try:
            import zstandard  # type: ignore[import-not-found]
        except ImportError:
            raise ImageError(f"layer {layer}: zstd-compressed layers need the 'zstandard' "
                             "module (not in Python 3.11's standard library)") from None
        return zstandard.ZstdDecompressor().stream_reader(buffered)  # type: ignore[no-any-return]
    return buffered


def unpack_layer(blob: str, dest: str, *, diff_id: str | None = None, overlay: bool = True,
                 on_bytes: Callable[[int], None] | None = None, layer: str = "") -> str:
    """Unpack the layer tarball at ``blob`` into the directory ``dest``; return its diff_id.

    ``dest`` should be a fresh directory (or, with ``overlay=False``, the result of
    the layers below). Raises :class:`ImageError` naming the offending member.
    """
    layer = layer or os.path.basename(blob)
    root = os.open(dest, _DIR_FLAGS)
    state = _State(root, overlay, layer)
    try:
        with open(blob, "rb") as raw:
            counted = _Hashing(raw, on_bytes)  # type: ignore[arg-type]
            plain = _Hashing(_decompressed(counted, layer))  # type: ignore[arg-type]
            try:
                with tarfile.open(fileobj=plain, mode="r|") as tf:  # type: ignore[call-overload]
                    for member in tf:
                        _entry(state, tf, member)
                plain.drain()
            except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
                raise ImageError(f"layer {layer}: corrupt or truncated: {err}") from None
        _finish_dirs(state)
    finally:
        os.close(root)
    if diff_id is not None and plain.digest != diff_id:
        raise ImageError(f"layer {layer}: uncompressed digest {plain.digest} does not match "
                         f"diff_id {diff_id}")
    return plain.digest


def layer_dir(store: st.Store, diff_id: str) -> str:
    """Where the layer with ``diff_id`` lives once unpacked."""
    store.blob_path(diff_id)  # validates the digest's form
    return os.path.join(store.layers, diff_id.split(":", 1)[1])


def unpack_image(store: st.Store, ref: str, progress: Progress | None = None) -> list[str]:
    """Unpack (once) every layer of image ``ref``; return their directories, bottom first."""
    progress = progress or NullProgress()
    image = store.image(ref)
    if len(image.diff_ids) != len(image.layers):
        raise ImageError(f"image {image.name}: config lists {len(image.diff_ids)} layers, "
                         f"manifest {len(image.layers)}")
    dirs = []
    with store.writing():
        for desc, diff_id in zip(image.layers, image.diff_ids, strict=True):
            dirs.append(_ensure_layer(store, desc, diff_id, progress))
    return dirs


def _ensure_layer(store: st.Store, desc: dict[str, Any], diff_id: str,
                  progress: Progress) -> str:
    final = layer_dir(store, diff_id)
    key = diff_id.split(":", 1)[1][:12]
    if os.path.isdir(final):
        return final
    blob = store.blob_path(desc.get("digest", ""))
    if not os.path.exists(blob):
        raise ImageError(f"layer {desc.get('digest')} is missing from the store")
    progress.start(key, f"{key} unpacking", int(desc.get("size") or 0))
    tmp = tempfile.mkdtemp(dir=store.tmp, prefix=f"layer-{key}-")
    try:
        os.chmod(tmp, 0o755)
        unpack_layer(blob, tmp, diff_id=diff_id, layer=desc["digest"],
                     on_bytes=lambda n: progress.advance(key, n))
        try:
            os.rename(tmp, final)
        except OSError as err:
            if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    progress.done(key)
    return final


def flatten(store: st.Store, ref: str, dest: str) -> None:
    """Apply every layer of ``ref`` in order into ``dest`` (whiteouts delete)."""
    image = store.image(ref)
    os.makedirs(dest, mode=0o755, exist_ok=True)
    for desc, diff_id in zip(image.layers, image.diff_ids, strict=True):
        unpack_layer(store.blob_path(desc["digest"]), dest, diff_id=diff_id, overlay=False,
                     layer=desc["digest"])
