"""Containers through the CLI, as a user types them: run (foreground, -d, --rm, -t, -p),
ps, logs, exec, stop, kill, wait, inspect, rm; and the daemon killed with SIGKILL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.e2e._daemon import APP_IMAGE, FLATSTACK, IMAGE, Daemon, empty
from tests.engine._image_support import free_port, wait_port

HTTPD = "echo '<h1>flat</h1>' > /tmp/index.html; echo serving; exec httpd -f -p 8080 -h /tmp"


def test_foreground_run_output_and_exit_code(daemon: Daemon, layouts: dict[str, Path]) -> None:
    daemon.import_images(layouts)
    proc = daemon.cli("run", "--rm", "--network", "none", IMAGE, "sh", "-c",
                      "echo out; echo err >&2; exit 3", check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "out\n", "err\n")
    assert daemon.cli("ps", "-aq").stdout == ""  # --rm: gone
    # the image's Entrypoint, Cmd, WorkingDir, User and Env apply; flags override them
    proc = daemon.cli("run", "--network", "none", "--name", "app", APP_IMAGE)
    assert proc.stdout == "default-cmd\n"
    proc = daemon.cli("run", "--rm", "--network", "none", "-e", "GREETING=flag", "-w", "/tmp",
                      APP_IMAGE, "echo $GREETING $(pwd) $(id -un)")
    assert proc.stdout == "flag /tmp app\n"
    proc = daemon.cli("run", "--rm", "--network", "none", "--entrypoint", "", "-u", "0",
                      APP_IMAGE, "id", "-u")
    assert proc.stdout == "0\n"
    [record] = json.loads(daemon.cli("inspect", "app").stdout)
    assert record["state"] == "exited" and record["exit_code"] == 0
    assert daemon.cli("wait", "app").stdout == "0\n"
    lines = daemon.cli("ps", "-a").stdout.splitlines()
    assert lines[0].split()[:3] == ["CONTAINER", "ID", "IMAGE"] and len(lines) == 2
    assert "Exited (0)" in lines[1] and lines[1].endswith("app")
    daemon.cli("rm", "app")
    assert empty(daemon.leftovers()), daemon.leftovers()


def test_detached_ps_logs_exec_stop_rm(daemon: Daemon, layouts: dict[str, Path]) -> None:
    daemon.import_images(layouts)
    port = free_port()
    cid = daemon.cli("run", "-d", "--name", "web", "-p", f"127.0.0.1:{port}:8080",
                     "--memory", "64m", "--pids-limit", "50", IMAGE, "sh", "-c",
                     HTTPD).stdout.strip()
    assert len(cid) == 64 and int(cid, 16) >= 0
    wait_port("127.0.0.1", port)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=5) as resp:
        assert resp.read() == b"<h1>flat</h1>\n"

    assert daemon.cli("ps", "-q").stdout == cid[:12] + "\n"
    [row] = json.loads(daemon.cli("ps", "--format", "json").stdout)
    assert row["id"] == cid and row["state"] == "running" and row["name"] == "web"
    assert row["ports"] == [f"127.0.0.1:{port}->8080/tcp"]
    table = daemon.cli("ps").stdout
    assert f"127.0.0.1:{port}->8080/tcp" in table and "Up " in table
    [record] = json.loads(daemon.cli("inspect", cid[:12]).stdout)
    assert record["resources"]["memory"] == 64 << 20 and record["pid"] > 0

    assert daemon.cli("logs", "web").stdout == "serving\n"
    assert daemon.cli("logs", "-t", "web").stdout.endswith("Z serving\n")
    proc = daemon.cli("exec", "web", "sh", "-c", "cat /tmp/index.html; echo e >&2; exit 4",
                      check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (4, "<h1>flat</h1>\n", "e\n")
    proc = daemon.cli("exec", "-e", "X=1", "-w", "/tmp", "web", "sh", "-c", "echo $X $(pwd)")
    assert proc.stdout == "1 /tmp\n"

    # httpd as pid 1 ignores SIGTERM: stop waits -t seconds, then SIGKILL
    started = time.monotonic()
    assert daemon.cli("stop", "-t", "1", "web").stdout == "web\n"
    assert 0.9 < time.monotonic() - started < 10
    [record] = json.loads(daemon.cli("inspect", "web").stdout)
    assert record["state"] == "exited" and record["exit_code"] == 137
    assert daemon.cli("rm", "web").stdout == "web\n"
    assert daemon.cli("ps", "-aq").stdout == ""
    assert empty(daemon.leftovers()), daemon.leftovers()


def test_kill_wait_and_follow(daemon: Daemon, layouts: dict[str, Path]) -> None:
    daemon.import_images(layouts)
    daemon.cli("run", "-d", "--name", "loop", "--network", "none", IMAGE, "sh", "-c",
               "trap 'echo got-usr1; exit 9' USR1; echo ready; while :; do sleep 0.1; done")
    follow = subprocess.Popen([str(FLATSTACK), "logs", "-f", "loop"], env=daemon.env,
                              stdout=subprocess.PIPE, text=True)
    waiter = subprocess.Popen([str(FLATSTACK), "wait", "loop"], env=daemon.env,
                              stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while "ready" not in daemon.cli("logs", "loop").stdout:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert daemon.cli("kill", "-s", "USR1", "loop").stdout == "loop\n"
    assert waiter.communicate(timeout=20)[0] == "9\n"
    assert follow.communicate(timeout=20)[0] == "ready\ngot-usr1\n"
    assert follow.returncode == 0
    proc = daemon.cli("kill", "loop", check=False)
    assert proc.returncode == 1 and "not running" in proc.stderr
    daemon.cli("rm", "loop")

    # Ctrl-C on a foreground run reaches the container as SIGINT (docker's sig-proxy)
    run = subprocess.Popen([str(FLATSTACK), "run", "--rm", "--name", "fg", "--network",
                            "none", IMAGE, "sh", "-c", "trap 'echo got-int; exit 4' INT; "
                            "echo ready; while :; do sleep 0.1; done"], env=daemon.env,
                           stdout=subprocess.PIPE, text=True)
    assert run.stdout is not None and run.stdout.readline() == "ready\n"
    run.send_signal(signal.SIGINT)
    assert run.communicate(timeout=20)[0] == "got-int\n" and run.returncode == 4
    assert daemon.cli("ps", "-aq").stdout == ""


def _in_terminal(daemon: Daemon, command: str, typed: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` on a pseudo-terminal (util-linux script) with ``typed`` as input."""
    script = shutil.which("script")
    assert script, "util-linux script is missing: run make install"
    return subprocess.run([script, "-qec", command, "/dev/null"], input=typed,
                          capture_output=True, text=True, env=daemon.env, timeout=60,
                          check=False)


def test_terminals_through_console_sockets(daemon: Daemon, layouts: dict[str, Path]) -> None:
    daemon.import_images(layouts)
    proc = _in_terminal(daemon, f"{FLATSTACK} run -it --rm --network none {IMAGE} "
                        "sh -c 'tty; read line; echo got-$line; exit 5'", "hello\n")
    assert proc.returncode == 5, proc.stdout + proc.stderr
    out = proc.stdout.replace("\r", "")
    assert "/dev/pts/0\n" in out and "got-hello\n" in out
    assert daemon.cli("ps", "-aq").stdout == ""

    daemon.cli("run", "-d", "--name", "bg", "--network", "none", IMAGE, "sleep", "60")
    proc = _in_terminal(daemon, f"{FLATSTACK} exec -it bg sh -c "
                        "'tty; read line; echo exec-$line; exit 6'", "there\n")
    assert proc.returncode == 6, proc.stdout + proc.stderr
    out = proc.stdout.replace("\r", "")
    assert "/dev/pts/" in out and "exec-there\n" in out
    daemon.cli("rm", "-f", "bg")
    assert empty(daemon.leftovers()), daemon.leftovers()


def test_stats(daemon: Daemon, layouts: dict[str, Path]) -> None:
    daemon.import_images(layouts)
    daemon.cli("run", "-d", "--name", "busy", "--network", "none", "--memory", "32m", IMAGE,
               "sh", "-c", "x=$(head -c 4000000 /dev/zero | tr '\\0' a); sleep 60")
    time.sleep(0.5)
    [row] = json.loads(daemon.cli("stats", "--format", "json", "busy").stdout)
    assert row["name"] == "busy" and row["memory_limit"] == 32 << 20
    assert 0 < row["memory_bytes"] <= 32 << 20 and row["pids"] >= 1 and row["cpu_ns"] > 0
    lines = daemon.cli("stats", "--no-stream").stdout.splitlines()
    assert lines[0].split()[:3] == ["CONTAINER", "ID", "NAME"] and "busy" in lines[1]
    assert "32MiB" in lines[1]
    with daemon.api() as api, api.stream("GET", "/v1/containers/busy/stats",
                                         params={"stream": True}) as resp:
        docs = []
        for line in resp.iter_lines():
            docs.append(json.loads(line))
            if len(docs) == 2:
                break
    assert all(d["memory_limit"] == 32 << 20 for d in docs)
    daemon.cli("rm", "-f", "busy")


def test_containers_survive_daemon_kill_9(daemon: Daemon, layouts: dict[str, Path]) -> None:
    daemon.import_images(layouts)
    port = free_port()
    cid = daemon.cli("run", "-d", "--name", "survivor", "-p", f"127.0.0.1:{port}:8080",
                     IMAGE, "sh", "-c", HTTPD).stdout.strip()
    wait_port("127.0.0.1", port)
    pid = json.loads(daemon.cli("inspect", cid).stdout)[0]["pid"]
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    proc = daemon.cli("ps", check=False)
    assert proc.returncode == 1 and "cannot reach the flatstack daemon" in proc.stderr
    os.kill(pid, 0)  # still alive, still serving
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=5) as resp:
        assert resp.status == 200

    daemon.start()  # the stale socket and pidfile are replaced
    [row] = json.loads(daemon.cli("ps", "--format", "json").stdout)
    assert (row["id"], row["state"], row["pid"]) == (cid, "running", pid)
    assert daemon.cli("logs", "survivor").stdout == "serving\n"
    daemon.cli("kill", "-s", "KILL", "survivor")
    assert daemon.cli("wait", "survivor").stdout == "137\n"
    daemon.cli("rm", "survivor")
    assert empty(daemon.leftovers()), daemon.leftovers()


def test_volumes_outlive_containers(daemon: Daemon, layouts: dict[str, Path],
                                    tmp_path: Path) -> None:
    daemon.import_images(layouts)
    (tmp_path / "host").mkdir()
    (tmp_path / "host" / "greeting").write_text("from the host\n")
    daemon.cli("run", "--rm", "--network", "none", "-v", "keep:/data", IMAGE, "sh", "-c",
               "echo kept > /data/file")
    proc = daemon.cli("run", "--rm", "--network", "none", "-v", "keep:/data:ro", "-v",
                      f"{tmp_path / 'host'}:/host:ro", IMAGE, "sh", "-c",
                      "cat /data/file /host/greeting; touch /data/x 2>/dev/null || echo ro")
    assert proc.stdout == "kept\nfrom the host\nro\n"
    assert empty(daemon.leftovers()), daemon.leftovers()
