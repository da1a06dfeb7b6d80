"""Runtime-process escapes of runc/crun, replayed against flatrun from inside a container.

CVE-2016-9962 (ptrace/fds of the joining exec process), CVE-2019-5736 (overwriting
the runtime binary through /proc/<pid>/exe) and CVE-2024-21626 (a leaked runtime fd
as the working directory).  The attacks run in the static ``cve_probe`` (see
cve_probe.c) or busybox; each test asserts the errno or message that stops them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from flatstack.oci.defaults import default_spec
from tests.conftest import Bundles, Flatrun
from tests.security._cve_support import PROBE, bind_probe, compile_probe, fd_entries, sha256


@pytest.fixture(scope="module")
def cve_probe_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return compile_probe(tmp_path_factory)


@pytest.fixture
def host_python(flatrun_bin: str) -> str:
    """The interpreter of flatrun's launcher: what flatrun's processes run until execve.

    Read after ``flatrun_bin`` has (re)installed the launcher, never at import time:
    a ``pip install -e`` meanwhile replaces the launcher with pip's script.
    """
    return os.path.realpath(Path(flatrun_bin).read_text().splitlines()[0][2:].split()[0])


def _unreachable(entry: str) -> bool:
    """A process's fd whose target and file a container process cannot get at.

    ENOENT: the fd was closed (or the process exec'd) between listing and use.
    """
    _, link, opened = entry.rsplit(":", 2)
    return link in ("readlink-EACCES", "readlink-ENOENT") and opened in ("open-EACCES",
                                                                        "open-ENOENT")


def _fd_table(listing: str) -> dict[str, str]:
    """fd number -> target from ``ls -l /proc/PID/fd`` output."""
    table = {}
    for line in listing.splitlines():
        left, sep, target = line.partition(" -> ")
        if sep:
            table[left.split()[-1]] = target.strip()
    return table


def _lines(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines() if "=" in line}


def test_cve_2019_5736_runtime_exe_unreachable_during_create(
        flatrun: Flatrun, make_bundle: Bundles, cve_probe_dir: str, host_python: str) -> None:
    """CVE-2019-5736: a process in the container opens /proc/<pid>/exe of the runtime.

    While a container is created but not started, its PID 1 is still flatrun's
    Python interpreter (a host binary) waiting on the exec FIFO.  A second container
    joins that PID namespace and tries to readlink/open the init's exe for reading,
    writing and as O_PATH (the first step of overwriting the host binary) and to
    reach its fds (CVE-2016-9962).  All fail with EACCES: the runtime made itself
    non-dumpable before entering the container, so ptrace access checks refuse.
    The interpreter file is byte-for-byte unchanged afterwards.
    """
    before = sha256(host_python)
    victim = flatrun.new_id()
    flatrun("create", "--bundle", make_bundle(["true"]), victim)
    init_pid = flatrun.state(victim)["pid"]
    assert os.path.realpath(f"/proc/{init_pid}/exe") == host_python, \
        "the created container's init should still be the runtime interpreter"

    def join(config: dict[str, Any]) -> None:
        bind_probe(config, cve_probe_dir)
        for entry in config["linux"]["namespaces"]:
            if entry["type"] == "pid":
                entry["path"] = f"/proc/{init_pid}/ns/pid"

    attacker = make_bundle([PROBE, "exe", "1"], edit=join)
    result = flatrun("run", "--bundle", attacker, flatrun.new_id(), check=False)
    assert result.returncode == 0, result.stderr
    seen = _lines(result.stdout)
    assert {"readlink=EACCES", "open_rdonly=EACCES", "open_wronly=EACCES",
            "open_path=EACCES", "fd_dir=OK"} <= seen, result.stdout
    # The fd numbers can be listed (the directory is root's), never followed.
    entries = fd_entries(seen)
    assert entries and all(_unreachable(e) for e in entries), result.stdout
    assert "python" not in result.stdout
    flatrun("delete", "--force", victim)
    assert sha256(host_python) == before


def test_cve_2019_5736_self_exe_is_the_container_binary(flatrun: Flatrun,
                                                         make_bundle: Bundles) -> None:
    """CVE-2019-5736: after execve /proc/self/exe must be the image's binary.

    The attack needs /proc/self/exe (or /proc/1/exe) to still name the runtime
    binary once the container's code runs.  flatrun execs the user's process
    directly, so both name busybox from the rootfs, and writing through them
    reaches only the image's busybox: EROFS here (the shared test rootfs is
    read-only), ETXTBSY on a writable one.
    """
    script = ("readlink /proc/self/exe; readlink /proc/1/exe; "
              "echo x 2>&1 >/proc/1/exe || echo write-refused")
    result = flatrun("run", "--bundle", make_bundle(["sh", "-c", script + " 2>&1"]),
                     flatrun.new_id())
    lines = result.stdout.splitlines()
    assert lines[0] == "/bin/busybox" and lines[1] == "/bin/busybox", result.stdout
    assert "Read-only file system" in result.stdout and "write-refused" in result.stdout


def test_cve_2016_9962_and_2019_5736_exec_process_unreachable(
        flatrun: Flatrun, make_bundle: Bundles, cve_probe_dir: str, tmp_path: Path,
        host_python: str) -> None:
    """CVE-2016-9962 / CVE-2019-5736 through ``flatrun exec``.

    The container's PID 1 scans /proc in a tight loop while ``flatrun exec``
    joins it eight times.  Each joining process is flatrun's Python until its
    execve: the probe must catch it (exe=EACCES proves the window was observed)
    yet never read its exe link or its fd table (EACCES, because it is
    non-dumpable from before setns until execve), never open its exe for writing,
    never follow an fd above 2 of another process (readlink and open give
    EACCES), and never see a host interpreter path.  The host interpreter is unchanged afterwards.
    """
    before = sha256(host_python)
    cid = flatrun.new_id()
    bundle = make_bundle([PROBE, "scan", "/dev/shm/stop"],
                         edit=lambda c: bind_probe(c, cve_probe_dir))
    out_path = tmp_path / "scan.out"
    with open(out_path, "w") as out:
        runner = subprocess.Popen([flatrun.binary, "--root", flatrun.root, "run", "--bundle",
                                   bundle, cid], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while "scanning=OK" not in out_path.read_text():
            assert time.monotonic() < deadline and runner.poll() is None, out_path.read_text()
            time.sleep(0.01)
        for _ in range(8):
            flatrun("exec", cid, "true")
        flatrun("exec", cid, "touch", "/dev/shm/stop")
        assert runner.wait(timeout=30) == 0
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    text = out_path.read_text()
    seen = _lines(text)
    assert "done=OK" in seen, text
    assert "exe=EACCES" in seen, f"the probe never caught a joining process: {text}"
    assert "exe_wronly=EACCES" in seen, text
    # fds above 2 only ever show up in a joining (non-dumpable) process, and
    # neither their targets nor the files behind them are reachable.
    entries = fd_entries(seen)
    assert all(_unreachable(e) for e in entries), text
    assert any(e.endswith(":readlink-EACCES:open-EACCES") for e in entries), text
    # The process is caught as flatrun's Python (EACCES), the exec trampoline (its
    # private sealed memfd) or the container's own binary: never a host file.
    targets = {line.split("=", 1)[1] for line in seen if line.startswith("exe=/")}
    assert targets <= {"/bin/busybox", "/memfd:flatrun-exec (deleted)"}, text
    assert "python" not in text and "exe_wronly=OK" not in seen
    assert sha256(host_python) == before


def _with_libraries_of(rootfs: Path, binary: str) -> None:
    """Copy the dynamic loader and the libraries ``binary`` links into ``rootfs``, at
    the same paths: what any glibc-based image carries, so the binary can start there."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        path = next((word for word in line.split() if word.startswith("/")), None)
        if path is not None:
            dest = rootfs / path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(path), dest)


@pytest.mark.parametrize("userns", [False, True], ids=["no-userns", "userns"])
def test_cve_2019_5736_shebang_to_runtime_exe(
        flatrun: Flatrun, make_bundle: Bundles, cve_probe_dir: str, host_python: str,
        userns: bool) -> None:
    """CVE-2019-5736, the ``#!/proc/self/exe`` variant.

    /evil holds only ``#!/proc/self/exe``: the kernel takes that interpreter from the
    process that execs the script. Were that flatrun's Python, the host interpreter
    would start inside the container (the image carries the loader and the libraries
    it links, as a Debian-based image does), and PID 1 (``cve_probe grab``) would open
    its exe, wait for it to exit and reopen the host file for writing; without a user
    namespace (podman's and containerd's default) that open succeeds. flatrun execs
    the program through its trampoline in a sealed memfd (runtime/trampoline.py), so
    /proc/self/exe is that private copy, which refuses to act as an interpreter: the
    host interpreter never starts, and whatever the probe grabs is the memfd.
    """
    before = sha256(host_python)

    def spec(config: dict[str, Any]) -> None:
        fresh = default_spec(userns=userns)
        fresh["root"] = config["root"]
        fresh["process"]["terminal"] = False
        # PID 1 outlives the probe, so its report can be read with exec afterwards.
        fresh["process"]["args"] = ["sh", "-c",
                                    f"{PROBE} grab /dev/shm/stop >/dev/shm/grab.out; sleep 60"]
        config.clear()
        config.update(fresh)
        bind_probe(config, cve_probe_dir)

    bundle = make_bundle(own_rootfs=True, edit=spec)
    rootfs = Path(bundle) / "rootfs"
    _with_libraries_of(rootfs, host_python)
    (rootfs / "evil").write_text("#!/proc/self/exe\n")
    (rootfs / "evil").chmod(0o755)
    cid = flatrun.new_id()
    flatrun("run", "--detach", "--bundle", bundle, cid)

    def grabbed() -> str:
        return flatrun("exec", cid, "cat", "/dev/shm/grab.out", check=False).stdout

    deadline = time.monotonic() + 10
    while "grabbing=OK" not in grabbed():
        assert time.monotonic() < deadline, "the probe did not start"
        time.sleep(0.05)
    ran = []
    for _ in range(5):
        ran.append(flatrun("exec", cid, "/evil", check=False))
        time.sleep(0.2)
        if "done=" in grabbed():
            break
    text = grabbed()
    for result in ran:
        assert result.returncode == 126, result.stderr
        assert "flatrun-exec: not an interpreter" in result.stderr, result.stderr
        assert "platform independent libraries" not in result.stderr
    exes = {line.split("=", 1)[1] for line in text.splitlines() if line.startswith("exe=")}
    assert exes <= {"/memfd:flatrun-exec (deleted)"}, text
    assert host_python not in text
    assert sha256(host_python) == before


@pytest.mark.parametrize("number", range(3, 10))
def test_cve_2024_21626_leaked_fd_as_cwd_on_create(flatrun: Flatrun, make_bundle: Bundles,
                                                   number: int) -> None:
    """CVE-2024-21626: process.cwd=/proc/self/fd/N to start in a runtime-held host dir.

    Every fd the init holds at chdir time is either CLOEXEC-irrelevant (not a
    directory) or a host directory the container must not start in.  flatrun
    refuses the create naming process.cwd: the path is not a directory inside
    the container, or it resolves outside the container root.
    """
    cid = flatrun.new_id()
    bundle = make_bundle(["sh", "-c", "pwd; ls"],
                         edit=lambda c: c["process"].update(cwd=f"/proc/self/fd/{number}"))
    result = flatrun("run", "--bundle", bundle, cid, check=False)
    assert result.returncode != 0, result.stdout
    assert "process.cwd: /proc/self/fd/" in result.stderr, result.stderr
    assert any(why in result.stderr for why in ("resolves outside the container",
                                                 "not a directory", "no such file")), \
        result.stderr
    assert not (Path(flatrun.root) / cid).exists()


def test_cve_2024_21626_leaked_fd_as_cwd_on_exec(flatrun: Flatrun,
                                                 make_bundle: Bundles) -> None:
    """CVE-2024-21626 via ``flatrun exec --cwd /proc/self/fd/N`` (N = 3..9).

    The joining process holds runtime fds (the sync socket, namespace fds) until
    it execs; none may become the new process's working directory.
    """
    cid = flatrun.new_id()
    flatrun("run", "--detach", "--bundle", make_bundle(["sleep", "30"]), cid)
    for number in range(3, 10):
        result = flatrun("exec", "--cwd", f"/proc/self/fd/{number}", cid, "pwd", check=False)
        assert result.returncode != 0, (number, result.stdout)
        assert "process.cwd: /proc/self/fd/" in result.stderr, result.stderr


def test_cve_2024_21626_only_stdio_and_preserved_fds_reach_the_process(
        flatrun: Flatrun, make_bundle: Bundles, tmp_path: Path) -> None:
    """CVE-2024-21626: no runtime fd may be inherited by the container process.

    ``ls -l /proc/$$/fd`` inside shows exactly 0, 1, 2 for ``run`` and ``exec``;
    with ``--preserve-fds 2`` exactly 0-4, where 3 and 4 are the files the
    caller passed (and nothing of the runtime's).
    """
    # The shell's own fds (no pipeline, and "; true" so sh does not exec ls).
    script = "ls -l /proc/$$/fd; true"
    result = flatrun("run", "--bundle", make_bundle(["sh", "-c", script]), flatrun.new_id())
    assert sorted(_fd_table(result.stdout)) == ["0", "1", "2"], result.stdout

    cid = flatrun.new_id()
    flatrun("run", "--detach", "--bundle", make_bundle(["sleep", "30"]), cid)
    result = flatrun("exec", cid, "sh", "-c", script)
    assert sorted(_fd_table(result.stdout)) == ["0", "1", "2"], result.stdout

    extra = [tmp_path / "keep-a", tmp_path / "keep-b"]
    out_path = tmp_path / "preserve.out"
    bundle = make_bundle(["sh", "-c", script])
    # A host shell opens the two files as fds 3 and 4 of flatrun (--preserve-fds
    # counts from 3); pytest's own fds 3 and 4 are left alone.
    argv = ["/bin/sh", "-c", 'exec "$@" 3<>"$KEEP_A" 4<>"$KEEP_B"', "sh", flatrun.binary,
            "--root", flatrun.root, "run", "--preserve-fds", "2", "--bundle", bundle,
            flatrun.new_id()]
    env = dict(os.environ, KEEP_A=str(extra[0]), KEEP_B=str(extra[1]))
    with open(out_path, "w") as out:
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                              timeout=30, check=False)
    text = out_path.read_text()
    assert proc.returncode == 0, text
    table = _fd_table(text)
    assert sorted(table, key=int) == ["0", "1", "2", "3", "4"], text
    assert table["3"] == str(extra[0]) and table["4"] == str(extra[1]), text
