"""``flatstack image pull``: Debian's docker-registry, token auth, platforms, TLS, http rules."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.engine._image_support import (
    FLATSTACK,
    build_umoci_layout,
    flatstack,
    layer_tar,
    local_registry,
    member,
    oci_layout,
    store_files,
)

# -- Debian's docker-registry on 127.0.0.1 --------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with local_registry(tmp_path_factory.mktemp("registry")) as (address, _storage):
        yield address


@pytest.fixture(scope="module")
def pushed(registry: str, tmp_path_factory: pytest.TempPathFactory,
           busybox_rootfs: str) -> tuple[str, str]:
    """busybox pushed by skopeo; returns (reference, manifest digest the registry serves)."""
    layout = build_umoci_layout(tmp_path_factory.mktemp("umoci") / "layout", busybox_rootfs)
    ref = f"{registry}/flat/busybox:1.0"
    subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:latest",
                    f"docker://{ref}"], check=True)
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                          f"docker://{ref}"], check=True, capture_output=True).stdout
    return ref, "sha256:" + hashlib.sha256(raw).hexdigest()


def test_pull_from_docker_registry(pushed: tuple[str, str], tmp_path: Path) -> None:
    ref, digest = pushed
    state = tmp_path / "state"
    out = flatstack(state, "pull", ref).stdout
    assert out == f"{ref} {digest}\n"
    [doc] = json.loads(flatstack(state, "inspect", ref).stdout)
    layer = state / "images" / "layers" / "sha256" / doc["RootFS"]["diff_ids"][0][7:]
    assert (layer / "bin" / "busybox").stat().st_size > 100_000, "pull unpacks the layers"
    blobs = sorted((state / "images" / "blobs" / "sha256").iterdir())

    by_digest = ref.rsplit(":", 1)[0] + "@" + digest
    assert flatstack(state, "pull", by_digest).stdout == f"{by_digest} {digest}\n"
    assert sorted((state / "images" / "blobs" / "sha256").iterdir()) == blobs, "deduplicated"

    before = store_files(state)
    missing = ref.rsplit(":", 1)[0] + ":nope"
    proc = flatstack(state, "pull", missing, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("flatstack: ") and "404 MANIFEST_UNKNOWN" in proc.stderr
    proc = flatstack(state, "pull", "Not A Ref", check=False)
    assert proc.returncode == 1 and "invalid reference" in proc.stderr
    assert store_files(state) == before


def test_progress_bars_only_on_a_terminal(pushed: tuple[str, str], tmp_path: Path) -> None:
    ref, digest = pushed
    env = {"FLATSTACK_STATE_DIR": str(tmp_path / "tty"), "COLUMNS": "100"}
    cmd = f"{FLATSTACK} image pull {ref}"
    on_tty = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True,
                            text=True, env={**os.environ, **env}, timeout=60, check=True).stdout
    assert "pulling" in on_tty and "unpacking" in on_tty and "━" in on_tty
    assert on_tty.rstrip().endswith(f"{ref} {digest}")
    quiet = flatstack(tmp_path / "pipe", "pull", ref).stdout
    assert quiet == f"{ref} {digest}\n", "no bars when stdout is not a terminal"


# -- a tiny registry: bearer tokens, a multi-platform index, TLS -----------------------------

TOKEN = "token-for-multi-box"


class Tiny:
    """Serves one repository from memory with docker's bearer-token flow."""

    def __init__(self, blobs: dict[str, bytes], tags: dict[str, bytes], tls: ssl.SSLContext | None,
                 host: str = "127.0.0.1") -> None:
        self.blobs, self.tags, self.log = blobs, tags, []
        self.tamper = False
        tiny = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: bytes, ctype: str = "application/json",
                      extra: dict[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                auth = self.headers.get("Authorization")
                tiny.log.append((url.path, auth, parse_qs(url.query)))
                if url.path == "/token":
                    q = parse_qs(url.query)
                    ok = q.get("service") == ["tiny"] and \
                        q.get("scope") == ["repository:multi/box:pull"]
                    self._send(200 if ok else 403, json.dumps({"token": TOKEN}).encode())
                    return
                if auth != f"Bearer {TOKEN}":
                    realm = f"{tiny.scheme}://{host}:{tiny.port}/token"
                    self._send(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"no"}]}',
                               extra={"WWW-Authenticate": f'Bearer realm="{realm}",'
                                      'service="tiny",scope="repository:multi/box:pull"'})
                    return
                if url.path == "/v2/":
                    self._send(200, b"{}")
                    return
                prefix = "/v2/multi/box/"
                kind, _, name = url.path.removeprefix(prefix).partition("/")
                body = tiny.tags.get(name) or tiny.blobs.get(name) if kind == "manifests" \
                    else tiny.blobs.get(name) if kind == "blobs" else None
                if body is None:
                    self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN",'
                               b'"message":"unknown"}]}')
                    return
                if tiny.tamper and kind == "blobs":
                    body = body[:-1] + bytes([body[-1] ^ 1])
                ctype = json.loads(body).get("mediaType", "") if kind == "manifests" else \
                    "application/octet-stream"
                self._send(200, body, ctype)

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.port = self.server.server_address[1]
        self.scheme = "https" if tls else "http"
        if tls:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _multi_platform(tmp: Path) -> tuple[dict[str, bytes], dict[str, bytes]]:
    blobs: dict[str, bytes] = {}
    entries = []
    for arch in ("arm64", "amd64"):
        layout = oci_layout(tmp / arch, [layer_tar([member("arch", data=arch.encode())])],
                            arch=arch)
        for blob in (layout / "blobs" / "sha256").iterdir():
            blobs["sha256:" + blob.name] = blob.read_bytes()
        desc = json.loads((layout / "index.json").read_text())["manifests"][0]
        desc.pop("annotations")
        desc["platform"] = {"os": "linux", "architecture": arch}
        entries.append(desc)
    index = json.dumps({"schemaVersion": 2,
                        "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": entries}).encode()
    return blobs, {"v1": index}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    assert shutil.which("openssl"), "openssl is not installed"
    d = tmp_path_factory.mktemp("certs")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=flatstack test CA")
    run("req", *ec, "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "ext")
    return {"ca": d / "ca.pem", "cert": d / "srv.pem", "key": d / "srv.key"}


@pytest.fixture
def tls_tiny(tmp_path: Path, certs: dict[str, Path]) -> Iterator[Tiny]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs["cert"], certs["key"])
    server = Tiny(*_multi_platform(tmp_path / "img"), tls=ctx)
    yield server
    server.close()


def _arch_file(state: Path, ref: str) -> str:
    [doc] = json.loads(flatstack(state, "inspect", ref).stdout)
    layer = state / "images" / "layers" / "sha256" / doc["RootFS"]["diff_ids"][0][7:]
    return (layer / "arch").read_text()


def test_token_auth_platforms_and_tls(tls_tiny: Tiny, certs: dict[str, Path],
                                      tmp_path: Path) -> None:
    state = tmp_path / "state"
    ref = f"127.0.0.1:{tls_tiny.port}/multi/box:v1"
    proc = flatstack(state, "pull", ref, check=False)
    assert proc.returncode == 1
    assert "TLS certificate not trusted" in proc.stderr and "--ca-file" in proc.stderr

    flatstack(state, "pull", "--ca-file", str(certs["ca"]), ref)
    assert _arch_file(state, ref) == "amd64", "linux/amd64 is the default platform"
    tokens = [entry for entry in tls_tiny.log if entry[0] == "/token"]
    assert tokens and tokens[0][2] == {"service": ["tiny"],
                                       "scope": ["repository:multi/box:pull"]}
    fetched = [e for e in tls_tiny.log if e[0].startswith("/v2/multi/box/")]
    assert fetched and all(auth == f"Bearer {TOKEN}" for _, auth, _ in fetched[1:])

    env = {"SSL_CERT_FILE": str(certs["ca"])}
    flatstack(state, "pull", "--platform", "linux/arm64", ref, env=env)
    assert _arch_file(state, ref) == "arm64", "SSL_CERT_FILE is honoured; arm64 chosen"

    proc = flatstack(state, "pull", "--platform", "linux/s390x", ref, env=env, check=False)
    assert proc.returncode == 1
    assert "no image for platform linux/s390x (available: linux/amd64, linux/arm64)" \
        in proc.stderr


def test_digest_mismatch_from_registry_leaves_nothing(tls_tiny: Tiny, certs: dict[str, Path],
                                                     tmp_path: Path) -> None:
    state = tmp_path / "state"
    tls_tiny.tamper = True
    ref = f"127.0.0.1:{tls_tiny.port}/multi/box:v1"
    proc = flatstack(state, "pull", "--ca-file", str(certs["ca"]), ref, check=False)
    assert proc.returncode == 1 and "digest mismatch: expected sha256:" in proc.stderr
    assert flatstack(state, "ls", "-q").stdout == ""
    assert not list((state / "images" / "blobs" / "sha256").iterdir()), \
        "manifests fetched before the bad blob are removed too"
    assert not list((state / "images" / "tmp").iterdir())


def test_plain_http_only_for_localhost_or_insecure(tmp_path: Path) -> None:
    server = Tiny(*_multi_platform(tmp_path / "img"), tls=None, host="127.0.0.2")
    try:
        state = tmp_path / "state"
        ref = f"127.0.0.2:{server.port}/multi/box:v1"
        proc = flatstack(state, "pull", ref, check=False)
        assert proc.returncode == 1
        assert "plain http is only used for localhost or with --insecure" in proc.stderr
        assert not [e for e in server.log if e[0].startswith("/v2/multi")], \
            "nothing was fetched over plain http"
        flatstack(state, "pull", "--insecure", ref)
        assert _arch_file(state, ref) == "amd64"
    finally:
        server.close()
