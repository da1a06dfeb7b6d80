"""The content-addressable store, in OCI image-layout form.

Layout under the state directory (``/var/lib/flatstack`` by default)::

    images/oci-layout            {"imageLayoutVersion": "1.0.0"}
    images/index.json            one descriptor per named image (ref.name annotation)
    images/blobs/sha256/<hex>    manifests, configs and layers, deduplicated by digest
    images/tmp/                  blobs and layers being written (same filesystem)
    images/layers/sha256/<hex>   unpacked layers keyed by diff_id (see :mod:`.unpack`)
    images/holds/<owner>.json    what a container uses (see :meth:`Store.hold`)

Every blob is streamed into ``tmp/`` while hashing and renamed into place only when
its digest (and size, when known) matches, so a blob path always holds what its
name says. ``index.json`` is replaced atomically. Writers hold ``gc.lock`` shared;
garbage collection holds it exclusive, so it never deletes a blob a pull or import
has written but not yet named.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from flatstack.image import ImageError
from flatstack.image import reference as refs

DEFAULT_STATE_DIR = "/var/lib/flatstack"
REF_NAME = "org.opencontainers.image.ref.name"

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
_CHUNK = 1 << 20


def state_dir(option: str | None = None) -> str:
    """The state directory: the option, else ``$FLATSTACK_STATE_DIR``, else the default."""
    return option or os.environ.get("FLATSTACK_STATE_DIR") or DEFAULT_STATE_DIR


@dataclass
class Image:
    """A named image: its manifest descriptor, manifest and config."""

    name: str
    digest: str
    manifest: dict[str, Any]
    config: dict[str, Any]
    config_digest: str

    @property
    def layers(self) -> list[dict[str, Any]]:
        """Layer descriptors, bottom first."""
        return list(self.manifest.get("layers") or [])

    @property
    def diff_ids(self) -> list[str]:
        """Uncompressed layer digests from the config, bottom first."""
        return list((self.config.get("rootfs") or {}).get("diff_ids") or [])

    @property
    def size(self) -> int:
        """Bytes of manifest, config and layers as stored."""
        m = self.manifest
        return sum(int(d.get("size", 0)) for d in [m.get("config") or {}, *self.layers])


class Store:
    """Blobs and names under ``<state>/images``."""

    def __init__(self, state: str | None = None) -> None:
        self.root = os.path.join(state_dir(state), "images")
        self.blobs = os.path.join(self.root, "blobs", "sha256")
        self.tmp = os.path.join(self.root, "tmp")
        self.layers = os.path.join(self.root, "layers", "sha256")
        self._index = os.path.join(self.root, "index.json")
        self.holds_dir = os.path.join(self.root, "holds")
        self._new: list[str] | None = None

    # -- layout -----------------------------------------------------------------

    def ensure(self) -> Store:
        """Create the layout if missing; return self."""
        for path in (self.blobs, self.tmp, self.layers):
            os.makedirs(path, mode=0o700, exist_ok=True)
        layout = os.path.join(self.root, "oci-layout")
        if not os.path.exists(layout):
            self._write_atomic(layout, {"imageLayoutVersion": "1.0.0"})
        if not os.path.exists(self._index):
            self._write_atomic(self._index, {"schemaVersion": 2, "manifests": []})
        return self

    @contextlib.contextmanager
    def _lock(self, name: str, exclusive: bool) -> Iterator[None]:
        self.ensure()
        fd = os.open(os.path.join(self.root, name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold while writing blobs that are not yet named (keeps gc away).

        If the block fails, blobs it added that no image references are removed,
        so a failed pull or import leaves the store as it was.
        """
        outer = self._new is None
        if outer:
            self._new = []
        try:
            with self._lock("gc.lock", exclusive=False):
                yield
        except BaseException:
            if outer and self._new:
                with self._lock("gc.lock", exclusive=True):
                    keep, _ = self.referenced()
                    for digest in self._new:
                        if digest not in keep:
                            with contextlib.suppress(FileNotFoundError):
                                os.unlink(self.blob_path(digest))
            raise
        finally:
            if outer:
                self._new = None

    def _write_atomic(self, path: str, doc: Any, *, durable: bool = True) -> None:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=2)
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    # -- blobs ------------------------------------------------------------------

    def blob_path(self, digest: str) -> str:
        """Path of a blob; the digest is validated so it is safe in a path."""
        if not refs.is_digest(digest):
            raise ImageError(f"unsupported or malformed digest {digest!r} "
                             "(expected sha256:<64 hex>)")
        return os.path.join(self.blobs, digest.split(":", 1)[1])

    def has_blob(self, digest: str) -> bool:
        """Whether the blob is present."""
        return os.path.exists(self.blob_path(digest))

    def write_blob(self, src: BinaryIO, expected: str | None = None, size: int | None = None,
                   on_bytes: Callable[[int], None] | None = None, what: str = "blob") -> str:
        """Stream ``src`` into the store; return its digest.

        With ``expected`` the digest must match (and ``size`` the length), else
        :class:`ImageError` and nothing is stored. An existing blob is kept.
        """
        if expected is not None:
            self.blob_path(expected)
        self.ensure()
        h = hashlib.sha256()
        total = 0
        fd, tmp = tempfile.mkstemp(dir=self.tmp, prefix="blob-")
        try:
            with os.fdopen(fd, "wb") as out:
                while True:
                    limit = _CHUNK if size is None else min(_CHUNK, size + 1 - total)
                    chunk = src.read(limit) if limit > 0 else b""
                    if not chunk:
                        break
                    h.update(chunk)
                    out.write(chunk)
                    total += len(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            digest = "sha256:" + h.hexdigest()
            if size is not None and total != size:
                got = f"more than {size}" if total > size else str(total)
                raise ImageError(f"{what} {expected or digest}: size mismatch: expected {size} "
                                 f"bytes, got {got}")
            if expected is not None and digest != expected:
                raise ImageError(f"{what}: digest mismatch: expected {expected}, got {digest}")
            os.chmod(tmp, 0o644)
            path = self.blob_path(digest)
            if self._new is not None and not os.path.exists(path):
                self._new.append(digest)
            os.rename(tmp, path)
            return digest
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def write_bytes(self, data: bytes, expected: str | None = None, what: str = "blob") -> str:
        """Store ``data``; return its digest (see :meth:`write_blob`)."""
        import io

        return self.write_blob(io.BytesIO(data), expected, len(data) if expected else None,
                               what=what)

    def read_blob(self, digest: str) -> bytes:
        """Read a (small) blob and check its digest again."""
        try:
            with open(self.blob_path(digest), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise ImageError(f"blob {digest} is missing from the store") from None
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise ImageError(f"blob {digest} is corrupt in the store (digest mismatch)")
        return data

    def read_json(self, digest: str) -> dict[str, Any]:
        """Read a JSON blob (manifest, index, config)."""
        try:
            doc = json.loads(self.read_blob(digest))
        except ValueError as err:
            raise ImageError(f"blob {digest} is not valid JSON: {err}") from None
        if not isinstance(doc, dict):
            raise ImageError(f"blob {digest} is not a JSON object")
        return doc

    # -- names ------------------------------------------------------------------

    def _read_index(self) -> dict[str, Any]:
        self.ensure()
        with open(self._index) as f:
            return json.load(f)

    def entries(self) -> list[dict[str, Any]]:
        """Descriptors in index.json (each named by its ref.name annotation)."""
        return list(self._read_index().get("manifests") or [])

    def tag(self, name: str, descriptor: dict[str, Any]) -> None:
        """Name a stored manifest, replacing any image of the same name."""
        self.blob_path(descriptor["digest"])
        entry = {k: descriptor[k] for k in ("mediaType", "digest", "size") if k in descriptor}
        entry["annotations"] = {REF_NAME: name}
        with self._lock("index.lock", exclusive=True):
            index = self._read_index()
            manifests = [d for d in index.get("manifests") or [] if _name(d) != name]
            manifests.append(entry)
            index["manifests"] = manifests
            self._write_atomic(self._index, index)

    def untag(self, name: str) -> None:
        """Forget a name (blobs stay until :meth:`gc`)."""
        with self._lock("index.lock", exclusive=True):
            self._untag_locked(name)

    def _untag_locked(self, name: str) -> None:
        index = self._read_index()
        index["manifests"] = [d for d in index.get("manifests") or [] if _name(d) != name]
        self._write_atomic(self._index, index)

    def remove(self, text: str, force: bool = False) -> str:
        """Untag an image; refused while a container holds it and no other name is left
        for it, unless ``force`` (its blobs then stay until the last holder releases)."""
        with self._lock("index.lock", exclusive=True):
            name, desc = self.lookup(text)
            digest = desc.get("digest", "")
            others = [d for d in self.entries() if d.get("digest") == digest and _name(d) != name]
            users = [h.get("what") or h.get("owner", "?") for h in self.holds()
                     if h.get("digest") == digest]
            if users and not others and not force:
                raise ImageError(f"image {name} is in use by {len(users)} container(s): "
                                 f"{', '.join(sorted(users))}; remove them first or force "
                                 "the removal")
            self._untag_locked(name)
        return name

    # -- holds: images in use by containers -------------------------------------

    def hold(self, owner: str, image: Image, what: str = "") -> None:
        """Record that ``owner`` (a container id) uses ``image``: :meth:`gc` keeps its
        blobs and layers and :meth:`remove` refuses it until :meth:`release`."""
        if not owner or not all(c.isalnum() or c in "_.-" for c in owner):
            raise ImageError(f"hold: {owner!r} is not a valid owner name")
        doc = {"owner": owner, "what": what or owner, "name": image.name,
               "digest": image.digest,
               "blobs": [image.digest, image.config_digest,
                         *(d.get("digest", "") for d in image.layers)],
               "diff_ids": image.diff_ids}
        with self._lock("index.lock", exclusive=True):
            os.makedirs(self.holds_dir, mode=0o700, exist_ok=True)
            # Not fsync'ed: a hold lives as long as its container's processes, which a
            # power loss ends too (the rename alone keeps it whole across a crash).
            self._write_atomic(os.path.join(self.holds_dir, f"{owner}.json"), doc,
                               durable=False)

    def release(self, owner: str) -> None:
        """Drop ``owner``'s hold (no error when it has none)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.holds_dir, f"{owner}.json"))

    def holds(self) -> list[dict[str, Any]]:
        """Every hold: owner, what, name, digest, blobs, diff_ids."""
        out = []
        try:
            names = sorted(os.listdir(self.holds_dir))
        except FileNotFoundError:
            return []
        for entry in names:
            if not entry.endswith(".json"):
                continue
            try:
                with open(os.path.join(self.holds_dir, entry)) as f:
                    doc = json.load(f)
            except (OSError, ValueError):
                continue
            if isinstance(doc, dict):
                out.append(doc)
        return out

    def lookup(self, text: str) -> tuple[str, dict[str, Any]]:
        """Find a named image by reference, full name or manifest digest."""
        entries = self.entries()
        for d in entries:
            if _name(d) == text:
                return text, d
        if refs.is_digest(text) or (len(text) >= 12 and all(c in "0123456789abcdef" for c in text)):
            want = text if text.startswith("sha256:") else "sha256:" + text
            found = [d for d in entries if d.get("digest", "").startswith(want)]
            if len(found) == 1:
                return _name(found[0]), found[0]
            if len(found) > 1:
                raise ImageError(f"image {text!r} is ambiguous: {len(found)} images match")
        try:
            parsed = refs.parse(text)
        except ImageError:
            parsed = None
        if parsed is not None:
            wanted = [str(parsed)]
            if parsed.registry == refs.DEFAULT_REGISTRY and not text.startswith("docker.io/"):
                short = parsed.repository.removeprefix("library/")
                wanted.append(str(refs.Reference("localhost", short, parsed.tag, parsed.digest)))
            for candidate in wanted:
                for d in entries:
                    if _name(d) == candidate:
                        return candidate, d
        raise ImageError(f"image {text!r} not found in the store")

    def image(self, text: str) -> Image:
        """Load a named image's manifest and config."""
        name, desc = self.lookup(text)
        manifest = self.read_json(desc["digest"])
        if manifest.get("mediaType", desc.get("mediaType")) not in MANIFEST_TYPES:
            raise ImageError(f"image {name}: {desc['digest']} is not an image manifest")
        config_desc = manifest.get("config") or {}
        config = self.read_json(config_desc.get("digest", ""))
        return Image(name, desc["digest"], manifest, config, config_desc["digest"])

    def images(self) -> list[Image]:
        """Every named image."""
        return [self.image(_name(d)) for d in self.entries() if _name(d)]

    # -- garbage collection -----------------------------------------------------

    def referenced(self) -> tuple[set[str], set[str]]:
        """Blob digests and layer diff_ids reachable from named images or held."""
        blobs: set[str] = set()
        diff_ids: set[str] = set()
        todo = [d.get("digest", "") for d in self.entries()]
        while todo:
            digest = todo.pop()
            if digest in blobs or not refs.is_digest(digest):
                continue
            blobs.add(digest)
            if not self.has_blob(digest):
                continue
            try:
                doc = self.read_json(digest)
            except ImageError:
                continue
            for child in doc.get("manifests") or []:
                todo.append(child.get("digest", ""))
            config = doc.get("config")
            if isinstance(config, dict) and refs.is_digest(config.get("digest", "")):
                blobs.add(config["digest"])
                with contextlib.suppress(ImageError):
                    rootfs = self.read_json(config["digest"]).get("rootfs") or {}
                    diff_ids.update(rootfs.get("diff_ids") or [])
            for layer in doc.get("layers") or []:
                blobs.add(layer.get("digest", ""))
        for held in self.holds():
            blobs.update(d for d in held.get("blobs") or [] if isinstance(d, str))
            diff_ids.update(d for d in held.get("diff_ids") or [] if isinstance(d, str))
        return blobs, diff_ids

    def gc(self) -> tuple[int, int]:
        """Remove unreferenced blobs, unpacked layers and temp files: (count, bytes)."""
        count = freed = 0
        with self._lock("gc.lock", exclusive=True):
            blobs, diff_ids = self.referenced()
            for entry in os.scandir(self.blobs):
                if "sha256:" + entry.name not in blobs:
                    freed += entry.stat(follow_symlinks=False).st_size
                    os.unlink(entry.path)
                    count += 1
            for entry in os.scandir(self.layers):
                if "sha256:" + entry.name not in diff_ids:
                    shutil.rmtree(entry.path)
                    count += 1
            for entry in os.scandir(self.tmp):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
        return count, freed


def _name(descriptor: dict[str, Any]) -> str:
    return (descriptor.get("annotations") or {}).get(REF_NAME, "")
