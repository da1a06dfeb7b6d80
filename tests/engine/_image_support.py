"""Helpers for the image tests: run the CLI, craft layers and OCI layouts, real tools."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from flatstack.testing import free_port

REPO = Path(__file__).resolve().parents[2]
FLATSTACK = REPO / ".venv" / "bin" / "flatstack"


def flatstack(state: Path, *args: str, check: bool = True,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ``flatstack`` CLI against a private state directory."""
    full_env = {**os.environ, "FLATSTACK_STATE_DIR": str(state), **(env or {})}
    proc = subprocess.run([str(FLATSTACK), "image", *args], capture_output=True, text=True,
                          env=full_env, timeout=60, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"flatstack image {' '.join(args)} failed ({proc.returncode}): "
                             f"{proc.stderr}")
    return proc


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def member(name: str, kind: bytes = tarfile.REGTYPE, *, data: bytes = b"", mode: int = 0o644,
           uid: int = 0, gid: int = 0, mtime: int = 1_700_000_000, link: str = "",
           dev: tuple[int, int] = (0, 0), xattrs: dict[str, bytes] | None = None
           ) -> tuple[tarfile.TarInfo, bytes]:
    """One crafted tar member (with PAX xattrs if given)."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, mtime
    info.linkname = link
    info.devmajor, info.devminor = dev
    if kind == tarfile.REGTYPE:
        info.size = len(data)
    if xattrs:
        info.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                            for k, v in xattrs.items()}
    return info, data


def layer_tar(members: Iterable[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    """An uncompressed PAX tarball of ``members``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def oci_layout(path: Path, layers: list[bytes], *, name: str = "localhost/crafted:latest",
               arch: str = "amd64", diff_ids: list[str] | None = None,
               config: dict[str, Any] | None = None) -> Path:
    """Write an OCI image layout holding one image made of ``layers`` (tar or tar+gzip)."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        digest = sha(data)
        (blobs / digest[7:]).write_bytes(data)
        return digest

    descs = []
    computed = []
    for data in layers:
        gz = data[:2] == b"\x1f\x8b"
        if diff_ids is None:
            computed.append(sha(gzip.decompress(data) if gz else data))
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar"
                      + ("+gzip" if gz else ""), "digest": put(data), "size": len(data)})
    cfg = json.dumps({"architecture": arch, "os": "linux", "config": config or {},
                      "rootfs": {"type": "layers", "diff_ids": diff_ids or computed}}).encode()
    manifest = json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": put(cfg), "size": len(cfg)},
                           "layers": descs}).encode()
    index = {"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest),
         "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": name}}]}
    (path / "index.json").write_text(json.dumps(index))
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return path


def store_files(state: Path) -> set[str]:
    """Every file and directory under the store (to check nothing half-written is left)."""
    root = state / "images"
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


def wait_port(host: str, port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def build_umoci_layout(path: Path, rootfs: str, tag: str = "latest") -> Path:
    """An OCI layout made by umoci from ``rootfs`` (one layer, Cmd /bin/sh)."""
    subprocess.run(["umoci", "init", "--layout", str(path)], check=True)
    subprocess.run(["umoci", "new", "--image", f"{path}:{tag}"], check=True)
    subprocess.run(["umoci", "insert", "--image", f"{path}:{tag}", rootfs, "/"], check=True,
                   capture_output=True)
    subprocess.run(["umoci", "config", "--image", f"{path}:{tag}", "--config.cmd", "/bin/sh",
                    "--architecture", "amd64", "--os", "linux"], check=True)
    return path


def podman_save(tmp: Path, layout: Path, name: str) -> tuple[Path, Path]:
    """Load an OCI layout into a private podman store; save it as oci- and docker-archive."""
    conf = tmp / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = ["nofile=20000:20000", '
                    '"nproc=4096:4096"]\n')
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    podman = ["podman", "--root", str(tmp / "root"), "--runroot", str(tmp / "run"),
              "--cgroup-manager", "cgroupfs", "--events-backend", "file",
              "--storage-driver", "vfs"]

    def run(*args: str) -> str:
        return subprocess.run([*podman, *args], env=env, check=True, capture_output=True,
                              text=True).stdout.strip()

    image_id = run("pull", "-q", f"oci:{layout}:latest")
    run("tag", image_id, name)
    oci, docker = tmp / "podman-oci.tar", tmp / "podman-docker.tar"
    run("save", "--format", "oci-archive", "-o", str(oci), name)
    run("save", "--format", "docker-archive", "-o", str(docker), name)
    return oci, docker


@contextlib.contextmanager
def local_registry(tmp: Path) -> Iterator[tuple[str, Path]]:
    """Debian's docker-registry on 127.0.0.1 (deletes enabled) storing under ``tmp``:
    yields ("127.0.0.1:PORT", its storage directory) and stops it afterwards."""
    binary = shutil.which("docker-registry")
    assert binary, "docker-registry is not installed: run make install"
    port = free_port()
    config = tmp / "config.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                      f"    rootdirectory: {tmp / 'data'}\n  delete:\n    enabled: true\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n")
    with open(tmp / "registry.log", "w") as log:
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
    try:
        wait_port("127.0.0.1", port)
        yield f"127.0.0.1:{port}", tmp / "data"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
