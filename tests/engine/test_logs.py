"""Container logs: k8s-file entries, rotation, tail, follow, a supervisor SIGKILL."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from flatstack.engine.logs import LogWriter, read_log
from flatstack.errors import FlatstackError
from tests.engine.test_supervisor import (  # noqa: F401 - fixtures
    Node,
    UniqueBundles,
    supervisor_node_fixture,
    unique_bundles_fixture,
)

ENTRY = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) [FP] .*$")


def _text(pieces: list[tuple[str, bytes]]) -> str:
    return b"".join(piece for _, piece in pieces).decode()


def _numbers(path: str) -> list[int]:
    return [int(line) for line in _text(list(read_log(path))).split()]


def test_writer_format_partial_lines_and_rotation(tmp_path: Path) -> None:
    path = str(tmp_path / "ctr.log")
    writer = LogWriter(path, max_size=1024, max_files=3)
    writer.write("stdout", b"one\ntw")
    writer.write("stderr", b"warn\n")
    writer.write("stdout", b"o\n")
    lines = Path(path).read_bytes().splitlines()
    assert all(ENTRY.match(line) for line in lines)
    assert [line.split(b" ", 1)[1] for line in lines] == [
        b"stdout F one", b"stdout P tw", b"stderr F warn", b"stdout F o"]
    assert list(read_log(path)) == [("stdout", b"one\n"), ("stdout", b"tw"),
                                    ("stderr", b"warn\n"), ("stdout", b"o\n")]
    stamped = list(read_log(path, timestamps=True))
    assert re.match(rb"^\S+Z tw$", stamped[1][1]) and stamped[3][1] == b"o\n", \
        "a continued line has no second timestamp"
    for n in range(200):
        writer.write("stdout", b"%d\n" % n)
    writer.close()
    files = sorted(os.listdir(tmp_path))
    assert files == ["ctr.log", "ctr.log.1", "ctr.log.2"]
    assert all(os.path.getsize(tmp_path / f) <= 1024 for f in files)
    numbers = [int(x) for x in _text(list(read_log(path))).split() if x.isdigit()]
    assert numbers == list(range(numbers[0], 200)), "rotated files read oldest first"
    assert _text(list(read_log(path, tail=25))).split() == [str(n) for n in range(175, 200)]
    assert list(read_log(path, tail=0)) == []


def test_a_single_file_is_restarted_when_full(tmp_path: Path) -> None:
    path = str(tmp_path / "one.log")
    writer = LogWriter(path, max_size=1024, max_files=1)
    for n in range(100):
        writer.write("stderr", b"%d\n" % n)
    writer.close()
    assert os.listdir(tmp_path) == ["one.log"] and os.path.getsize(path) <= 1024
    assert _text(list(read_log(path))).split()[-1] == "99"


def test_tail_keeps_partial_pieces_across_interleaved_streams(tmp_path: Path) -> None:
    path = str(tmp_path / "ctr.log")
    writer = LogWriter(path)
    writer.write("stdout", b"a\nhalf ")
    writer.write("stderr", b"warning\n")
    writer.write("stdout", b"done\nrest")
    writer.close()
    assert list(read_log(path, tail=1)) == [("stdout", b"half "), ("stdout", b"done\n"),
                                            ("stdout", b"rest")]
    assert list(read_log(path, tail=2)) == [("stdout", b"half "), ("stderr", b"warning\n"),
                                            ("stdout", b"done\n"), ("stdout", b"rest")]


def test_bad_options(tmp_path: Path) -> None:
    with pytest.raises(FlatstackError, match="log_max_size"):
        LogWriter(str(tmp_path / "x"), max_size=0)
    with pytest.raises(FlatstackError, match="log_max_files"):
        LogWriter(str(tmp_path / "x"), max_files=1000)
    with pytest.raises(FlatstackError, match="tail: expected a non-negative integer"):
        list(read_log(str(tmp_path / "x"), tail=-1))
    assert not (tmp_path / "x").exists()


def test_container_stdout_and_stderr(node: Node, make_bundle: UniqueBundles) -> None:
    node.spawn()
    node.start("c", make_bundle(["sh", "-c", "echo a; echo b >&2; printf 'no newline'; "
                                 "sleep 0.1; echo ' end'; exit 2"]))
    assert node.wait_exit("c")["exit"]["code"] == 2
    log = str(node.tmp / "c.log")
    pieces = list(read_log(log))
    # Two pipes: the order between streams is the order the supervisor read them in.
    assert [p for s, p in pieces if s == "stdout"] == [b"a\n", b"no newline", b" end\n"]
    assert [p for s, p in pieces if s == "stderr"] == [b"b\n"]
    assert [p for _, p in read_log(log, tail=1)] == [b"no newline", b" end\n"]
    assert [p for s, p in read_log(log, tail=2) if s == "stdout"] == [b"no newline", b" end\n"]


def test_container_log_rotation(node: Node, make_bundle: UniqueBundles) -> None:
    node.spawn()
    log = str(node.tmp / "r.log")
    node.client.call("start", id="r", bundle=make_bundle(["seq", "1", "2000"]), log=log,
                     log_max_size=4096, log_max_files=3)
    node.wait_exit("r")
    files = sorted(p.name for p in node.tmp.glob("r.log*"))
    assert files == ["r.log", "r.log.1", "r.log.2"]
    assert all((node.tmp / f).stat().st_size <= 4096 for f in files)
    numbers = _numbers(log)
    assert numbers[-1] == 2000 and numbers == list(range(numbers[0], 2001))
    assert numbers[0] > 1, "the oldest files were dropped"
    assert _text(list(read_log(log, tail=3))).split() == ["1998", "1999", "2000"]


def test_follow_until_exit_across_rotations(node: Node, make_bundle: UniqueBundles) -> None:
    node.spawn()
    log = str(node.tmp / "f.log")
    script = "i=0; while [ $i -lt 150 ]; do i=$((i+1)); echo $i; sleep 0.01; done; exit 0"
    node.client.call("start", id="f", bundle=make_bundle(["sh", "-c", script]), log=log,
                     log_max_size=1024, log_max_files=2)

    def running() -> bool:
        return node.client.call("status", id="f")["state"] == "running"

    got = [int(x) for x in _text(list(read_log(log, tail=0, follow=True, is_running=running,
                                               poll=0.02))).split()]
    assert node.client.call("status", id="f")["state"] == "exited"
    assert got == list(range(got[0], 151)), "every line after the start, in order"
    assert got[0] < 100, "following started near the beginning"


def test_follow_a_running_container_sees_new_lines(node: Node, make_bundle: UniqueBundles) -> None:
    node.spawn()
    log = str(node.tmp / "g.log")
    node.start("g", make_bundle(["sh", "-c", "echo first; read x < /dev/null; sleep 30"]))
    seen: list[tuple[str, bytes]] = []
    stop = threading.Event()
    reader = threading.Thread(target=lambda: seen.extend(
        read_log(log, follow=True, is_running=lambda: not stop.is_set(), poll=0.02)))
    reader.start()
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.02)
    assert seen == [("stdout", b"first\n")]
    node.client.call("exec", id="g", args=["true"])  # the log stays open meanwhile
    stop.set()
    reader.join(5)
    assert not reader.is_alive()


def test_logs_survive_a_supervisor_sigkill(node: Node, make_bundle: UniqueBundles) -> None:
    """Lines written while no supervisor runs sit in the FIFO (the container holds a
    read end too, so it never gets SIGPIPE) and are logged by the next supervisor."""
    first = node.spawn()
    log = str(node.tmp / "k.log")
    script = ("i=0; while [ $i -lt 200 ]; do i=$((i+1)); echo $i; echo e$i >&2; "
              "sleep 0.01; done; echo done")
    node.start("k", make_bundle(["sh", "-c", script]))
    time.sleep(0.4)
    os.kill(first, signal.SIGKILL)
    time.sleep(0.8)  # the container keeps printing with nobody reading
    before = [p for s, p in read_log(log) if s == "stdout"]
    assert 0 < len(before) < 200, "the container was still printing when the supervisor died"
    second = node.spawn()
    assert second != first
    done = node.wait_exit("k", timeout=20)
    assert done["exit"]["reason"].startswith("unknown")
    pieces = list(read_log(log))
    out = [p.decode().strip() for s, p in pieces if s == "stdout"]
    err = [p.decode().strip() for s, p in pieces if s == "stderr"]
    assert out == [str(n) for n in range(1, 201)] + ["done"], "no line lost, none killed"
    assert err == [f"e{n}" for n in range(1, 201)]
