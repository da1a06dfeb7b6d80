"""The node supervisor: in-process container starts, exit records, surviving restarts."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flatstack.engine.client import ExitWatch, SupervisorClient
from flatstack.engine.logs import read_log
from flatstack.engine.supervisor import decode_exec, spawn
from flatstack.errors import FlatstackError
from flatstack.runtime.console import receive_master
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


class UniqueBundles:
    """make_bundle with a cgroup path of its own (``/<id>`` would clash with other
    test runs on the machine using the same short container ids)."""

    def __init__(self, bundles: Bundles) -> None:
        self.bundles = bundles
        self.tag = uuid.uuid4().hex[:10]

    def __call__(self, args: list[str] | None = None, *, own_rootfs: bool = False,
                 edit: Callable[[dict[str, Any]], None] | None = None) -> str:
        path = f"/fsb-sup-{self.tag}-{self.bundles.count + 1}"

        def both(config: dict[str, Any]) -> None:
            config["linux"]["cgroupsPath"] = path
            if edit is not None:
                edit(config)

        return self.bundles(args, own_rootfs=own_rootfs, edit=both)


@pytest.fixture(name="make_bundle")
def unique_bundles_fixture(make_bundle: Bundles) -> UniqueBundles:
    """Bundles with a cgroup path of their own (shared by the engine's I/O tests)."""
    return UniqueBundles(make_bundle)


@pytest.fixture(name="node")
def supervisor_node_fixture(tmp_path: Path) -> Iterator[Node]:
    """A supervisor on temporary directories, cleaned up afterwards."""
    n = Node(tmp_path)
    yield n
    cleanup_node(n)


def cleanup_node(n: Node) -> None:
    """Remove every container of the node and stop its supervisor."""
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


def test_start_log_and_exit_code(node: Node, make_bundle: UniqueBundles) -> None:
    supervisor = node.spawn()
    bundle = make_bundle(["sh", "-c", "echo hello; echo oops >&2; sleep 0.3; exit 7"])
    status = node.start("c1", bundle)
    assert status["state"] == "running"
    assert _ppid(status["pid"]) == supervisor, "the init is the supervisor's own child"
    done = node.wait_exit("c1")
    assert done["exit"]["code"] == 7 and done["exit"]["reason"] == "exit"
    assert not done["exit"]["oom_killed"]
    assert list(read_log(str(node.tmp / "c1.log"))) == [("stdout", b"hello\n"),
                                                         ("stderr", b"oops\n")]


def test_hold_creates_and_release_starts(node: Node, make_bundle: UniqueBundles) -> None:
    """``start`` with ``hold`` leaves the container created (the engine configures its
    network meanwhile); nothing of the user's runs before ``release``."""
    node.spawn()
    bundle = make_bundle(["sh", "-c", "echo ran; exit 3"])
    status = node.client.call("start", id="held", bundle=bundle,
                              log=str(node.tmp / "held.log"), hold=True)
    state = subprocess.run([str(REPO / ".venv/bin/flatrun"), "--root", node.runtime_root,
                            "state", "held"], capture_output=True, text=True, check=True)
    assert '"status": "created"' in state.stdout and status["pid"] > 0
    time.sleep(0.2)
    assert list(read_log(str(node.tmp / "held.log"))) == []
    assert node.client.call("status", id="held")["state"] == "running"  # the init lives
    node.client.call("release", id="held")
    assert node.wait_exit("held")["exit"]["code"] == 3
    assert list(read_log(str(node.tmp / "held.log"))) == [("stdout", b"ran\n")]
    with pytest.raises(FlatstackError, match="no such container: nope"):
        node.client.call("release", id="nope")


def test_wait_answers_at_the_exit_and_survives_hung_up_waiters(
        node: Node, make_bundle: UniqueBundles) -> None:
    """``wait`` replies when the container exits (not before), at once for an exited one;
    waiters that hang up are dropped; removing a running container answers its waiters."""
    node.spawn()
    node.start("w1", make_bundle(["sleep", "30"]))
    quitter = ExitWatch(node.socket, "w1")
    assert not quitter.wait(0.2) and not quitter.broken
    quitter.close()  # hangs up: the supervisor must drop it, not fail on it
    watch = ExitWatch(node.socket, "w1")
    assert not watch.wait(0.3) and node.client.call("status", id="w1")["state"] == "running"
    began = time.monotonic()
    node.client.call("kill", id="w1", signal=9)
    assert watch.wait(5) and time.monotonic() - began < 1
    assert node.client.call("wait", id="w1")["exit"]["code"] == 137  # exited: at once

    node.start("w2", make_bundle(["sleep", "30"]))
    doomed = ExitWatch(node.socket, "w2")
    node.client.call("remove", id="w2", force=True)
    assert doomed.wait(0.5)  # killed by the removal: that is its exit
    assert node.client.call("ping")  # still serving


def test_oom_kill_is_classified(node: Node, make_bundle: UniqueBundles) -> None:
    node.spawn()

    def edit(config: dict[str, Any]) -> None:
        config["linux"]["resources"]["memory"] = {"limit": 32 << 20, "swap": 32 << 20}

    bundle = make_bundle(["sh", "-c", "dd if=/dev/zero of=/dev/null bs=128M count=1"],
                         edit=edit)
    node.start("bomb", bundle)
    done = node.wait_exit("bomb")
    assert done["exit"]["oom_killed"] is True
    assert done["exit"]["reason"] == "oom" and done["exit"]["code"] == 137


def test_containers_outlive_a_killed_daemon(node: Node, make_bundle: UniqueBundles,
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


def test_new_supervisor_adopts_running_containers(node: Node, make_bundle: UniqueBundles) -> None:
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


def test_bad_requests_leave_nothing(node: Node, make_bundle: UniqueBundles, tmp_path: Path) -> None:
    node.spawn()
    with pytest.raises(FlatstackError, match="unknown request 'explode'"):
        node.client.call("explode")
    with pytest.raises(FlatstackError, match=r"config\.json not found"):
        node.start("broken", str(tmp_path))
    assert not (tmp_path / "broken.log").exists()
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


# -- terminal ----------------------------------------------------------------------------
class ConsoleSocket:
    """A listening console socket, as the CLI holds one for ``run -it`` / ``exec -it``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(1)
        self.server.settimeout(10)

    def master(self) -> int:
        conn, _ = self.server.accept()
        with conn:
            return receive_master(os.dup(conn.fileno()))

    def close(self) -> None:
        self.server.close()


def _read_until(fd: int, needle: bytes, timeout: float = 10) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while needle not in data:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"no {needle!r} from the terminal; got {data!r}")
        data += os.read(fd, 4096)
    return data


def _tty_bundle(make_bundle: UniqueBundles, args: list[str]) -> str:
    def edit(config: dict[str, Any]) -> None:
        config["process"]["terminal"] = True

    return make_bundle(args, edit=edit)


def test_start_with_a_terminal(node: Node, make_bundle: UniqueBundles, tmp_path: Path) -> None:
    node.spawn()
    console = ConsoleSocket(tmp_path / "console.sock")
    bundle = _tty_bundle(make_bundle, ["sh", "-c", "[ -t 0 ] && [ -t 1 ] && echo is-a-tty; "
                                       "read line; echo got-$line; exit 4"])
    status = node.client.call("start", id="tty", bundle=bundle, log=str(tmp_path / "tty.log"),
                              console_socket=console.path)
    assert status["tty"] is True
    master = console.master()
    try:
        assert b"is-a-tty" in _read_until(master, b"is-a-tty")
        os.write(master, b"hello\n")
        echoed = _read_until(master, b"got-hello")
        assert b"hello\r\n" in echoed, "the terminal echoes what is typed"
    finally:
        os.close(master)
        console.close()
    assert node.wait_exit("tty")["exit"]["code"] == 4


def test_terminal_and_console_socket_must_agree(node: Node, make_bundle: UniqueBundles,
                                                tmp_path: Path) -> None:
    node.spawn()
    log = str(tmp_path / "x.log")
    with pytest.raises(FlatstackError, match="console_socket: required"):
        node.client.call("start", id="t1", bundle=_tty_bundle(make_bundle, ["true"]), log=log)
    with pytest.raises(FlatstackError, match="console_socket: given, but"):
        node.client.call("start", id="t2", bundle=make_bundle(["true"]), log=log,
                         console_socket=str(tmp_path / "nowhere.sock"))
    with pytest.raises(FlatstackError, match="log_max_size: expected an integer"):
        node.client.call("start", id="t3", bundle=make_bundle(["true"]), log=log,
                         log_max_size=10)
    with pytest.raises(FlatstackError, match="log_max_files: expected an integer"):
        node.client.call("start", id="t4", bundle=make_bundle(["true"]), log=log,
                         log_max_files=0)
    with pytest.raises(FlatstackError, match="log: expected an absolute path"):
        node.client.call("start", id="t5", bundle=make_bundle(["true"]), log="rel.log")
    with pytest.raises(FlatstackError, match=r"log: cannot open /nonexistent/x\.log: no such"):
        node.client.call("start", id="t6", bundle=make_bundle(["true"]),
                         log="/nonexistent/x.log")
    assert node.client.call("list") == []
    assert not os.path.exists(os.path.join(node.runtime_root, "t1"))


# -- exec ------------------------------------------------------------------------------
def test_exec_captures_output_and_exit_code(node: Node, make_bundle: UniqueBundles) -> None:
    node.spawn()
    status = node.start("box", make_bundle(["sleep", "30"]))
    client = SupervisorClient(node.socket, timeout=None)
    code, out, err = decode_exec(client.call(
        "exec", id="box", args=["sh", "-c", "echo out; echo err >&2; echo $FOO; pwd; exit 5"],
        env=["FOO=bar"], cwd="/proc"))
    assert (code, out, err) == (5, b"out\nbar\n/proc\n", b"err\n")
    code, out, _ = decode_exec(client.call(
        "exec", id="box", args=["sh", "-c", "readlink /proc/1/exe; head -c 300000 /dev/zero"]))
    assert code == 0
    assert out.startswith(b"/bin/busybox\n") and len(out) == len(b"/bin/busybox\n") + 300000
    result = client.call("exec", id="box", args=["head", "-c", str(17 << 20), "/dev/zero"])
    assert result["truncated"] is True and len(decode_exec(result)[1]) == 16 << 20
    process = {"args": ["sh", "-c", "id -u; kill -9 $$"], "cwd": "/", "env": ["PATH=/bin"],
               "user": {"uid": 1234, "gid": 1234}}
    code, out, _ = decode_exec(client.call("exec", id="box", process=process))
    assert (code, out) == (137, b"1234\n")
    assert node.client.call("status", id="box")["pid"] == status["pid"]


def test_exec_does_not_block_the_supervisor(node: Node, make_bundle: UniqueBundles) -> None:
    node.spawn()
    node.start("box", make_bundle(["sleep", "30"]))
    results: list[Any] = []
    slow = threading.Thread(target=lambda: results.append(SupervisorClient(node.socket).call(
        "exec", id="box", args=["sh", "-c", "sleep 1; echo late"])))
    started = time.monotonic()
    slow.start()
    time.sleep(0.2)
    assert node.client.call("status", id="box")["state"] == "running"
    assert time.monotonic() - started < 0.9, "requests are served while an exec runs"
    slow.join(10)
    assert decode_exec(results[0]) == (0, b"late\n", b"")


def test_exec_detached_and_with_a_terminal(node: Node, make_bundle: UniqueBundles,
                                           tmp_path: Path) -> None:
    node.spawn()
    init = node.start("box", make_bundle(["sleep", "30"]))["pid"]
    pid = node.client.call("exec", id="box", args=["sleep", "30"], detach=True)["pid"]
    assert os.stat(f"/proc/{pid}/ns/pid").st_ino == os.stat(f"/proc/{init}/ns/pid").st_ino
    deadline = time.monotonic() + 5  # "started" comes just before the execve
    while Path(f"/proc/{pid}/cmdline").read_bytes() != b"sleep\x0030\x00":
        assert time.monotonic() < deadline, "the detached process runs sleep 30"
        time.sleep(0.01)
    console = ConsoleSocket(tmp_path / "exec-console.sock")
    results: list[Any] = []
    call = threading.Thread(target=lambda: results.append(SupervisorClient(node.socket).call(
        "exec", id="box", args=["sh", "-c", "read x; echo got-$x; exit 3"], tty=True,
        console_socket=console.path)))
    call.start()
    master = console.master()
    try:
        os.write(master, b"typed\n")
        assert b"got-typed" in _read_until(master, b"got-typed")
        call.join(10)  # before closing the master: a hang-up would SIGHUP the shell
    finally:
        os.close(master)
        console.close()
    assert results and results[0]["exit_code"] == 3
    started = time.monotonic()
    node.client.call("remove", id="box", force=True)
    assert time.monotonic() - started < 2, "the exec'd zombie is reaped, not waited out"
    assert not os.path.exists(f"/proc/{pid}")
    cgroups = Path("/sys/fs/cgroup")
    assert not [*cgroups.glob(f"fsb-sup-{make_bundle.tag}-*"),
                *cgroups.glob(f"*/fsb-sup-{make_bundle.tag}-*")], "cgroups removed"


def test_exec_bad_requests(node: Node, make_bundle: UniqueBundles, tmp_path: Path) -> None:
    node.spawn()
    with pytest.raises(FlatstackError, match="no such container: ghost"):
        node.client.call("exec", id="ghost", args=["true"])
    node.start("box", make_bundle(["sleep", "30"]))
    with pytest.raises(FlatstackError, match="args: expected a non-empty list"):
        node.client.call("exec", id="box", args=[])
    with pytest.raises(FlatstackError, match="console_socket: required"):
        node.client.call("exec", id="box", args=["sh"], tty=True)
    with pytest.raises(FlatstackError, match="env: expected a list of KEY=VALUE"):
        node.client.call("exec", id="box", args=["true"], env=["NOEQUALS"])
    with pytest.raises(FlatstackError, match="nope"):
        node.client.call("exec", id="box", args=["/nope"])
    node.start("done", make_bundle(["true"]))
    node.wait_exit("done")
    with pytest.raises(FlatstackError, match="container done is not running"):
        node.client.call("exec", id="done", args=["true"])
    leftovers = [n for n in os.listdir(os.path.join(node.state, "containers", "box"))
                 if n.startswith("exec-")]
    assert leftovers == []


def test_containers_do_not_inherit_ignored_signals(node: Node, make_bundle: UniqueBundles) -> None:
    """Python ignores SIGPIPE and SIGXFSZ; neither a container nor an exec'd process
    may inherit that (``yes | head -1`` must end ``yes`` with SIGPIPE)."""
    node.spawn()
    node.start("sig", make_bundle(["sh", "-c", "grep SigIgn /proc/self/status; yes | head -1"]))
    assert node.wait_exit("sig")["exit"]["code"] == 0
    assert list(read_log(str(node.tmp / "sig.log"))) == [
        ("stdout", b"SigIgn:\t0000000000000000\n"), ("stdout", b"y\n")]
    node.start("box", make_bundle(["sleep", "30"]))
    _, out, _ = decode_exec(node.client.call("exec", id="box",
                                             args=["grep", "SigIgn", "/proc/self/status"]))
    assert out == b"SigIgn:\t0000000000000000\n"
