"""``flatstack image ...`` through the daemon: import, ls, inspect, rm, prune, pull."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e._daemon import APP_IMAGE, FLATSTACK, IMAGE, Daemon
from tests.engine._image_support import build_umoci_layout, local_registry, store_files


def test_import_ls_inspect_rm_prune(daemon: Daemon, layouts: dict[str, Path]) -> None:
    assert daemon.cli("image", "import", str(layouts["busybox"])).stdout == f"{IMAGE}\n"
    assert daemon.cli("image", "import", str(layouts["app"])).stdout == f"{APP_IMAGE}\n"
    assert set(daemon.cli("image", "ls", "-q").stdout.split()) == {IMAGE, APP_IMAGE}
    rows = json.loads(daemon.cli("image", "ls", "--format", "json").stdout)
    assert {r["Name"] for r in rows} == {IMAGE, APP_IMAGE}
    assert all(r["Digest"].startswith("sha256:") and r["Size"] > 0 for r in rows)
    table = daemon.cli("image", "ls").stdout.splitlines()
    assert table[0].split() == ["NAME", "DIGEST", "CREATED", "SIZE"] and len(table) == 3

    [doc] = json.loads(daemon.cli("image", "inspect", "app:1").stdout)
    assert doc["Name"] == APP_IMAGE and doc["Config"]["WorkingDir"] == "/srv/app"
    assert doc["Config"]["ExposedPorts"] == {"8080/tcp": {}}
    with daemon.api() as api:
        assert api.get(f"/v1/images/{APP_IMAGE}").json()["Digest"] == doc["Digest"]

    blobs = daemon.state / "images" / "blobs" / "sha256"
    before = set(p.name for p in blobs.iterdir())
    assert daemon.cli("image", "rm", "app:1").stdout == f"untagged {APP_IMAGE}\n"
    after = set(p.name for p in blobs.iterdir())
    assert doc["Digest"][7:] in before - after  # its own blobs went, the shared layer stayed
    assert daemon.cli("image", "ls", "-q").stdout == f"{IMAGE}\n"
    assert daemon.cli("image", "prune").stdout.startswith("removed 0 blobs/layers")


def test_image_errors_are_clear(daemon: Daemon, tmp_path: Path) -> None:
    proc = daemon.cli("image", "inspect", "nope:1", check=False)
    assert proc.returncode == 1 and proc.stderr == "flatstack: image 'nope:1' not found in " \
        "the store\n"
    proc = daemon.cli("image", "rm", "nope:1", check=False)
    assert proc.returncode == 1 and "not found" in proc.stderr
    proc = daemon.cli("image", "import", str(tmp_path / "missing.tar"), check=False)
    assert proc.returncode == 1 and "missing.tar: no such file or directory" in proc.stderr
    with daemon.api() as api:
        r = api.post("/v1/images/import", json={"path": str(tmp_path / "missing.tar")})
        assert r.status_code == 400 and r.json()["field"] == "path"
        r = api.post("/v1/images/pull", json={"ref": "Not A Ref"})
        assert r.status_code == 400 and r.json()["field"] == "ref"
        assert "invalid reference" in r.json()["error"]
        r = api.get("/v1/images/nope:1")
        assert r.status_code == 404 and "not found" in r.json()["error"]
    assert daemon.cli("image", "ls", "-q").stdout == ""


_STORAGE: dict[str, Path] = {}


def registry_storage(registry: str) -> Path:
    return _STORAGE[registry]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's docker-registry on 127.0.0.1 with a temporary storage directory."""
    with local_registry(tmp_path_factory.mktemp("registry")) as (address, storage):
        _STORAGE[address] = storage
        yield address


@pytest.fixture(scope="module")
def pushed(registry: str, tmp_path_factory: pytest.TempPathFactory,
           busybox_rootfs: str) -> str:
    layout = build_umoci_layout(tmp_path_factory.mktemp("umoci") / "layout", busybox_rootfs)
    ref = f"{registry}/e2e/busybox:1.0"
    subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:latest",
                    f"docker://{ref}"], check=True)
    return ref


def test_pull_streams_progress_and_run_pulls_a_missing_image(daemon: Daemon,
                                                             pushed: str) -> None:
    with daemon.api() as api, api.stream("POST", "/v1/images/pull",
                                         json={"ref": pushed}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "application/x-ndjson"
        events = [json.loads(line) for line in resp.iter_lines() if line]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "pulled" and "progress" in kinds
    assert {e["key"] for e in events if e["event"] == "start"} == \
        {e["key"] for e in events if e["event"] == "done"}
    advanced = sum(e["advance"] for e in events if e["event"] == "progress")
    assert advanced > 1_000_000  # the busybox layer went through
    assert events[-1]["name"] == pushed and events[-1]["digest"].startswith("sha256:")

    # Not on a terminal: the CLI pull is quiet, one result line.
    out = daemon.cli("image", "pull", pushed).stdout
    assert out == f"{pushed} {events[-1]['digest']}\n"
    daemon.cli("image", "rm", pushed)
    # On a terminal: rich progress bars (util-linux script gives the CLI a pty)
    tty = subprocess.run(["script", "-qec", f"{FLATSTACK} image pull {pushed}", "/dev/null"],
                         capture_output=True, text=True, env=daemon.env, timeout=60,
                         check=True).stdout
    assert "\u2501" in tty and "MB" in tty and tty.rstrip().endswith(events[-1]["digest"])
    daemon.cli("image", "rm", pushed)

    # run pulls what the store lacks, as podman does.
    proc = daemon.cli("run", "--rm", "--network", "none", pushed, "echo", "pulled-and-ran")
    assert proc.stdout == "pulled-and-ran\n"
    assert daemon.cli("image", "ls", "-q").stdout == f"{pushed}\n"

    missing = pushed.rsplit(":", 1)[0] + ":nope"
    proc = daemon.cli("run", "--rm", missing, "true", check=False)
    assert proc.returncode == 125 and "pulling it failed" in proc.stderr
    assert "manifest unknown" in proc.stderr


def test_corrupt_layer_mid_pull_is_reported_and_leaves_nothing(
        daemon: Daemon, registry: str, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / "payload").write_bytes(os.urandom(300_000))
    layout = build_umoci_layout(tmp_path / "layout", str(rootfs))
    ref = f"{registry}/e2e/corrupt:1"
    subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:latest",
                    f"docker://{ref}"], check=True)
    manifest = json.loads(subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
        check=True, capture_output=True).stdout)
    layer = manifest["layers"][0]["digest"].split(":")[1]
    [data] = Path(registry_storage(registry)).rglob(f"blobs/sha256/{layer[:2]}/{layer}/data")
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    data.write_bytes(bytes(blob))

    before = store_files(daemon.state)
    with daemon.api() as api, api.stream("POST", "/v1/images/pull", json={"ref": ref}) as resp:
        assert resp.status_code == 200  # the manifest was fine: the stream had begun
        events = [json.loads(line) for line in resp.iter_lines() if line]
    assert events[0]["event"] == "start" and events[-1]["event"] == "error"
    assert events[-1]["field"] == "ref" and "digest mismatch" in events[-1]["error"]
    proc = daemon.cli("image", "pull", ref, check=False)
    assert proc.returncode == 1 and "digest mismatch" in proc.stderr
    proc = daemon.cli("run", "--rm", ref, "true", check=False)
    assert proc.returncode == 125 and "digest mismatch" in proc.stderr
    assert daemon.cli("image", "ls", "-q").stdout == ""
    assert store_files(daemon.state) - before <= {"tmp", "gc.lock", "index.lock"}
