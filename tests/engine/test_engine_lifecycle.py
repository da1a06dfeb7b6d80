"""Engine lifecycle: stop/kill/wait/remove, --rm (also across a daemon restart),
reconcile, supervisor spawning, lookup by name and prefix, logs and exec."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from flatstack.engine.containers import ExecOptions, RunOptions, WaitTimeout
from flatstack.errors import ConfigError, ContainerNotFound, FlatstackError, InvalidState
from tests.engine._engine_support import (  # noqa: F401 - fixtures
    APP_IMAGE,
    IMAGE,
    Node,
    empty,
    layouts_fixture,
    node_fixture,
)
from tests.engine.test_supervisor import ConsoleSocket, _read_until

TRAP = "trap 'echo got-usr1; exit 3' USR1; echo ready; while :; do sleep 0.05; done"


def test_stop_uses_the_image_stop_signal_then_sigkill(node: Node) -> None:
    engine = node.engine
    info = engine.run(RunOptions(image=APP_IMAGE, command=[TRAP], name="trapper"))
    deadline = time.monotonic() + 5
    while "ready" not in node.log_text("trapper") and time.monotonic() < deadline:
        time.sleep(0.02)
    done = engine.stop("trapper", timeout=5)
    assert done["state"] == "exited" and done["exit_code"] == 3, "SIGUSR1 from StopSignal"
    assert "got-usr1" in node.log_text(info["id"])
    assert done["finished_at"] >= done["started_at"] > ""
    stubborn = engine.run(RunOptions(image=IMAGE, network="none",
                                     command=["sh", "-c", "trap '' TERM; sleep 30"]))
    started = time.monotonic()
    done = engine.stop(stubborn["id"][:10], timeout=0.5)
    assert done["exit_code"] == 137 and 0.4 < time.monotonic() - started < 5
    assert engine.stop(stubborn["id"])["state"] == "exited", "stopping a stopped one is fine"


def test_kill_remove_and_lookup(node: Node) -> None:
    engine = node.engine
    info = engine.run(RunOptions(image=IMAGE, command=["sleep", "30"], name="sleeper",
                                 network="none"))
    cid = info["id"]
    assert engine.inspect("sleeper")["id"] == cid == engine.inspect(cid[:6])["id"]
    assert [i["id"] for i in engine.list()] == [cid]
    with pytest.raises(InvalidState, match="is running"):
        engine.remove("sleeper")
    with pytest.raises(WaitTimeout, match=r"did not exit within 0\.1 s"):
        engine.wait("sleeper", timeout=0.1)
    with pytest.raises(ConfigError, match="signal"):
        engine.kill("sleeper", "NOPE")
    engine.kill("sleeper")  # SIGKILL: PID 1 without a handler ignores SIGTERM
    done = engine.wait("sleeper", timeout=5)
    assert done["exit_code"] == 128 + signal.SIGKILL
    with pytest.raises(InvalidState, match="not running"):
        engine.kill("sleeper")
    assert engine.list() == [] and [i["id"] for i in engine.list(all=True)] == [cid]
    engine.remove("sleeper")
    with pytest.raises(ContainerNotFound):
        engine.inspect("sleeper")
    again = engine.run(RunOptions(image=IMAGE, command=["sleep", "30"], name="sleeper",
                                  network="none"))
    engine.remove("sleeper", force=True)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{again['pid']}") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{again['pid']}"), "force removal killed it"
    assert empty(node.leftovers()), node.leftovers()


def test_wait_removes_rm_containers_and_keeps_the_exit_code(node: Node) -> None:
    info = node.engine.run(RunOptions(image=IMAGE, command=["sh", "-c", "exit 5"], remove=True,
                                      name="once"))
    done = node.engine.wait("once", timeout=10)
    assert done["exit_code"] == 5
    assert empty(node.leftovers()), node.leftovers()
    assert node.engine.wait(info["id"])["exit_code"] == 5, "the tombstone answers later waits"
    assert node.engine.wait("once")["exit_code"] == 5
    with pytest.raises(ContainerNotFound):
        node.engine.inspect("once")


def test_rm_container_exiting_while_the_daemon_is_down(node: Node) -> None:
    """The supervisor records the exit; a restarted daemon's first reconcile removes it
    with its network attachment (CNI DEL), rootfs, id range and records."""
    info = node.engine.run(RunOptions(image=IMAGE, command=["sleep", "0.3"], remove=True,
                                      ports=["18931:80"]))
    del node.engine  # the daemon goes away; nobody waits for the container
    time.sleep(0.8)
    status = node.new_engine()._client.call("status", id=info["id"])
    assert status["state"] == "exited" and status["exit"]["code"] == 0
    restarted = node.new_engine()
    done = restarted.reconcile()
    assert done["removed"] == [info["id"]]
    node.engine = restarted
    assert empty(node.leftovers()), node.leftovers()


def test_reconcile_cleans_half_made_and_stale_state(node: Node) -> None:
    engine = node.engine
    kept = engine.run(RunOptions(image=IMAGE, command=["sleep", "30"]))  # on the bridge
    stale = "f" * 64
    engine.networks.attach(stale, "bridge")  # an attachment whose container vanished
    engine.store.hold(stale, engine.store.image(IMAGE))
    os.symlink(stale, node.state / "names" / "ghost")
    # a container whose creating daemon died half-way (its record says "created")
    cid = "e" * 64
    cdir = node.state / "containers" / cid
    cdir.mkdir()
    (cdir / "container.json").write_text(json.dumps(
        {"id": cid, "name": "half", "state": "created", "creator": {"pid": 999999999}}))
    os.symlink(cid, node.state / "names" / "half")
    done = engine.reconcile()
    assert done["abandoned"] == [cid] and done["detached"] == [stale]
    assert done["released"] == [stale]
    left = node.leftovers()
    assert left["containers"] == [kept["id"]] and left["names"] == [kept["name"]]
    assert left["attachments"] == [f"{kept['id']}.json"] and left["netns"] == [kept["id"]]
    assert engine.inspect(kept["id"])["state"] == "running"


def test_supervisor_is_spawned_when_absent(node: Node) -> None:
    engine = node.engine
    first = engine.ensure_supervisor()
    engine._client.call("shutdown")
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{first}") and time.monotonic() < deadline:
        time.sleep(0.02)
    info = engine.run(RunOptions(image=IMAGE, command=["true"], network="none"))
    second = engine.ensure_supervisor()
    assert second != first and os.getsid(second) == second, "a new, detached supervisor"
    assert engine.wait(info["id"], timeout=5)["exit_code"] == 0


def test_logs_and_exec(node: Node) -> None:
    engine = node.engine
    info = engine.run(RunOptions(
        image=APP_IMAGE, network="none", name="talker",
        command=["echo out1; echo err1 >&2; echo out2; exec sleep 30"]))
    deadline = time.monotonic() + 5
    while node.log_text("talker").count("\n") < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    pairs = list(engine.logs("talker"))  # two pipes: order within a stream only
    assert [p for s, p in pairs if s == "stdout"] == [b"out1\n", b"out2\n"]
    assert [p for s, p in pairs if s == "stderr"] == [b"err1\n"]
    assert len(list(engine.logs("talker", tail=1))) == 1
    stamped = next(p for s, p in engine.logs("talker", timestamps=True) if s == "stdout")
    assert stamped.endswith(b" out1\n") and stamped[:4].isdigit()
    code, out, err = engine.exec("talker", ExecOptions(
        command=["sh", "-c", "id -un; pwd; echo $X; echo oops >&2; exit 4"], env=["X=1"]))
    assert (code, out, err) == (4, b"app\n/srv/app\n1\n", b"oops\n")
    code, out, _ = engine.exec(info["id"], ExecOptions(command=["id", "-u"], user="root",
                                                       workdir="/tmp"))
    assert (code, out) == (0, b"0\n")
    with pytest.raises(ConfigError, match="unable to find user"):
        engine.exec("talker", ExecOptions(command=["true"], user="nosuch"))
    follow = engine.logs("talker", follow=True)
    engine.kill("talker", "KILL")
    assert sorted(p for _, p in follow) == [b"err1\n", b"out1\n", b"out2\n"]
    with pytest.raises(InvalidState):
        engine.exec("talker", ExecOptions(command=["true"]))
    with pytest.raises(FlatstackError):
        engine.logs("nonexistent")


def test_terminal_through_a_console_socket(node: Node, tmp_path: Path) -> None:
    """``run -it``: the pty master goes to the caller's console socket; nothing is logged."""
    console = ConsoleSocket(tmp_path / "console.sock")
    try:
        info = node.engine.run(RunOptions(
            image=IMAGE, network="none", tty=True, interactive=True,
            console_socket=console.path,
            command=["sh", "-c", "[ -t 1 ] && echo is-a-tty; echo term=$TERM; read l; "
                     "echo got-$l; exit 6"]))
        master = console.master()
        try:
            assert b"term=xterm" in _read_until(master, b"term=xterm")
            os.write(master, b"hi\n")
            assert b"got-hi" in _read_until(master, b"got-hi")
        finally:
            os.close(master)
    finally:
        console.close()
    assert node.engine.wait(info["id"], timeout=10)["exit_code"] == 6
    assert info["tty"] is True and list(node.engine.logs(info["id"])) == []
    with pytest.raises(ConfigError, match="console_socket"):
        node.engine.run(RunOptions(image=IMAGE, command=["true"], console_socket=console.path))


def test_rm_containers_race_the_reconciler(node: Node) -> None:
    """The daemon's reconciler runs beside run/wait: it must never remove a container it
    saw as lost because it started after its snapshot, and a waiter always gets the
    exit code (from the tombstone when the reconciler removed it first)."""
    import threading

    stop = threading.Event()
    reconciler = node.new_engine()
    errors: list[BaseException] = []

    def loop() -> None:
        while not stop.is_set():
            try:
                reconciler.reconcile()
            except BaseException as err:  # reported below
                errors.append(err)

    worker = threading.Thread(target=loop)
    worker.start()
    try:
        codes = []
        for i in range(12):
            info = node.engine.run(RunOptions(image=IMAGE, network="none", remove=True,
                                              command=["sh", "-c", f"exit {i + 1}"]))
            if i % 2:
                time.sleep(0.05)  # let the reconciler see some exits first
            codes.append(node.engine.wait(info["id"], timeout=10)["exit_code"])
    finally:
        stop.set()
        worker.join()
    assert errors == []
    assert codes == list(range(1, 13))
    assert empty(node.leftovers()), node.leftovers()
