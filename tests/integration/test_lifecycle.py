"""create / start / state / kill / delete / run against real containers."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.conftest import Bundles, Flatrun, cgroup_dirs


def wait_status(flatrun: Flatrun, cid: str, want: str, timeout: float = 5) -> dict:
    deadline = time.monotonic() + timeout
    state: dict = {}
    while time.monotonic() < deadline:
        result = flatrun("state", cid, check=False)
        if result.returncode == 0:
            state = json.loads(result.stdout)
            if state["status"] == want:
                break
        time.sleep(0.02)
    return state


def test_create_start_delete(flatrun: Flatrun, make_bundle: Bundles, tmp_path: Path) -> None:
    bundle = make_bundle(["sh", "-c", "echo hello from $(hostname); exec sleep 30"])
    cid = flatrun.new_id()
    pid_file = tmp_path / "pid"
    log = tmp_path / "out.log"
    with open(log, "w") as out:
        import subprocess

        subprocess.run([flatrun.binary, "--root", flatrun.root, "create", "--bundle", bundle,
                        "--pid-file", str(pid_file), cid], stdout=out, stderr=out, check=True)
    state = flatrun.state(cid)
    assert state["status"] == "created"
    assert state["bundle"] == bundle
    assert int(pid_file.read_text()) == state["pid"] > 0
    assert Path(f"/proc/{state['pid']}").exists()
    # Before start, the user's process has not run.
    assert log.read_text() == ""
    flatrun("start", cid)
    assert wait_status(flatrun, cid, "running")["status"] == "running"
    deadline = time.monotonic() + 5
    while "hello" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "hello from flatrun" in log.read_text()
    assert cgroup_dirs(cid), "the container should have a cgroup while it runs"
    flatrun("kill", cid, "KILL")
    assert wait_status(flatrun, cid, "stopped")["status"] == "stopped"
    flatrun("delete", cid)
    assert not (Path(flatrun.root) / cid).exists()
    assert cgroup_dirs(cid) == []
    result = flatrun("state", cid, check=False)
    assert result.returncode != 0
    assert f"container {cid!r} does not exist" in result.stderr


def test_run_returns_exit_status(flatrun: Flatrun, make_bundle: Bundles) -> None:
    bundle = make_bundle(["sh", "-c", "exit 7"])
    cid = flatrun.new_id()
    result = flatrun("run", "--bundle", bundle, cid, check=False)
    assert result.returncode == 7, result.stderr
    assert not (Path(flatrun.root) / cid).exists()


def test_run_reports_signal_death(flatrun: Flatrun, make_bundle: Bundles,
                                  tmp_path: Path) -> None:
    import subprocess

    bundle = make_bundle(["sleep", "30"])
    cid = flatrun.new_id()
    with open(tmp_path / "log", "w") as log:
        proc = subprocess.Popen([flatrun.binary, "--root", flatrun.root, "run", "-b", bundle,
                                 cid], stdout=log, stderr=log)
        assert wait_status(flatrun, cid, "running")["status"] == "running"
        flatrun("kill", cid, "KILL")
        assert proc.wait(timeout=10) == 128 + 9
    assert not (Path(flatrun.root) / cid).exists()


def test_container_sees_its_own_namespaces(flatrun: Flatrun, make_bundle: Bundles) -> None:
    script = "echo pid=$$; for n in mnt net uts; do readlink /proc/self/ns/$n; done; hostname"
    bundle = make_bundle(["sh", "-c", script])
    cid = flatrun.new_id()
    out = flatrun("run", "-b", bundle, cid).stdout.split()
    assert out[0] == "pid=1"
    host = [os.readlink(f"/proc/self/ns/{n}") for n in ("mnt", "net", "uts")]
    for inside, outside in zip(out[1:4], host, strict=True):
        assert inside != outside
    assert out[4] == "flatrun"


def test_delete_refuses_running_without_force(flatrun: Flatrun, make_bundle: Bundles) -> None:
    bundle = make_bundle(["sleep", "30"])
    cid = flatrun.new_id()
    flatrun("run", "-d", "-b", bundle, cid)
    assert flatrun.state(cid)["status"] == "running"
    result = flatrun("delete", cid, check=False)
    assert result.returncode == 1
    assert "not stopped: running" in result.stderr
    pid = flatrun.state(cid)["pid"]
    flatrun("delete", "--force", cid)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert cgroup_dirs(cid) == []


def test_delete_created_container(flatrun: Flatrun, make_bundle: Bundles) -> None:
    """runc (and containerd's shim) delete a created container without --force."""
    bundle = make_bundle(["true"])
    cid = flatrun.new_id()
    flatrun("create", "-b", bundle, cid)
    pid = flatrun.state(cid)["pid"]
    flatrun("delete", cid)
    assert not (Path(flatrun.root) / cid).exists()
    time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_start_twice_fails(flatrun: Flatrun, make_bundle: Bundles) -> None:
    cid = flatrun.new_id()
    flatrun("run", "-d", "-b", make_bundle(["sleep", "30"]), cid)
    result = flatrun("start", cid, check=False)
    assert result.returncode == 1
    assert "cannot start an already running container" in result.stderr


def test_kill_signal_names_and_all(flatrun: Flatrun, make_bundle: Bundles) -> None:
    bundle = make_bundle(["sh", "-c", "trap 'exit 42' USR1; sleep 30 & wait"])
    cid = flatrun.new_id()
    flatrun("run", "-d", "-b", bundle, cid)
    time.sleep(0.2)
    bad = flatrun("kill", cid, "SIGNOPE", check=False)
    assert bad.returncode == 1 and "invalid signal 'SIGNOPE'" in bad.stderr
    flatrun("kill", cid, "SIGUSR1")
    assert wait_status(flatrun, cid, "stopped")["status"] == "stopped"
    cid2 = flatrun.new_id()
    flatrun("run", "-d", "-b", make_bundle(["sh", "-c", "sleep 30 & sleep 30 & wait"]), cid2)
    time.sleep(0.2)
    flatrun("kill", "--all", cid2, "9")
    assert wait_status(flatrun, cid2, "stopped")["status"] == "stopped"


def test_list_and_ps(flatrun: Flatrun, make_bundle: Bundles) -> None:
    cid = flatrun.new_id()
    flatrun("run", "-d", "-b", make_bundle(["sh", "-c", "sleep 30 & wait"]), cid)
    time.sleep(0.2)
    listed = json.loads(flatrun("list", "--format", "json").stdout)
    assert [c["id"] for c in listed] == [cid]
    assert listed[0]["status"] == "running"
    assert cid in flatrun("list").stdout
    pids = json.loads(flatrun("ps", "--format", "json", cid).stdout)
    assert len(pids) == 2
    assert flatrun.state(cid)["pid"] in pids
    table = flatrun("ps", cid).stdout
    assert "sleep 30" in table and "PID" in table.splitlines()[0]


def test_pause_resume(flatrun: Flatrun, make_bundle: Bundles) -> None:
    cid = flatrun.new_id()
    flatrun("run", "-d", "-b", make_bundle(["sleep", "30"]), cid)
    flatrun("pause", cid)
    assert flatrun.state(cid)["status"] == "paused"
    pid = flatrun.state(cid)["pid"]
    stat = Path(f"/proc/{pid}/stat").read_text()
    assert stat[stat.rfind(")") + 2] in "DS"  # frozen tasks sleep in the freezer
    flatrun("resume", cid)
    assert flatrun.state(cid)["status"] == "running"


def test_exec_in_running_container(flatrun: Flatrun, make_bundle: Bundles,
                                   tmp_path: Path) -> None:
    cid = flatrun.new_id()
    flatrun("run", "-d", "-b", make_bundle(["sleep", "30"]), cid)
    result = flatrun("exec", cid, "sh", "-c", "echo $$ $(cat /proc/1/cmdline | tr '\\0' ' ')")
    pid, *cmdline = result.stdout.split()
    assert int(pid) > 1
    assert cmdline == ["sleep", "30"]
    assert flatrun("exec", cid, "sh", "-c", "exit 5", check=False).returncode == 5
    process = {"args": ["sh", "-c", "echo $FOO; pwd"], "env": ["FOO=bar", "PATH=/bin"],
               "cwd": "/tmp", "user": {"uid": 0, "gid": 0}}
    (tmp_path / "process.json").write_text(json.dumps(process))
    out = flatrun("exec", "--process", str(tmp_path / "process.json"), cid).stdout
    assert out.split() == ["bar", "/tmp"]
    pid_file = tmp_path / "exec.pid"
    flatrun("exec", "-d", "--pid-file", str(pid_file), cid, "sleep", "5")
    exec_pid = int(pid_file.read_text())
    # `exec -d` returns once the process is started; its execve may still be under way.
    deadline = time.monotonic() + 5
    while (not Path(f"/proc/{exec_pid}/cmdline").read_bytes().startswith(b"sleep")
           and time.monotonic() < deadline):
        time.sleep(0.01)
    assert Path(f"/proc/{exec_pid}/cmdline").read_bytes().startswith(b"sleep")


def test_exec_in_stopped_container_fails(flatrun: Flatrun, make_bundle: Bundles) -> None:
    cid = flatrun.new_id()
    flatrun("run", "-d", "-b", make_bundle(["true"]), cid)
    wait_status(flatrun, cid, "stopped")
    result = flatrun("exec", cid, "true", check=False)
    assert result.returncode == 1
    assert "cannot exec in a stopped container" in result.stderr


HOLDER = r"""
import os, resource, sys
sys.path.insert(0, sys.argv[1])
from flatstack.runtime.create import CreateOptions, create
from flatstack.runtime.verbs.start import start
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held = [os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC) for _ in range(1100)]
container = create(CreateOptions(root=sys.argv[2], container_id=sys.argv[3],
                                 bundle=sys.argv[4]), subreaper=True)
container.unlock()
start(sys.argv[2], sys.argv[3])
_, status = os.waitpid(container.pid, 0)
print("held", len(held), "exit", os.waitstatus_to_exitcode(status), flush=True)
"""


def test_a_caller_holding_many_fds_does_not_starve_the_init(
        flatrun: Flatrun, make_bundle: Bundles, tmp_path: Path) -> None:
    """A long-lived caller (the engine's supervisor) may hold more descriptors than the
    spec's RLIMIT_NOFILE (1024 here); the forked init must drop them, not run out of
    descriptor numbers when it opens files after setting the limit."""
    import subprocess
    import sys

    src = str(Path(__file__).resolve().parents[2] / "src")
    bundle = make_bundle(["sh", "-c", "ulimit -n; ls /proc/self/fd | wc -l"])
    cid = flatrun.new_id()
    out = tmp_path / "holder.out"
    with open(out, "w") as f:
        subprocess.run([sys.executable, "-c", HOLDER, src, flatrun.root, cid, bundle],
                       stdout=f, stderr=subprocess.STDOUT, timeout=60, check=False)
    lines = out.read_text().split()
    assert lines[:2] == ["1024", "4"], out.read_text()  # stdio plus ls's own directory fd
    assert lines[2:] == ["held", "1100", "exit", "0"], out.read_text()


def test_container_starts_with_default_signal_dispositions(
        flatrun: Flatrun, make_bundle: Bundles, tmp_path: Path) -> None:
    """Ignored signals and the blocked mask survive execve; what flatrun's caller
    ignored (a shell's background job ignores SIGINT, Python SIGPIPE) or blocked must
    not reach the container's process."""
    import signal
    import subprocess

    def hostile_caller() -> None:
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGPIPE, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGTERM})

    bundle = make_bundle(["grep", "-E", "^Sig(Ign|Blk):", "/proc/self/status"])
    out = tmp_path / "sig.out"
    with open(out, "w") as f:
        proc = subprocess.run([flatrun.binary, "--root", flatrun.root, "run", "--bundle",
                               bundle, flatrun.new_id()], stdout=f, stderr=subprocess.STDOUT,
                              preexec_fn=hostile_caller, timeout=30, check=False)
    assert proc.returncode == 0, out.read_text()
    assert out.read_text().split() == ["SigBlk:", "0000000000000000",
                                       "SigIgn:", "0000000000000000"]
