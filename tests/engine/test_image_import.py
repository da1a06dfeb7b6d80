"""``flatstack image import``: umoci layouts, oci-archive and docker-archive from podman."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

from tests.conftest import Bundles, Flatrun
from tests.engine._image_support import build_umoci_layout, flatstack, podman_save, sha, store_files


@pytest.fixture(scope="module")
def umoci_layout(tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: str) -> Path:
    return build_umoci_layout(tmp_path_factory.mktemp("umoci") / "layout", busybox_rootfs)


@pytest.fixture(scope="module")
def podman_archives(tmp_path_factory: pytest.TempPathFactory,
                    umoci_layout: Path) -> tuple[Path, Path]:
    return podman_save(tmp_path_factory.mktemp("podman"), umoci_layout, "localhost/pbox:v1")


def _inspect(state: Path, ref: str) -> dict:
    [doc] = json.loads(flatstack(state, "inspect", ref).stdout)
    return doc


def test_umoci_layout_dir_and_archive_run_with_flatrun(
        umoci_layout: Path, tmp_path: Path, flatrun: Flatrun, make_bundle: Bundles) -> None:
    state = tmp_path / "state"
    assert flatstack(state, "import", str(umoci_layout), "--name",
                     "busybox:umoci").stdout == "docker.io/library/busybox:umoci\n"
    archive = tmp_path / "umoci.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(umoci_layout, arcname=".")
    flatstack(state, "import", str(archive), "--name", "localhost/from-archive:1")
    a, b = _inspect(state, "busybox:umoci"), _inspect(state, "from-archive:1")
    assert a["Digest"] == b["Digest"], "same manifest bytes from dir and archive"
    assert (a["Architecture"], a["Os"], a["Config"]["Cmd"]) == ("amd64", "linux", ["/bin/sh"])
    index = json.loads((umoci_layout / "index.json").read_text())
    assert a["Digest"] == index["manifests"][0]["digest"]

    [layer] = flatstack(state, "unpack", "busybox:umoci").stdout.split()
    assert Path(layer).name == a["RootFS"]["diff_ids"][0][7:]
    assert os.readlink(Path(layer) / "bin" / "sh") == "/bin/busybox"
    assert os.stat(Path(layer) / "tmp").st_mode & 0o7777 == 0o1777
    bundle = make_bundle(["/bin/sh", "-c", "test -x /bin/busybox && exit 7"],
                         edit=lambda c: c.update(root={"path": layer, "readonly": True}))
    assert flatrun("run", "--bundle", bundle, flatrun.new_id(), check=False).returncode == 7


def test_podman_oci_and_docker_archives(podman_archives: tuple[Path, Path],
                                        tmp_path: Path) -> None:
    oci, docker = podman_archives
    state = tmp_path / "state"
    assert flatstack(state, "import", str(oci)).stdout == "localhost/pbox:v1\n"
    assert flatstack(state, "import", str(docker), "--name",
                     "localhost/pdock:v1").stdout == "localhost/pdock:v1\n"
    from_oci, from_docker = _inspect(state, "pbox:v1"), _inspect(state, "pdock:v1")
    assert from_docker["Manifest"]["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert from_docker["Id"] == from_oci["Id"], "docker config kept byte for byte"
    with tarfile.open(docker) as tf:
        [entry] = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert entry["RepoTags"] == ["localhost/pbox:v1"]
        layer_bytes = tf.extractfile(entry["Layers"][0]).read()  # type: ignore[union-attr]
    assert from_docker["Manifest"]["layers"][0]["digest"] == sha(layer_bytes)
    dirs = {flatstack(state, "unpack", ref).stdout for ref in ("pbox:v1", "pdock:v1")}
    assert len(dirs) == 1, "both unpack into the one directory keyed by diff_id"
    assert (Path(dirs.pop().strip()) / "bin" / "busybox").stat().st_size > 100_000


def test_bad_archives_leave_nothing(umoci_layout: Path, podman_archives: tuple[Path, Path],
                                    tmp_path: Path) -> None:
    state = tmp_path / "state"
    flatstack(state, "import", str(podman_archives[0]))
    before = store_files(state)

    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(podman_archives[0].read_bytes()[:300_000])
    proc = flatstack(state, "import", str(truncated), "--name", "x", check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"flatstack: {truncated}: ") and "unexpected end" in \
        proc.stderr

    tampered = tmp_path / "tampered"
    os.system(f"cp -a {umoci_layout} {tampered}")
    manifest = json.loads((tampered / "index.json").read_text())["manifests"][0]["digest"]
    layer_desc = json.loads((tampered / "blobs" / "sha256" / manifest[7:]).read_text())[
        "layers"][0]
    blob = tampered / "blobs" / "sha256" / layer_desc["digest"][7:]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    proc = flatstack(state, "import", str(tampered), "--name", "tampered", check=False)
    assert proc.returncode == 1
    assert f"digest mismatch: expected {layer_desc['digest']}, got sha256:" in proc.stderr

    proc = flatstack(state, "import", str(umoci_layout), check=False)
    assert "named only by tag 'latest'; give --name" in proc.stderr
    proc = flatstack(state, "import", str(tmp_path / "missing.tar"), check=False)
    assert proc.stderr == f"flatstack: {tmp_path / 'missing.tar'}: no such file or directory\n"
    (tmp_path / "empty").mkdir()
    proc = flatstack(state, "import", str(tmp_path / "empty"), check=False)
    assert "neither an OCI layout" in proc.stderr and proc.returncode == 1
    proc = flatstack(state, "inspect", "unknown:tag", check=False)
    assert proc.stderr == "flatstack: image 'unknown:tag' not found in the store\n"

    assert store_files(state) == before, "failed imports wrote no blob, name or temp file"
    assert flatstack(state, "ls", "-q").stdout == "localhost/pbox:v1\n"
