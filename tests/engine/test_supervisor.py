"""The node supervisor: in-process container starts, exit records, surviving restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flatstack.engine.client import SupervisorClient
from flatstack.engine.supervisor import spawn
from flatstack.errors import FlatstackError
from tests.conftest import REPO, Bundles


class Node:
    """A supervisor on private directories, as the engine would run it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.state = str(tmp / "state")
        self.socket = str(tmp / "supervisor.sock")
        self.runtime_root = str(tmp / "runtime")
        self.log = str(tmp / "supervisor.log")
        self.client = SupervisorClient(self.socket)
        self.pid = 0

    def spawn(self) -> int:
        self.pid = spawn(self.state, self.socket, self.runtime_root, self.log)
        return self.pid

    def start(self, cid: str, bundle: str) -> dict[str, Any]:
        return self.client.call("start", id=cid, bundle=bundle, log=str(self.tmp / f"{cid}.log"))

    def wait_exit(self, cid: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.client.call("status", id=cid)
            if status["state"] == "exited":
                return status
            time.sleep(0.02)
        raise AssertionError(f"{cid} did not exit: {status}")


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    yield n
    try:
        for status in n.client.call("list"):
            n.client.call("remove", id=status["id"], force=True)
        n.client.call("shutdown")
    except FlatstackError:
        pass
    for cid in os.listdir(n.runtime_root) if os.path.isdir(n.runtime_root) else []:
        if not cid.startswith("."):
            subprocess.run([str(REPO / ".venv/bin/flatrun"), "--root", n.runtime_root,
                            "delete", "--force", cid], check=False, capture_output=True)


def _ppid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError("no PPid")


def test_start_log_and_exit_code(node: Node, make_bundle: Bundles) -> None:
    supervisor = node.spawn()
    bundle = make_bundle(["sh", "-c", "echo hello; echo oops >&2; sleep 0.3; exit 7"])
    status = node.start("c1", bundle)
    assert status["state"] == "running"
    assert _ppid(status["pid"]) == supervisor, "the init is the supervisor's own child"
    done = node.wait_exit("c1")
    assert done["exit"]["code"] == 7 and done["exit"]["reason"] == "exit"
    assert not done["exit"]["oom_killed"]
    assert (node.tmp / "c1.log").read_text().split() == ["hello", "oops"]


def test_oom_kill_is_classified(node: Node, make_bundle: Bundles) -> None:
    node.spawn()

    def edit(config: dict[str, Any]) -> None:
        config["linux"]["resources"]["memory"] = {"limit": 32 << 20, "swap": 32 << 20}

    bundle = make_bundle(["sh", "-c", "dd if=/dev/zero of=/dev/null bs=128M count=1"],
                         edit=edit)
    node.start("bomb", bundle)
    done = node.wait_exit("bomb")
    assert done["exit"]["oom_killed"] is True
    assert done["exit"]["reason"] == "oom" and done["exit"]["code"] == 137


def test_containers_outlive_a_killed_daemon(node: Node, make_bundle: Bundles,
                                            tmp_path: Path) -> None:
    """A "daemon" process spawns the supervisor and is then SIGKILLed: the supervisor
    and the container keep running, and the exit that happens while the daemon is
    gone is there for the next client."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]);"
            "from flatstack.engine.supervisor import spawn;"
            "print(spawn(*sys.argv[2:6]), flush=True); import time; time.sleep(60)")
    daemon = subprocess.Popen([sys.executable, "-c", code, str(REPO / "src"), node.state,
                               node.socket, node.runtime_root, node.log],
                              stdout=subprocess.PIPE, text=True)
    assert daemon.stdout is not None
    supervisor = int(daemon.stdout.readline())
    go = tmp_path / "go"
    bundle = make_bundle(["sh", "-c", "while [ ! -e /go/go ]; do sleep 0.05; done; exit 3"],
                         edit=lambda c: c["mounts"].append(
                             {"destination": "/go", "type": "bind", "source": str(tmp_path),
                              "options": ["rbind", "ro"]}))
    node.start("survivor", bundle)
    daemon.kill()
    daemon.wait()
    assert node.client.call("ping")["pid"] == supervisor
    go.write_text("")
    done = node.wait_exit("survivor")
    assert done["exit"]["code"] == 3


def test_new_supervisor_adopts_running_containers(node: Node, make_bundle: Bundles) -> None:
    first = node.spawn()
    node.start("long", make_bundle(["sleep", "30"]))
    node.start("short", make_bundle(["sh", "-c", "sleep 0.5"]))
    _kill(first)
    time.sleep(0.2)
    second = node.spawn()
    assert second != first
    assert node.client.call("status", id="long")["state"] == "running"
    done = node.wait_exit("short")
    assert done["exit"]["code"] is None and done["exit"]["reason"].startswith("unknown")
    node.client.call("kill", id="long", signal=9)
    assert node.wait_exit("long")["exit"]["reason"].startswith("unknown")


def test_bad_requests_leave_nothing(node: Node, make_bundle: Bundles, tmp_path: Path) -> None:
    node.spawn()
    with pytest.raises(FlatstackError, match="unknown request 'explode'"):
        node.client.call("explode")
    with pytest.raises(FlatstackError, match=r"config\.json not found"):
        node.start("broken", str(tmp_path))
    assert node.client.call("list") == []
    assert not os.path.exists(os.path.join(node.runtime_root, "broken"))
    with pytest.raises(FlatstackError, match="no such container: ghost"):
        node.client.call("status", id="ghost")
    bundle = make_bundle(["sleep", "30"])
    node.start("twice", bundle)
    with pytest.raises(FlatstackError, match="already exists"):
        node.start("twice", bundle)
    with pytest.raises(FlatstackError, match="is running"):
        node.client.call("remove", id="twice")
    node.client.call("remove", id="twice", force=True)
    assert node.client.call("list") == []
    assert not os.path.exists(os.path.join(node.runtime_root, "twice"))
