"""The content-addressable store: references, verified writes, names, rm and prune."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from flatstack.image import ImageError
from flatstack.image.reference import parse
from flatstack.image.store import Store
from tests.engine._image_support import flatstack, layer_tar, member, oci_layout, sha, store_files


@pytest.mark.parametrize(("text", "canonical", "host"), [
    ("busybox", "docker.io/library/busybox:latest", "registry-1.docker.io"),
    ("user/app:1.2", "docker.io/user/app:1.2", "registry-1.docker.io"),
    ("127.0.0.1:5000/a/b:v1", "127.0.0.1:5000/a/b:v1", "127.0.0.1:5000"),
    ("localhost/x", "localhost/x:latest", "localhost"),
    ("quay.io/a/b@sha256:" + "a" * 64, "quay.io/a/b@sha256:" + "a" * 64, "quay.io"),
])
def test_reference_normalization(text: str, canonical: str, host: str) -> None:
    ref = parse(text)
    assert (str(ref), ref.host) == (canonical, host)


@pytest.mark.parametrize(("text", "why"), [
    ("UPPER/case", "lowercase"), ("bad_host:5000/x", "bad registry"), ("x@sha256:12", "digest"),
    ("", "empty"), ("x:-tag", "bad tag"),
])
def test_bad_references(text: str, why: str) -> None:
    with pytest.raises(ImageError, match=why):
        parse(text)


def test_blob_writes_are_verified_and_atomic(tmp_path: Path) -> None:
    store = Store(str(tmp_path)).ensure()
    data = b"hello blobs\n"
    digest = store.write_bytes(data, sha(data))
    assert Path(store.blob_path(digest)).read_bytes() == data
    assert store.write_bytes(data, sha(data)) == digest, "deduplicated by digest"
    before = store_files(tmp_path)
    with pytest.raises(ImageError,
                       match=r"digest mismatch: expected sha256:0{64}, got sha256:[0-9a-f]{64}"):
        store.write_bytes(b"other", "sha256:" + "0" * 64)
    with pytest.raises(ImageError, match="size mismatch: expected 3 bytes, got more than 3"):
        store.write_blob(io.BytesIO(b"other"), sha(b"other"), size=3)
    with pytest.raises(ImageError, match="malformed digest"):
        store.blob_path("sha256:../../etc/passwd")
    assert store_files(tmp_path) == before, "a failed write leaves nothing behind"
    assert os.listdir(store.tmp) == []


def test_layout_rm_and_prune(tmp_path: Path) -> None:
    shared = layer_tar([member("shared", data=b"shared layer")])
    own_a = layer_tar([member("a", data=b"only a")])
    own_b = layer_tar([member("b", data=b"only b")])
    state = tmp_path / "state"
    flatstack(state, "import", str(oci_layout(tmp_path / "la", [shared, own_a],
                                              name="localhost/a:1")))
    flatstack(state, "import", str(oci_layout(tmp_path / "lb", [shared, own_b],
                                              name="localhost/b:1")))
    root = state / "images"
    index = json.loads((root / "index.json").read_text())
    assert json.loads((root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    names = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert names == ["localhost/a:1", "localhost/b:1"]
    blobs = set(os.listdir(root / "blobs" / "sha256"))
    assert len(blobs) == 7, "3 layers (one shared), 2 configs, 2 manifests"
    flatstack(state, "unpack", "a:1")
    flatstack(state, "unpack", "localhost/b:1")
    assert len(os.listdir(root / "layers" / "sha256")) == 3
    ls = json.loads(flatstack(state, "ls", "--format", "json").stdout)
    assert [r["Name"] for r in ls] == ["localhost/a:1", "localhost/b:1"]

    assert flatstack(state, "rm", "a:1").stdout == "untagged localhost/a:1\n"
    left = set(os.listdir(root / "blobs" / "sha256"))
    assert sha(shared)[7:] in left and sha(own_a)[7:] not in left and len(left) == 4
    assert sorted(os.listdir(root / "layers" / "sha256")) == sorted(
        [sha(shared)[7:], sha(own_b)[7:]])

    orphan = Store(str(state)).write_bytes(b"orphan from an interrupted pull")
    (root / "tmp" / "blob-stale").write_bytes(b"half a blob")
    out = flatstack(state, "prune").stdout
    assert out.startswith("removed 1 blobs/layers")
    assert not Path(Store(str(state)).blob_path(orphan)).exists()
    assert os.listdir(root / "tmp") == []
    assert set(os.listdir(root / "blobs" / "sha256")) == left

    proc = flatstack(state, "rm", "nope:1", check=False)
    assert proc.returncode == 1 and proc.stderr == "flatstack: image 'nope:1' not found in the " \
        "store\n"
    proc = flatstack(state, "inspect", "Bad Ref", check=False)
    assert proc.returncode == 1 and "not found" in proc.stderr
