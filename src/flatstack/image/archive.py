"""Import images from OCI layouts, oci-archive and docker-archive tarballs.

A source is reached through a tiny "opener" (a directory or a tar file) that hands
out members by path, so all three formats share the same copying code. Every blob
is verified against its digest as it is copied; an image is named only after all
its blobs are stored, so a failed import leaves no name and no partial blob.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from typing import IO, Any

from flatstack.image import ImageError
from flatstack.image import reference as refs
from flatstack.image import store as st
from flatstack.image.platform import choose


class _Source:
    """Members of a directory or a tar archive, by relative path."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tar: tarfile.TarFile | None = None
        self.members: dict[str, tarfile.TarInfo] = {}
        if os.path.isdir(path):
            return
        try:
            self.tar = tarfile.open(path, "r:*")  # noqa: SIM115 (closed by close())
            for m in self.tar.getmembers():
                self.members[os.path.normpath(m.name.lstrip("/"))] = m
        except (tarfile.TarError, EOFError, OSError) as err:
            raise ImageError(f"{path}: not a readable tar archive or directory: {err}") from None

    def has(self, name: str) -> bool:
        if self.tar is None:
            return os.path.isfile(os.path.join(self.path, name))
        return name in self.members

    def open(self, name: str) -> IO[bytes]:
        if self.tar is None:
            full = os.path.realpath(os.path.join(self.path, name))
            if not full.startswith(os.path.realpath(self.path) + os.sep):
                raise ImageError(f"{self.path}: {name} points outside the layout")
            try:
                return open(full, "rb")
            except OSError as err:
                raise ImageError(f"{self.path}: {name}: {err.strerror.lower()}") from None
        member = self.members.get(os.path.normpath(name))
        while member is not None and member.issym():
            target = os.path.normpath(os.path.join(os.path.dirname(member.name), member.linkname))
            member = self.members.get(target)
        f = self.tar.extractfile(member) if member is not None else None
        if f is None:
            raise ImageError(f"{self.path}: archive has no file {name}")
        return f

    def json(self, name: str) -> Any:
        with self.open(name) as f:
            try:
                return json.load(f)
            except (ValueError, tarfile.TarError, EOFError, OSError) as err:
                raise ImageError(f"{self.path}: {name}: invalid JSON: {err}") from None

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()


def import_image(store: st.Store, path: str, name: str | None = None,
                 platform: str | None = None) -> list[str]:
    """Import ``path`` (OCI layout dir, oci-archive or docker-archive); return names."""
    if not os.path.exists(path):
        raise ImageError(f"{path}: no such file or directory")
    src = _Source(path)
    try:
        with store.writing():
            if src.has("oci-layout") and src.has("index.json"):
                named = _import_oci(store, src, name, platform)
            elif src.has("manifest.json"):
                named = _import_docker(store, src, name)
            else:
                raise ImageError(f"{path}: neither an OCI layout (oci-layout, index.json) "
                                 "nor a docker archive (manifest.json)")
            for ref_name, desc in named:
                store.tag(ref_name, desc)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ImageError(f"{path}: corrupt or truncated archive: {err}") from None
    finally:
        src.close()
    return [n for n, _ in named]


def _normalize(text: str) -> str:
    return str(refs.parse(text))


def _blob_name(digest: str) -> str:
    if not refs.is_digest(digest):
        raise ImageError(f"unsupported or malformed digest {digest!r}")
    return "blobs/sha256/" + digest.split(":", 1)[1]


def _copy(store: st.Store, src: _Source, desc: dict[str, Any]) -> None:
    digest = desc.get("digest", "")
    name = _blob_name(digest)
    if store.has_blob(digest):
        return
    with src.open(name) as f:
        store.write_blob(f, digest, desc.get("size"), what=f"{src.path}: {name}")


def _import_oci(store: st.Store, src: _Source, name: str | None,
                platform: str | None) -> list[tuple[str, dict[str, Any]]]:
    index = src.json("index.json")
    entries = index.get("manifests") if isinstance(index, dict) else None
    if not entries:
        raise ImageError(f"{src.path}: index.json lists no images")
    if name is not None and len(entries) > 1:
        raise ImageError(f"{src.path}: holds {len(entries)} images; --name needs exactly one")
    named = []
    for entry in entries:
        annotations = entry.get("annotations") or {}
        ref_name = name or annotations.get("io.containerd.image.name") \
            or annotations.get(st.REF_NAME)
        if not ref_name:
            raise ImageError(f"{src.path}: an image has no name annotation; give --name")
        if "/" not in ref_name and ":" not in ref_name and len(entries) == 1 and name is None:
            raise ImageError(f"{src.path}: the image is named only by tag {ref_name!r}; "
                             "give --name")
        manifest_desc = _copy_tree(store, src, entry, platform)
        named.append((_normalize(ref_name), manifest_desc))
    return named


def _copy_tree(store: st.Store, src: _Source, desc: dict[str, Any],
               platform: str | None) -> dict[str, Any]:
    """Copy a manifest (choosing from an index) with its config and layers."""
    _copy(store, src, desc)
    doc = store.read_json(desc["digest"])
    media = doc.get("mediaType") or desc.get("mediaType")
    if media in st.INDEX_TYPES or "manifests" in doc:
        child = choose(doc.get("manifests") or [], platform, f"{src.path}")
        return _copy_tree(store, src, child, platform)
    if media not in st.MANIFEST_TYPES and "layers" not in doc:
        raise ImageError(f"{src.path}: {desc['digest']} is not an image manifest ({media})")
    for blob in [doc.get("config") or {}, *(doc.get("layers") or [])]:
        _copy(store, src, blob)
    return {"mediaType": media or st.OCI_MANIFEST, "digest": desc["digest"],
            "size": desc.get("size") or len(store.read_blob(desc["digest"]))}


def _import_docker(store: st.Store, src: _Source,
                   name: str | None) -> list[tuple[str, dict[str, Any]]]:
    manifest = src.json("manifest.json")
    if not isinstance(manifest, list) or not manifest:
        raise ImageError(f"{src.path}: manifest.json lists no images")
    if name is not None and len(manifest) > 1:
        raise ImageError(f"{src.path}: holds {len(manifest)} images; --name needs exactly one")
    named = []
    for item in manifest:
        if not isinstance(item, dict) or "Config" not in item or "Layers" not in item:
            raise ImageError(f"{src.path}: manifest.json entry lacks Config or Layers")
        names = [name] if name else list(item.get("RepoTags") or [])
        if not names:
            raise ImageError(f"{src.path}: the image has no RepoTags; give --name")
        with src.open(item["Config"]) as f:
            config_bytes = f.read()
        config_digest = store.write_bytes(config_bytes, what=f"{src.path}: config")
        try:
            config = json.loads(config_bytes)
        except ValueError as err:
            raise ImageError(f"{src.path}: {item['Config']}: invalid JSON: {err}") from None
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        if len(diff_ids) != len(item["Layers"]):
            raise ImageError(f"{src.path}: config lists {len(diff_ids)} layers, "
                             f"manifest.json {len(item['Layers'])}")
        layers = [_docker_layer(store, src, path) for path in item["Layers"]]
        oci = {"schemaVersion": 2, "mediaType": st.OCI_MANIFEST,
               "config": {"mediaType": st.OCI_CONFIG, "digest": config_digest,
                          "size": len(config_bytes)},
               "layers": layers}
        data = json.dumps(oci, separators=(",", ":")).encode()
        digest = store.write_bytes(data, what=f"{src.path}: manifest")
        desc = {"mediaType": st.OCI_MANIFEST, "digest": digest, "size": len(data)}
        named.extend((_normalize(n), desc) for n in names)
    return named


def _docker_layer(store: st.Store, src: _Source, path: str) -> dict[str, Any]:
    with src.open(path) as f:
        head = f.read(4)
        stream = _Prefixed(head, f)
        size = [0]

        def count(n: int) -> None:
            size[0] += n

        digest = store.write_blob(stream, on_bytes=count, what=f"{src.path}: {path}")
    media = st.OCI_LAYER_GZIP if head[:2] == b"\x1f\x8b" else (
        st.OCI_LAYER_ZSTD if head == b"\x28\xb5\x2f\xfd" else st.OCI_LAYER)
    return {"mediaType": media, "digest": digest, "size": size[0]}


class _Prefixed(io.RawIOBase):
    """A reader yielding ``head`` then the rest of ``f``."""

    def __init__(self, head: bytes, f: IO[bytes]) -> None:
        self.head, self.f = head, f

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        if self.head:
            out, self.head = self.head, b""
            return out
        return self.f.read(n)


