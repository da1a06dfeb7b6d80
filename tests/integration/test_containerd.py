"""containerd 1.6 (private socket and state) runs containers through flatrun via ctr."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.containerd]

IMAGE = "localhost/flatstack-busybox:latest"


class Ctr:
    def __init__(self, socket: Path, runtime: str) -> None:
        self.socket = socket
        self.runtime = runtime

    def __call__(self, *args: str, check: bool = True, timeout: float = 60
                 ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["ctr", "--address", str(self.socket), *args],
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} -> {proc.returncode}\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc


def build_oci_archive(work: Path, rootfs: str) -> Path:
    """An OCI image archive made with umoci from the busybox rootfs."""
    layout = work / "layout"
    bundle = work / "umoci-bundle"
    subprocess.run(["umoci", "init", "--layout", str(layout)], check=True)
    subprocess.run(["umoci", "new", "--image", f"{layout}:latest"], check=True)
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:latest", str(bundle)], check=True)
    shutil.rmtree(bundle / "rootfs")
    shutil.copytree(rootfs, bundle / "rootfs", symlinks=True)
    subprocess.run(["umoci", "repack", "--image", f"{layout}:latest", str(bundle)], check=True)
    subprocess.run(["umoci", "config", "--image", f"{layout}:latest",
                    "--config.cmd", "sh"], check=True)
    archive = work / "busybox-oci.tar"
    subprocess.run(["tar", "-C", str(layout), "-cf", str(archive), "."], check=True)
    return archive


@pytest.fixture(scope="module")
def ctr(tmp_path_factory: pytest.TempPathFactory, flatrun_bin: str,
        busybox_rootfs: str) -> Iterator[Ctr]:
    base = tmp_path_factory.mktemp("containerd")
    socket = base / "containerd.sock"
    config = base / "config.toml"
    config.write_text(
        "version = 2\n"
        f'root = "{base}/root"\n'
        f'state = "{base}/state"\n'
        f'[grpc]\n  address = "{socket}"\n'
        f'[ttrpc]\n  address = "{socket}.ttrpc"\n'
        '[plugins."io.containerd.grpc.v1.cri"]\n  disable_apparmor = true\n'
        "disabled_plugins = []\n"
    )
    log = open(base / "containerd.log", "w")  # noqa: SIM115
    daemon = subprocess.Popen(["containerd", "--config", str(config)], stdout=log,
                              stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not socket.exists():
        if daemon.poll() is not None or time.monotonic() > deadline:
            raise AssertionError((base / "containerd.log").read_text())
        time.sleep(0.1)
    client = Ctr(socket, flatrun_bin)
    archive = build_oci_archive(base, busybox_rootfs)
    client("images", "import", "--base-name", "localhost/flatstack-busybox", str(archive))
    yield client
    for line in client("tasks", "ls", "-q", check=False).stdout.split():
        client("tasks", "kill", "-s", "SIGKILL", line, check=False)
    time.sleep(0.5)
    for line in client("containers", "ls", "-q", check=False).stdout.split():
        client("tasks", "delete", "-f", line, check=False)
        client("containers", "delete", line, check=False)
    daemon.terminate()
    daemon.wait(timeout=20)
    log.close()
    subprocess.run(["umount", "-R", str(base / "root")], capture_output=True, check=False)


def test_ctr_run_rm(ctr: Ctr) -> None:
    cid = f"c{uuid.uuid4().hex[:8]}"
    out = ctr("run", "--rm", "--runc-binary", ctr.runtime, IMAGE, cid,
              "sh", "-c", "echo hello $$; readlink /proc/self/ns/mnt")
    hello, pid, mnt = out.stdout.split()
    assert (hello, pid) == ("hello", "1")
    assert mnt != os.readlink("/proc/self/ns/mnt")


def test_ctr_exec_and_kill(ctr: Ctr) -> None:
    cid = f"c{uuid.uuid4().hex[:8]}"
    ctr("run", "-d", "--runc-binary", ctr.runtime, IMAGE, cid, "sleep", "300")
    tasks = ctr("tasks", "ls").stdout
    assert cid in tasks and "RUNNING" in tasks
    out = ctr("tasks", "exec", "--exec-id", "e1", cid, "sh", "-c", "echo in $$; cat /proc/1/comm")
    assert out.stdout.split()[0] == "in" and out.stdout.split()[2] == "sleep"
    ctr("tasks", "kill", "-s", "SIGKILL", cid)
    deadline = time.monotonic() + 10
    while "STOPPED" not in ctr("tasks", "ls").stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "STOPPED" in ctr("tasks", "ls").stdout
    ctr("tasks", "delete", cid)
    ctr("containers", "delete", cid)
    assert cid not in ctr("containers", "ls", "-q").stdout
