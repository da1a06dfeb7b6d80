"""Helpers for the engine tests: a busybox image in a private store and a private node."""

from __future__ import annotations

import io
import os
import random
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flatstack.engine.containers import Engine
from flatstack.errors import FlatstackError
from flatstack.image.archive import import_image
from flatstack.image.store import Store
from flatstack.network import rules
from flatstack.network.attach import Networks
from flatstack.network.config import NetworkStore
from tests.engine._image_support import oci_layout

IMAGE = "localhost/busybox:latest"
APP_IMAGE = "localhost/app:1"


def rootfs_tar(rootfs: str) -> bytes:
    """An uncompressed layer of a directory tree (symlinks kept, owned by root)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for path in sorted(Path(rootfs).rglob("*")):
            info = tf.gettarinfo(str(path), arcname=str(path.relative_to(rootfs)))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if info.isreg():
                with open(path, "rb") as f:
                    tf.addfile(info, f)
            else:
                tf.addfile(info)
    return buf.getvalue()


def make_layouts(tmp: Path, busybox_rootfs: str) -> dict[str, Path]:
    """Two OCI layouts: plain busybox, and an "app" image with a full image config."""
    base = rootfs_tar(busybox_rootfs)
    app_root = tmp / "app-rootfs"
    (app_root / "etc").mkdir(parents=True)
    (app_root / "srv" / "app").mkdir(parents=True)
    passwd = Path(busybox_rootfs, "etc", "passwd").read_text()
    (app_root / "etc" / "passwd").write_text(passwd + "app:x:1000:1000:app:/srv/app:/bin/sh\n")
    group = Path(busybox_rootfs, "etc", "group").read_text()
    (app_root / "etc" / "group").write_text(group + "app:x:1000:\nextra:x:2000:app\n")
    (app_root / "srv" / "app" / "hello").write_text("hello from the image\n")
    os.chown(app_root / "srv" / "app", 1000, 1000)
    app_layer = rootfs_tar(str(app_root))
    busybox = oci_layout(tmp / "layout-busybox", [base], name=IMAGE,
                         config={"Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]})
    app = oci_layout(tmp / "layout-app", [base, app_layer], name=APP_IMAGE, config={
        "Entrypoint": ["sh", "-c"], "Cmd": ["echo default-cmd"],
        "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=from-image", "KEEP=1"],
        "WorkingDir": "/srv/app", "User": "app", "StopSignal": "SIGUSR1",
        "ExposedPorts": {"8080/tcp": {}}, "Labels": {"org.example.tier": "web"}})
    return {"busybox": busybox, "app": app}


class Node:
    """An engine on private state, run and runtime directories with its own bridge."""

    def __init__(self, tmp: Path, layouts: dict[str, Path]) -> None:
        self.tmp = tmp
        self.state = tmp / "state"
        self.run_dir = tmp / "run"
        self.runtime_root = tmp / "runtime"
        self.socket = self.run_dir / "supervisor.sock"
        self.bridge = f"fse{uuid.uuid4().hex[:8]}"
        self.subnet = f"10.93.{random.randint(0, 255)}.0/24"
        store = Store(str(self.state))
        for layout in layouts.values():
            import_image(store, str(layout))
        self.engine = self.new_engine()

    def new_engine(self) -> Engine:
        """Another Engine over the same directories (what a restarted daemon makes)."""
        nets = NetworkStore(str(self.state / "networks"), default_subnet=self.subnet,
                            default_bridge=self.bridge)
        networks = Networks(str(self.state / "networks"), str(self.run_dir), store=nets)
        return Engine(str(self.state), str(self.runtime_root), str(self.socket),
                      networks=networks)

    def wait_for(self, cid: str, state: str = "exited", timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            info = self.engine.inspect(cid)
            if info["state"] == state or time.monotonic() > deadline:
                return info
            time.sleep(0.02)

    def log_text(self, cid: str) -> str:
        return b"".join(piece for _, piece in self.engine.logs(cid)).decode()

    def leftovers(self) -> dict[str, Any]:
        """Everything a container can leave behind on this node (all should be empty)."""
        from flatstack.network import netns
        from flatstack.runtime import userns_pool

        def listing(path: Path) -> list[str]:
            return sorted(os.listdir(path)) if path.is_dir() else []

        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text()
                  .splitlines() if line.split()[4].startswith(str(self.state))]
        registry = self.run_dir / "userns-ranges"
        ranges: dict[str, Any] = {}
        if registry.exists():
            fd = os.open(registry, os.O_RDONLY)
            try:
                ranges = userns_pool._load(fd)
            finally:
                os.close(fd)
        return {"containers": listing(self.state / "containers"),
                "names": listing(self.state / "names"),
                "supervisor": listing(self.state / "supervisor" / "containers"),
                "runtime": [n for n in listing(self.runtime_root) if not n.startswith(".")],
                "netns": netns.list_names(str(self.run_dir)),
                "attachments": listing(self.state / "networks" / "attachments"),
                "holds": listing(self.state / "images" / "holds"),
                "mounts": mounts, "ranges": sorted(ranges),
                "ipam": sorted(n for n in listing(self.state / "networks" / "ipam" / "flatstack")
                               if n[0].isdigit())}

    def close(self) -> None:
        engine = self.new_engine()
        try:
            for info in engine.list(all=True):
                try:
                    engine.remove(info["id"], force=True)
                except FlatstackError:
                    pass
            engine.reconcile()
            engine._client.call("shutdown")
        except FlatstackError:
            pass
        rules.remove_bridge(self.bridge)
        from flatstack.network import netns

        netns.release_dir(str(self.run_dir))


def empty(leftovers: dict[str, Any]) -> bool:
    return all(not v for v in leftovers.values())


@pytest.fixture(scope="session", name="layouts")
def layouts_fixture(tmp_path_factory: pytest.TempPathFactory,
                    busybox_rootfs: str) -> dict[str, Path]:
    return make_layouts(tmp_path_factory.mktemp("engine-images"), busybox_rootfs)


@pytest.fixture(name="node")
def node_fixture(tmp_path: Path, layouts: dict[str, Path]) -> Iterator[Node]:
    made = Node(tmp_path, layouts)
    yield made
    made.close()
