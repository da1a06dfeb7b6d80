"""Shared fixtures: a real flatrun binary, busybox bundles and a private state root."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
FLATRUN = REPO / ".venv" / "bin" / "flatrun"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The suite creates real namespaces, cgroups and mounts: without root, say so once
    and stop, rather than let hundreds of tests fail (or skip) one by one."""
    needs_root = [i for i in items if any(part in i.nodeid for part in (
        "integration", "security", "engine", "e2e", "control", "bench", "rootless"))]
    if needs_root and os.geteuid() != 0:
        raise pytest.UsageError(f"{len(needs_root)} collected tests need root: run the "
                                "suite as root (make test)")
    tools = {"podman": ("podman",), "containerd": ("containerd", "ctr", "umoci")}
    for marker, names in tools.items():
        missing = [n for n in names if shutil.which(n) is None]
        if missing and any(i.get_closest_marker(marker) for i in items):
            raise pytest.UsageError(f"{', '.join(missing)} not installed: the {marker} tests "
                                    "drive the real tools (make install installs them)")


@pytest.fixture(scope="session")
def flatrun_bin() -> str:
    if not FLATRUN.exists() or "-IS" not in FLATRUN.read_text().splitlines()[0]:
        subprocess.run([str(REPO / "scripts" / "install-launcher.sh")], check=True)
    return str(FLATRUN)


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> str:
    from flatstack.tools.busybox import build_rootfs

    root = tmp_path_factory.mktemp("busybox") / "rootfs"
    return build_rootfs(str(root))


@pytest.fixture(scope="session")
def base_spec() -> dict[str, Any]:
    from flatstack.oci.defaults import default_spec

    return default_spec()


class Bundles:
    """Makes bundles that share one read-only busybox rootfs."""

    def __init__(self, tmp: Path, rootfs: str, spec: dict[str, Any]) -> None:
        self.tmp = tmp
        self.rootfs = rootfs
        self.spec = spec
        self.count = 0

    def __call__(self, args: list[str] | None = None, *, own_rootfs: bool = False,
                 edit: Callable[[dict[str, Any]], None] | None = None) -> str:
        self.count += 1
        bundle = self.tmp / f"bundle{self.count}"
        bundle.mkdir()
        config = copy.deepcopy(self.spec)
        if own_rootfs:
            shutil.copytree(self.rootfs, bundle / "rootfs", symlinks=True)
            config["root"] = {"path": "rootfs", "readonly": False}
        else:
            config["root"] = {"path": self.rootfs, "readonly": True}
        config["process"]["terminal"] = False
        if args is not None:
            config["process"]["args"] = args
        if edit is not None:
            edit(config)
        (bundle / "config.json").write_text(json.dumps(config, indent=2))
        return str(bundle)


@pytest.fixture
def make_bundle(tmp_path: Path, busybox_rootfs: str, base_spec: dict[str, Any]) -> Bundles:
    return Bundles(tmp_path, busybox_rootfs, base_spec)


class Flatrun:
    """Runs the real flatrun binary against a private --root."""

    def __init__(self, binary: str, root: str, tmp: Path) -> None:
        self.binary = binary
        self.root = root
        self.tmp = tmp
        self.created: list[str] = []

    def __call__(self, *args: str, check: bool = True, stdin: bytes | None = None,
                 timeout: float = 30) -> subprocess.CompletedProcess[str]:
        # Files, never pipes: the container inherits create's stdio.
        out_path = self.tmp / f"out-{uuid.uuid4().hex[:8]}"
        err_path = self.tmp / f"err-{uuid.uuid4().hex[:8]}"
        with open(out_path, "w+") as out, open(err_path, "w+") as err:
            proc = subprocess.run(
                [self.binary, "--root", self.root, *args],
                stdout=out, stderr=err, input=stdin, timeout=timeout, check=False,
            )
        result = subprocess.CompletedProcess(proc.args, proc.returncode,
                                             out_path.read_text(), err_path.read_text())
        if check and proc.returncode != 0:
            raise AssertionError(f"flatrun {' '.join(args)} failed ({proc.returncode}): "
                                 f"{result.stderr}")
        return result

    def state(self, cid: str) -> dict[str, Any]:
        return json.loads(self("state", cid).stdout)

    def new_id(self) -> str:
        cid = f"t{uuid.uuid4().hex[:10]}"
        self.created.append(cid)
        return cid


@pytest.fixture
def flatrun(flatrun_bin: str, tmp_path: Path) -> Iterator[Flatrun]:
    root = tmp_path / "root"
    runner = Flatrun(flatrun_bin, str(root), tmp_path)
    yield runner
    for cid in runner.created:
        runner("delete", "--force", cid, check=False)


def cgroup_dirs(cid: str) -> list[str]:
    """Every cgroup directory on the host whose name is the container id."""
    found = []
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        for path in hierarchy.rglob(cid) if hierarchy.is_dir() else []:
            found.append(str(path))
    return found


@contextlib.contextmanager
def namespace_holder(kind: str) -> Iterator[str]:
    """A process in a new ``kind`` namespace (util-linux ``unshare`` flag name: net, uts,
    ipc...); yields its ``/proc/PID/ns/...`` path and kills it afterwards."""
    holder = subprocess.Popen(["unshare", f"--{kind}", "--fork", "sleep", "60"],
                              start_new_session=True)
    try:
        own = os.readlink(f"/proc/self/ns/{kind}")
        deadline = time.monotonic() + 3
        while os.readlink(f"/proc/{holder.pid}/ns/{kind}") == own:
            assert time.monotonic() < deadline, f"unshare --{kind} did not take"
            time.sleep(0.01)
        yield f"/proc/{holder.pid}/ns/{kind}"
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
