"""podman drives flatrun as its OCI runtime (Debian's podman 4.3, private storage)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.podman]

IMAGE = "localhost/flatstack-busybox:test"


class Podman:
    def __init__(self, base: Path, runtime: str) -> None:
        self.base = base
        self.runtime = runtime
        conf = base / "containers.conf"
        conf.write_text(
            "[containers]\n"
            'default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]\n'
            "[engine]\n"
            'events_logger = "file"\n'
            'cgroup_manager = "cgroupfs"\n'
        )
        self.env = dict(os.environ, CONTAINERS_CONF=str(conf))

    def argv(self, *args: str) -> list[str]:
        return ["podman", "--root", str(self.base / "storage"),
                "--runroot", str(self.base / "run"), "--cgroup-manager", "cgroupfs",
                "--events-backend", "file", "--tmpdir", str(self.base / "tmp"),
                "--runtime", self.runtime, *args]

    def __call__(self, *args: str, check: bool = True, timeout: float = 60
                 ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.argv(*args), capture_output=True, text=True,
                              env=self.env, timeout=timeout, stdin=subprocess.DEVNULL,
                              check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} -> {proc.returncode}\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory, flatrun_bin: str,
           busybox_rootfs: str) -> Iterator[Podman]:
    base = tmp_path_factory.mktemp("podman")
    pm = Podman(base, flatrun_bin)
    tar = base / "busybox.tar"
    subprocess.run(["tar", "-C", busybox_rootfs, "-cf", str(tar), "."], check=True)
    pm("import", str(tar), IMAGE)
    yield pm
    pm("rm", "--all", "--force", check=False)
    subprocess.run(pm.argv("system", "reset", "--force"), env=pm.env, capture_output=True,
                   check=False)


def test_run_rm(podman: Podman) -> None:
    out = podman("run", "--rm", "--network", "none", IMAGE, "sh", "-c",
                 "echo hi from $$; cat /proc/self/uid_map | wc -l")
    assert out.stdout.split()[:4] == ["hi", "from", "1", "1"]
    assert podman("ps", "-a", "-q").stdout.strip() == ""


def test_exit_code(podman: Podman) -> None:
    proc = podman("run", "--rm", "--network", "none", IMAGE, "sh", "-c", "exit 3", check=False)
    assert proc.returncode == 3


def test_detached_exec_stop_rm(podman: Podman) -> None:
    cid = podman("run", "-d", "--network", "none", IMAGE, "sleep", "300").stdout.strip()
    inspect = podman("inspect", "--format", "{{.State.Status}} {{.OCIRuntime}}", cid).stdout
    assert inspect.split()[0] == "running"
    assert inspect.split()[1].endswith("flatrun")
    out = podman("exec", cid, "sh", "-c", "echo exec $$; cat /proc/1/cmdline").stdout
    assert out.startswith("exec ") and "sleep" in out
    started = time.monotonic()
    podman("stop", "-t", "2", cid)
    assert time.monotonic() - started < 10
    assert podman("inspect", "--format", "{{.State.Status}}", cid).stdout.strip() == "exited"
    podman("rm", cid)
    assert podman("ps", "-a", "-q").stdout.strip() == ""


def test_resource_limits(podman: Podman) -> None:
    out = podman("run", "--rm", "--network", "none", "--memory", "64m", "--pids-limit", "50",
                 IMAGE, "sh", "-c",
                 "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max "
                 "2>/dev/null || cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max").stdout
    assert out.split() == [str(64 * 1024 * 1024), "50"]


@pytest.mark.parametrize("network", ["host", "bridge"])
def test_networks(podman: Podman, network: str) -> None:
    out = podman("run", "--rm", "--network", network, IMAGE, "sh", "-c",
                 "ip -o addr show | grep -v ' lo ' | grep -c inet; readlink /proc/self/ns/net")
    count, netns = out.stdout.split()
    assert int(count) >= 1
    host_netns = os.readlink("/proc/self/ns/net")
    assert (netns == host_netns) == (network == "host")


def test_interactive_tty(podman: Podman) -> None:
    """-it goes through --console-socket: the container's stdio is a real pty."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe("podman", podman.argv("run", "-it", "--rm", "--network", "none", IMAGE,
                                         "sh", "-c", "tty; stty size; exit 4"), podman.env)
    output = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
    _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert "/dev/pts/" in text or "/dev/console" in text, text
    assert os.WEXITSTATUS(status) == 4, text
