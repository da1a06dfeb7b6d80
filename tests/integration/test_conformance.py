"""What opencontainers/runtime-tools' validation suite expects of a runtime.

The suite drives the runtime through its command line only (`create --bundle B
[--pid-file P] ID`, `start`, `state`, `kill ID SIG`, `delete [--force]`), with a
bundle whose rootfs *is* the bundle directory (``root.path = "."``), the
configuration of ``generate.New("linux")`` (14 capabilities in all five sets,
RLIMIT_NOFILE 1024, hostname "mrsdalloway", a default-deny seccomp profile, no
cgroup namespace and no cgroup mount) and a checker, runtimetest, that inspects
the container from inside.  These tests rebuild that bundle and run the same
checks with busybox, one test per runtime-tools expectation.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Flatrun, namespace_holder

CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
        "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
CAP_BITS = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_FSETID": 4,
            "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
            "CAP_NET_BIND_SERVICE": 10, "CAP_NET_RAW": 13, "CAP_SYS_CHROOT": 18,
            "CAP_SYS_ADMIN": 21, "CAP_MKNOD": 27, "CAP_AUDIT_WRITE": 29, "CAP_SETFCAP": 31}

# The allow list of runtime-tools' generate/seccomp default profile (amd64, no
# CAP_SYS_ADMIN): names of every architecture, unknown ones included.
_SECCOMP_NAMES = """accept accept4 access alarm bind brk capget capset chdir chmod chown
chown32 clock_getres clock_gettime clock_nanosleep close connect copy_file_range creat dup
dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_wait
epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat fadvise64
fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchown fchown32 fchownat fcntl
fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64
fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futimesat getcpu getcwd
getdents getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups
getgroups32 getitimer getpeername getpgid getpgrp getpid getppid getpriority getrandom
getresgid getresgid32 getresuid getresuid32 getrlimit get_robust_list getrusage getsid
getsockname getsockopt get_thread_area gettid gettimeofday getuid getuid32 getxattr
inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy
io_getevents ioprio_get ioprio_set io_setup io_submit ipc kill lchown lchown32 lgetxattr
link linkat listen listxattr llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64
madvise memfd_create mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mmap2
mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedsend mq_unlink mremap
msgctl msgget msgrcv msgsnd msync munlock munlockall munmap nanosleep newfstatat _newselect
open openat pause pipe pipe2 poll ppoll prctl pread64 preadv prlimit64 pselect6 pwrite64
pwritev read readahead readlink readlinkat readv recv recvfrom recvmmsg recvmsg
remap_file_pages removexattr rename renameat renameat2 restart_syscall rmdir rt_sigaction
rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait
rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam sched_get_priority_max
sched_get_priority_min sched_getscheduler sched_rr_get_interval sched_setaffinity
sched_setattr sched_setparam sched_setscheduler sched_yield seccomp select semctl semget
semop semtimedop send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32
setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority
setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32
setrlimit set_robust_list setsid setsockopt set_thread_area set_tid_address setuid
setuid32 setxattr shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4
sigreturn socket socketcall socketpair splice stat stat64 statfs statfs64 statx symlink
symlinkat sync sync_file_range syncfs sysinfo syslog tee tgkill time timer_create
timer_delete timerfd_create timerfd_gettime timerfd_settime timer_getoverrun timer_gettime
timer_settime times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat utime
utimensat utimes vfork vmsplice wait4 waitid waitpid write writev"""
SECCOMP_NAMES = _SECCOMP_NAMES.split()
CLONE_NS_FLAGS = 0x7E020000  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET


def _seccomp_profile() -> dict[str, Any]:
    calls: list[dict[str, Any]] = [
        {"names": SECCOMP_NAMES, "action": "SCMP_ACT_ALLOW", "args": []}]
    calls += [{"names": ["personality"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}]}
              for v in (0, 8, 0xFFFFFFFF)]
    calls += [{"names": ["chroot"], "action": "SCMP_ACT_ALLOW", "args": []},
              {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": CLONE_NS_FLAGS, "op": "SCMP_CMP_MASKED_EQ"}]},
              {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "args": []},
              {"names": ["modify_ldt"], "action": "SCMP_ACT_ALLOW", "args": []}]
    return {"defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": calls}


def generator_spec(args: list[str]) -> dict[str, Any]:
    """The shape of runtime-tools' ``generate.New("linux")`` with ``root.path = "."``."""
    return {
        "ociVersion": "1.0.2-dev",
        "hostname": "mrsdalloway",
        "root": {"path": ".", "readonly": False},
        "process": {
            "terminal": False, "user": {"uid": 0, "gid": 0}, "args": args, "cwd": "/",
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"],
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "capabilities": {k: list(CAPS) for k in
                             ("bounding", "permitted", "inheritable", "effective", "ambient")},
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                         "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "seccomp": _seccomp_profile(),
        },
    }


class RtBundle:
    """A runtime-tools style bundle: the rootfs is the bundle directory itself."""

    def __init__(self, tmp: Path, rootfs: str) -> None:
        self.tmp = tmp
        self.rootfs = rootfs
        self.count = 0

    def __call__(self, args: list[str], edit: Callable[[dict[str, Any]], None] | None = None,
                 prepare: Callable[[Path], None] | None = None) -> Path:
        self.count += 1
        bundle = self.tmp / f"ocitest{self.count}"
        shutil.copytree(self.rootfs, bundle, symlinks=True)
        config = generator_spec(args)
        if edit is not None:
            edit(config)
        (bundle / "config.json").write_text(json.dumps(config))
        if prepare is not None:
            prepare(bundle)
        return bundle


@pytest.fixture
def rt_bundle(tmp_path: Path, busybox_rootfs: str) -> RtBundle:
    return RtBundle(tmp_path, busybox_rootfs)


def create(flatrun: Flatrun, bundle: Path, cid: str, *extra: str,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    """``create`` with stdout/stderr on files in the bundle, as runtime-tools does."""
    with open(bundle / f"stdout-{cid}", "w") as out, open(bundle / f"stderr-{cid}", "w") as err:
        proc = subprocess.run([flatrun.binary, "--root", flatrun.root, "create", *extra,
                               "--bundle", str(bundle), cid], stdout=out, stderr=err,
                              stdin=subprocess.DEVNULL, timeout=30, check=False)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, "",
                                         (bundle / f"stderr-{cid}").read_text())
    if check:
        assert proc.returncode == 0, result.stderr
    return result


def wait_status(flatrun: Flatrun, cid: str, want: str, timeout: float = 5) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = flatrun.state(cid)
        if state["status"] == want or time.monotonic() > deadline:
            return state
        time.sleep(0.02)


def run_inside(flatrun: Flatrun, bundle: Path) -> str:
    """create + start + wait for stopped; the container's stdout (its config's args)."""
    cid = flatrun.new_id()
    create(flatrun, bundle, cid)
    flatrun("start", cid)
    assert wait_status(flatrun, cid, "stopped")["status"] == "stopped"
    flatrun("delete", cid)
    return (bundle / f"stdout-{cid}").read_text() + (bundle / f"stderr-{cid}").read_text()


def _cap_masks(status: str) -> dict[str, int]:
    return {line.split(":")[0]: int(line.split()[1], 16)
            for line in status.splitlines() if line.startswith("Cap")}


# -- default.t and every runtimetest run --------------------------------------------------

def test_generator_default_config_passes_runtimetest_checks(
        flatrun: Flatrun, rt_bundle: RtBundle) -> None:
    """default.t: root ".", caps in five sets, default fs/devices/symlinks, mounts in order."""
    script = ("cat /proc/self/status; echo MOUNTS; cat /proc/self/mountinfo; echo DEV; "
              "for d in null zero full random urandom tty ptmx; do "
              "stat -L -c '%n %F %t:%T' /dev/$d; done; "
              "for l in fd stdin stdout stderr ptmx; do echo /dev/$l=$(readlink /dev/$l); done; "
              "echo HOST=$(hostname) CWD=$(pwd) NOFILE=$(ulimit -Sn):$(ulimit -Hn) TERM=$TERM")
    out = run_inside(flatrun, rt_bundle(["sh", "-c", script]))
    masks = _cap_masks(out)
    want = sum(1 << CAP_BITS[c] for c in CAPS)
    assert masks == {"CapInh": want, "CapPrm": want, "CapEff": want, "CapBnd": want,
                     "CapAmb": want}
    assert "NoNewPrivs:\t0" in out and "Seccomp:\t2" in out
    mounts = out.split("MOUNTS\n")[1].split("DEV\n")[0].splitlines()
    seen = [(line.split(" - ")[0].split()[4], *line.split(" - ")[1].split()[:2])
            for line in mounts]
    expected = [(m["destination"], m["type"], m["source"])
                for m in generator_spec([])["mounts"]]
    assert [s for s in seen if s in expected] == expected  # all there, in order
    for name, major, minor in (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7),
                               ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0),
                               ("ptmx", 5, 2)):
        assert f"/dev/{name} character special file {major:x}:{minor:x}" in out
    for link, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                         ("ptmx", "pts/ptmx")):
        assert f"/dev/{link}={target}\n" in out
    assert "HOST=mrsdalloway CWD=/ NOFILE=1024:1024 TERM=xterm" in out


# -- create.t, state.t, start.t, kill.t, delete.t ---------------------------------------

def test_lifecycle_errors_and_transitions(flatrun: Flatrun, rt_bundle: RtBundle) -> None:
    """create/start/kill/delete: an error for a missing id, a duplicate id, a second start,
    a signal to a stopped container (which must not change its state)."""
    bundle = rt_bundle(["sh", "-c", "echo 'process called' >> /output"])
    for verb in ("create", "start", "state", "kill", "delete"):
        result = flatrun(verb, check=False)
        assert result.returncode != 0 and "container id cannot be empty" in result.stderr
    cid = flatrun.new_id()
    missing = flatrun("start", cid, check=False)
    assert missing.returncode != 0 and "does not exist" in missing.stderr
    create(flatrun, bundle, cid)
    assert flatrun.state(cid)["id"] == cid
    assert not (bundle / "output").exists()  # process.args wait for start
    again = create(flatrun, bundle, cid, check=False)
    assert again.returncode != 0 and "already exists" in again.stderr
    flatrun("start", cid)
    stopped = wait_status(flatrun, cid, "stopped")
    assert stopped["status"] == "stopped"
    assert (bundle / "output").read_text() == "process called\n"
    second = flatrun("start", cid, check=False)
    assert second.returncode != 0 and "stopped" in second.stderr
    assert (bundle / "output").read_text() == "process called\n"
    kill = flatrun("kill", cid, "KILL", check=False)
    assert kill.returncode != 0 and "not running" in kill.stderr
    assert flatrun.state(cid) == stopped  # kill_no_effect.t
    flatrun("delete", cid)
    assert flatrun("state", cid, check=False).returncode != 0


def test_delete_refuses_running_containers(
        flatrun: Flatrun, rt_bundle: RtBundle) -> None:
    """delete.t: deleting a running container without --force fails and has no effect.
    A created one is deleted, as runc does and containerd's shim expects."""
    for args, status in ((["sleep", "30"], "running"),):
        cid = flatrun.new_id()
        create(flatrun, rt_bundle(args), cid)
        if status == "running":
            flatrun("start", cid)
        pid = flatrun.state(cid)["pid"]
        refused = flatrun("delete", cid, check=False)
        assert refused.returncode != 0
        assert f"not stopped: {status}" in refused.stderr
        state = flatrun.state(cid)
        assert (state["status"], state["pid"]) == (status, pid)
        assert Path(f"/proc/{pid}").exists()
        flatrun("kill", cid, "KILL")
        assert wait_status(flatrun, cid, "stopped")["status"] == "stopped"
        flatrun("delete", cid)


def test_kill_delivers_named_signals(flatrun: Flatrun, rt_bundle: RtBundle) -> None:
    """killsig.t: `kill ID TERM|USR1|USR2` reaches the container's trap."""
    for sig in ("TERM", "USR1", "USR2"):
        bundle = rt_bundle(["sh", "-c", f"trap 'touch /{sig}' {sig}; sleep 10 & wait $!"])
        cid = flatrun.new_id()
        create(flatrun, bundle, cid)
        flatrun("start", cid)
        assert wait_status(flatrun, cid, "running")["status"] == "running"
        time.sleep(0.1)  # the shell installs its trap
        flatrun("kill", cid, sig)
        assert wait_status(flatrun, cid, "stopped")["status"] == "stopped"
        assert (bundle / sig).exists()
        flatrun("delete", cid)


def test_pid_file_and_invalid_version(flatrun: Flatrun, rt_bundle: RtBundle,
                                      tmp_path: Path) -> None:
    """pidfile.t: the pid file holds the bare pid (strconv.Atoi, no newline);
    misc_props.t: unknown properties/annotations are fine, a bad ociVersion is not."""
    pid_file = tmp_path / "pidfile"

    def unknown(config: dict[str, Any]) -> None:
        config["unknown"] = "unknown"
        config["annotations"] = {"org.example.unknown": ""}

    cid = flatrun.new_id()
    create(flatrun, rt_bundle(["true"], unknown), cid, "--pid-file", str(pid_file))
    assert pid_file.read_text() == str(flatrun.state(cid)["pid"])

    def bad_version(config: dict[str, Any]) -> None:
        config["ociVersion"] = "invalid"

    bad = create(flatrun, rt_bundle(["true"], bad_version), flatrun.new_id(), check=False)
    assert bad.returncode != 0 and "ociVersion" in bad.stderr


# -- hooks.t, hooks_stdin.t, poststart_fail.t ---------------------------------------------

def test_hooks_get_state_on_stdin_without_cgroup_namespace(
        flatrun: Flatrun, rt_bundle: RtBundle) -> None:
    """hooks_stdin.t with the generator's config (no cgroup namespace, no cgroup mount):
    create used to die with EPIPE because the container init, waiting for the prestart
    hooks, read the parent's cgroup message instead.  Each hook gets id, bundle, pid,
    annotations, and status created / running / stopped; a failing poststart hook
    is only a warning and the next one still runs (poststart_fail.t)."""
    def edit(config: dict[str, Any]) -> None:
        config["annotations"] = {"org.opencontainers.runtime-tools": "hook stdin test"}

    bundle = rt_bundle(["true"], edit)

    def hook(name: str) -> dict[str, Any]:
        return {"path": str(bundle / "bin" / "sh"),
                "args": ["sh", "-c", f"cat > {bundle / name}"], "timeout": 1}

    config = json.loads((bundle / "config.json").read_text())
    config["hooks"] = {
        "prestart": [hook("prestart")],
        "poststart": [{"path": str(bundle / "bin" / "false"), "args": ["false"]},
                      hook("poststart")],
        "poststop": [hook("poststop")],
    }
    (bundle / "config.json").write_text(json.dumps(config))
    cid = flatrun.new_id()
    create(flatrun, bundle, cid)
    pid = flatrun.state(cid)["pid"]
    started = flatrun("start", cid)
    assert "hooks.poststart[0]" in started.stderr  # a warning, not a failure
    assert wait_status(flatrun, cid, "stopped")["status"] == "stopped"
    flatrun("delete", cid)
    for name, status in (("prestart", "created"), ("poststart", "running"),
                         ("poststop", "stopped")):
        state = json.loads((bundle / name).read_text())
        assert state["id"] == cid and state["bundle"] == str(bundle)
        assert state["annotations"] == {"org.opencontainers.runtime-tools": "hook stdin test"}
        assert state["status"] == status
        if name != "poststop":
            assert state["pid"] == pid


# -- linux_rootfs_propagation.t ------------------------------------------------------------

PROPAGATION_PROBE = (
    "mkdir /target /mount /testdir && touch /testdir/example && "
    "mount --rbind / /target && mount --bind /testdir /mount && "
    "if [ -e /target/mount/example ]; then echo EXPOSED; else echo HIDDEN; fi")


@pytest.mark.parametrize("mode,expect", [("shared", "EXPOSED"), ("slave", "HIDDEN"),
                                         ("private", "HIDDEN"), ("unbindable", "UNBINDABLE")])
def test_rootfs_propagation(flatrun: Flatrun, rt_bundle: RtBundle, mode: str,
                            expect: str) -> None:
    """linux_rootfs_propagation.t: the container's "/" has the asked propagation.
    "shared" used to fail in pivot_root (EINVAL on a shared mount) and "unbindable"
    in the rootfs bind (EINVAL binding from an unbindable mount): the mode is now
    applied to the new "/" after pivot_root, read-only paths and masks."""
    def edit(config: dict[str, Any]) -> None:
        config["linux"]["rootfsPropagation"] = mode
        config["linux"]["readonlyPaths"] = ["/etc"]  # a bind from the root mount
        for kind in config["process"]["capabilities"].values():
            kind.append("CAP_SYS_ADMIN")
        config["linux"].pop("seccomp")  # runtime-tools' SetupPrivileged drops it too

    probe = PROPAGATION_PROBE if mode != "unbindable" else (
        "mkdir /target; mount --rbind / /target 2>/dev/null && echo BOUND || echo UNBINDABLE")
    out = run_inside(flatrun, rt_bundle(["sh", "-c", probe + "; touch /etc/x"], edit))
    assert expect in out.split(), out
    assert "Read-only file system" in out  # readonlyPaths still applied


# -- linux_ns_path.t -----------------------------------------------------------------------

def test_hostname_set_in_joined_uts_namespace(flatrun: Flatrun, rt_bundle: RtBundle,
                                              tmp_path: Path) -> None:
    """linux_ns_path.t joins `unshare --uts` with the generator's hostname set: runc and
    crun set it in the joined namespace.  Joining the runtime's own uts namespace with a
    hostname is still refused (it would rename the host)."""
    with namespace_holder("uts") as path:
        holder_pid = int(path.split("/")[2])

        def join(target: str) -> Callable[[dict[str, Any]], None]:
            def edit(config: dict[str, Any]) -> None:
                spaces = [n for n in config["linux"]["namespaces"] if n["type"] != "uts"]
                config["linux"]["namespaces"] = [*spaces, {"type": "uts", "path": target}]
            return edit

        cid = flatrun.new_id()
        create(flatrun, rt_bundle(["true"], join(path)), cid)
        inside = os.readlink(f"/proc/{flatrun.state(cid)['pid']}/ns/uts")
        assert inside == os.readlink(path)
        named = subprocess.run(["nsenter", "-t", str(holder_pid), "-u", "hostname"],
                               capture_output=True, text=True, check=True).stdout.strip()
        assert named == "mrsdalloway"
        host = create(flatrun, rt_bundle(["true"], join("/proc/self/ns/uts")),
                      flatrun.new_id(), check=False)
        assert host.returncode != 0
        assert "hostname: setting a hostname needs a uts namespace other than" in host.stderr
        assert os.uname().nodename != "mrsdalloway"


# -- linux_ns_itype.t ----------------------------------------------------------------------

NAMESPACE_LINKS = ("cgroup", "ipc", "mnt", "net", "pid", "user", "uts")


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as info:
        return [line.split()[4] for line in info
                if line.split()[4] == str(path) or line.split()[4].startswith(f"{path}/")]


def _without_namespaces(config: dict[str, Any]) -> None:
    config["linux"]["namespaces"] = []
    del config["hostname"]
    config["linux"]["maskedPaths"] = ["/proc/kcore", "/proc/timer_list"]
    config["linux"]["readonlyPaths"] = ["/proc/sys"]


def test_no_namespaces_inherits_the_runtimes_and_mounts_go_with_delete(
        flatrun: Flatrun, rt_bundle: RtBundle) -> None:
    """linux_ns_itype.t removes every namespace from the generator's config (which keeps
    its mounts): the container MUST inherit each of the runtime's namespaces.  The mounts,
    devices, masked and read-only paths are then made under the rootfs in the runtime's
    mount namespace and the root is a chroot; `exec` lands in the same root; `delete`
    detaches every mount create made and keeps one that was there before."""
    bundle = rt_bundle(["sleep", "30"], _without_namespaces)
    (bundle / "mnt").mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1k", "before", str(bundle / "mnt")],
                   check=True)
    try:
        cid = flatrun.new_id()
        create(flatrun, bundle, cid)
        pid = flatrun.state(cid)["pid"]
        for name in NAMESPACE_LINKS:
            assert os.readlink(f"/proc/{pid}/ns/{name}") == os.readlink(f"/proc/self/ns/{name}")
        made = _mounts_under(bundle)
        for dest in ("/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys",
                     "/proc/sys", "/proc/timer_list"):
            assert f"{bundle}{dest}" in made, dest
        flatrun("start", cid)
        inside = flatrun("exec", cid, "sh", "-c",
                         "ls /; echo x 2>&1 > /proc/sys/kernel/domainname; "
                         "echo timer_list=$(wc -c < /proc/timer_list); "
                         "stat -c '%F %t:%T' /dev/null").stdout
        assert "linuxrc" in inside and "mnt" in inside  # the bundle's busybox, not the host
        assert "Read-only file system" in inside and "timer_list=0\n" in inside
        assert "character special file 1:3" in inside
        flatrun("delete", "--force", cid)
        assert _mounts_under(bundle) == [f"{bundle}/mnt"]
    finally:
        subprocess.run(["umount", str(bundle / "mnt")], check=False)


def test_no_mount_namespace_read_only_root_and_failed_create(
        flatrun: Flatrun, rt_bundle: RtBundle) -> None:
    """A read-only root needs a mount: the rootfs is bound onto itself (and detached by
    delete).  A create that fails after some mounts leaves none; what needs a private
    mount tree (a user namespace, rootfsPropagation) is refused up front."""
    def read_only(config: dict[str, Any]) -> None:
        _without_namespaces(config)
        config["root"]["readonly"] = True

    bundle = rt_bundle(["sh", "-c", "touch /x; echo done"], read_only)
    out = run_inside(flatrun, bundle)
    assert "Read-only file system" in out and "done" in out
    assert not (bundle / "x").exists()
    assert _mounts_under(bundle) == []

    def bad_mount(config: dict[str, Any]) -> None:
        _without_namespaces(config)
        config["mounts"].append({"destination": "/late", "type": "nosuchfs", "source": "x"})

    bundle = rt_bundle(["true"], bad_mount)
    failed = create(flatrun, bundle, flatrun.new_id(), check=False)
    assert failed.returncode != 0 and "mounts[6]" in failed.stderr
    assert _mounts_under(bundle) == []
    assert flatrun("list", "--quiet").stdout == ""

    for edit, message in (
            (lambda c: c["linux"].update(namespaces=[{"type": "user"}],
                                         uidMappings=[{"containerID": 0, "hostID": 100000,
                                                       "size": 65536}],
                                         gidMappings=[{"containerID": 0, "hostID": 100000,
                                                       "size": 65536}]),
             "linux.namespaces: a user namespace needs a mount namespace too"),
            (lambda c: c["linux"].update(rootfsPropagation="shared"),
             "linux.rootfsPropagation: needs a mount namespace")):
        def refused(config: dict[str, Any], edit: Any = edit) -> None:
            _without_namespaces(config)
            edit(config)

        bundle = rt_bundle(["true"], refused)
        result = create(flatrun, bundle, flatrun.new_id(), check=False)
        assert result.returncode != 0 and message in result.stderr
        assert _mounts_under(bundle) == []
        assert flatrun("list", "--quiet").stdout == ""


def test_joining_the_runtimes_own_mount_namespace_is_inheriting_it(
        flatrun: Flatrun, rt_bundle: RtBundle, tmp_path: Path) -> None:
    """A mount namespace given by path that is the runtime's own must not be set up as
    a private tree (a slave "/" and a pivot_root there would take the root away from
    every process in it): it is inherited, as with no entry.  Run inside a throwaway
    mount namespace, so even the old behaviour could not harm the host's."""
    def own_mount_ns(config: dict[str, Any]) -> None:
        _without_namespaces(config)
        config["linux"]["namespaces"] = [{"type": "mount", "path": "/proc/self/ns/mnt"}]

    bundle = rt_bundle(["sh", "-c", "ls /"], own_mount_ns)
    cid = flatrun.new_id()
    base = f"{flatrun.binary} --root {flatrun.root}"
    script = (f"{base} create --bundle {bundle} {cid} > {bundle}/out 2>&1 && "
              f"{base} start {cid} && sleep 0.3 && "
              f"ls / > {tmp_path}/after && {base} delete {cid} && "
              f"grep -c {bundle} /proc/self/mountinfo > {tmp_path}/left; true")
    subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                   stdin=subprocess.DEVNULL, check=True, timeout=30)
    assert "linuxrc" in (bundle / "out").read_text()  # the container: its own root
    after = (tmp_path / "after").read_text()
    assert "linuxrc" not in after and "proc" in after  # the namespace kept its root
    assert (tmp_path / "left").read_text().strip() == "0"  # delete detached its mounts


# -- linux_devices.t, linux_masked_paths.t, linux_readonly_paths.t -------------------------

def test_devices_masked_and_readonly_paths(flatrun: Flatrun, rt_bundle: RtBundle) -> None:
    """linux.devices with fileMode/uid/gid (a fifo with major/minor too); masked files,
    directories, nested paths and device nodes read as empty; read-only paths refuse
    writes; a relative masked path is a configuration error."""
    def edit(config: dict[str, Any]) -> None:
        config["linux"]["devices"] = [
            {"path": "/dev/test1", "type": "c", "major": 10, "minor": 666, "fileMode": 0o660,
             "uid": 0, "gid": 0},
            {"path": "/dev/test2", "type": "b", "major": 8, "minor": 666, "fileMode": 0o660,
             "uid": 0, "gid": 0},
            {"path": "/dev/test3", "type": "p", "major": 8, "minor": 666, "fileMode": 0o660},
            {"path": "/dev/test4", "type": "u", "major": 1, "minor": 3, "fileMode": 0o600,
             "uid": 1000, "gid": 1001}]
        config["linux"]["maskedPaths"] = [
            "/masked-dir", "/masked-file", "/masked-dir/masked-subdir",
            "/masked-dir/masked-file", "/masked-dir/masked-subdir/masked-file",
            "/masked-fifo", "/masked-chr"]
        config["linux"]["readonlyPaths"] = ["/ro-dir", "/ro-file", "/ro-dir/sub",
                                            "/ro-fifo"]

    def prepare(root: Path) -> None:
        (root / "masked-dir" / "masked-subdir").mkdir(parents=True)
        (root / "ro-dir" / "sub").mkdir(parents=True)
        for name in ("masked-dir/masked-subdir/masked-file", "masked-dir/masked-file",
                     "masked-file", "ro-file", "ro-dir/sub/f"):
            (root / name).write_text("secrets")
        os.mkfifo(root / "masked-fifo")
        os.mkfifo(root / "ro-fifo")
        os.mknod(root / "masked-chr", 0o666 | 0o020000, os.makedev(1, 5))

    script = ("stat -c '%n %F %t:%T %a %u:%g' /dev/test1 /dev/test2 /dev/test3 /dev/test4; "
              "echo LS=$(ls /masked-dir | wc -l) F=$(cat /masked-file) "
              "C=$(head -c 4 /masked-chr | wc -c); stat -c '%n %t:%T' /masked-fifo; "
              "touch /ro-dir/new /ro-dir/sub/new; echo x > /ro-file; echo x > /ro-dir/sub/f")
    out = run_inside(flatrun, rt_bundle(["sh", "-c", script], edit, prepare))
    assert "/dev/test1 character special file a:29a 660 0:0" in out
    assert "/dev/test2 block special file 8:29a 660 0:0" in out
    assert "/dev/test3 fifo 0:0 660 0:0" in out
    assert "/dev/test4 character special file 1:3 600 1000:1001" in out
    assert "LS=0 F= C=0" in out
    assert "/masked-fifo 1:3" in out  # /dev/null bound over it, never opened
    assert out.count("Read-only file system") == 4

    def relative(config: dict[str, Any]) -> None:
        config["linux"]["maskedPaths"] = ["masked-relpath"]

    bad = create(flatrun, rt_bundle(["true"], relative), flatrun.new_id(), check=False)
    assert bad.returncode != 0 and "linux.maskedPaths[0]" in bad.stderr


# -- process*.t, linux_sysctl.t, process_oom_score_adj.t, root_readonly_true.t -------------

def test_process_identity_limits_and_sysctls(flatrun: Flatrun, rt_bundle: RtBundle) -> None:
    """uid/gid/additionalGids, umask, noNewPrivileges, rlimits, sysctls, oomScoreAdj,
    cwd and env, a read-only root; unknown rlimits and capabilities are errors."""
    def edit(config: dict[str, Any]) -> None:
        process = config["process"]
        process["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [5, 6], "umask": 0o77}
        process["noNewPrivileges"] = True
        process["oomScoreAdj"] = 500
        process["cwd"] = "/test"
        process["env"] += ["testa=valuea", "testb=123"]
        process["rlimits"] += [{"type": "RLIMIT_CORE", "hard": 1024, "soft": 512}]
        config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shmmax": "4096"}
        config["root"]["readonly"] = True

    script = ("id; umask; grep NoNewPrivs /proc/self/status; cat /proc/self/oom_score_adj; "
              "echo CORE=$(ulimit -Sc):$(ulimit -Hc) PWD=$(pwd) $testa $testb; "
              "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax; touch /x")
    out = run_inside(flatrun, rt_bundle(["sh", "-c", script], edit,
                                        lambda root: (root / "test").mkdir(mode=0o700)))
    assert "uid=1000 gid=1000 groups=5(tty),6" in out
    assert "0077" in out and "NoNewPrivs:\t1" in out
    assert "\n500\n" in out
    assert "CORE=1:2 PWD=/test valuea 123" in out  # busybox counts 512-byte blocks
    assert "\n1\n4096\n" in out
    assert "Read-only file system" in out

    for field, edit_bad in (
            ("process.rlimits[0].type", lambda c: c["process"].update(
                rlimits=[{"type": "RLIMIT_TEST", "hard": 1, "soft": 1}])),
            ("process.capabilities.bounding[14]", lambda c: c["process"]["capabilities"]
             ["bounding"].append("CAP_TEST"))):
        bad = create(flatrun, rt_bundle(["true"], edit_bad), flatrun.new_id(), check=False)
        assert bad.returncode != 0 and field in bad.stderr


# -- process_capabilities.t -------------------------------------------------------------

def test_capabilities_the_runtime_lacks_are_dropped_with_a_warning(
        flatrun: Flatrun, rt_bundle: RtBundle) -> None:
    """SetupPrivileged asks for every capability in all five sets.  A runtime started
    without some of them (here: CAP_SYS_NICE dropped from its bounding set by setpriv)
    cannot grant them; the spec says such values MUST be logged as a warning and runtimes
    SHOULD NOT fail.  The container runs with what the runtime could give."""
    from flatstack.kernel.caps import CAP_NAMES, CAPABILITIES

    every = [CAP_NAMES[bit] for bit in sorted(CAP_NAMES)]

    def edit(config: dict[str, Any]) -> None:
        config["process"]["capabilities"] = {key: list(every) for key in (
            "bounding", "permitted", "inheritable", "effective", "ambient")}

    bundle = rt_bundle(["sh", "-c", "grep ^Cap /proc/self/status"], edit)
    cid = flatrun.new_id()
    with open(bundle / "out", "w") as out, open(bundle / "err", "w") as err:
        created = subprocess.run(
            ["setpriv", "--bounding-set", "-sys_nice", flatrun.binary, "--root", flatrun.root,
             "create", "--bundle", str(bundle), cid],
            stdout=out, stderr=err, stdin=subprocess.DEVNULL, timeout=30, check=False)
    flatrun.created.append(cid)
    warnings = (bundle / "err").read_text()
    assert created.returncode == 0, warnings
    for key in ("bounding", "permitted", "inheritable", "effective", "ambient"):
        line = next(w for w in warnings.splitlines()
                    if w.startswith(f"flatrun: warning: process.capabilities.{key}: ignoring"))
        assert "CAP_SYS_NICE" in line and line.endswith("not available to the runtime")
    flatrun("start", cid)
    assert wait_status(flatrun, cid, "stopped")["status"] == "stopped"
    masks = _cap_masks((bundle / "out").read_text())
    with open("/proc/self/status") as status:
        host_bounding = _cap_masks(status.read())["CapBnd"]
    want = host_bounding & ~(1 << CAPABILITIES["CAP_SYS_NICE"])
    assert masks == {"CapInh": want, "CapPrm": want, "CapEff": want, "CapBnd": want,
                     "CapAmb": want}


# -- linux_process_apparmor_profile.t, linux_mount_label.t, linux_seccomp.t, mounts.t -----

def test_lsm_fields_without_lsm_seccomp_allow_default_and_extra_mount(
        flatrun: Flatrun, rt_bundle: RtBundle) -> None:
    """On a host without AppArmor/SELinux (this one), apparmorProfile, selinuxLabel and
    mountLabel cannot confine anything: like crun, flatrun warns and runs the container
    (it used to refuse, losing every runtimetest check of that run).  A default-allow
    profile with getcwd -> ERRNO and an extra tmpfs mount behave as asked."""
    assert not (os.path.exists("/sys/kernel/security/apparmor")
                or os.path.exists("/sys/fs/selinux")), \
        "this test describes a host without AppArmor/SELinux (this machine kind has none)"

    def edit(config: dict[str, Any]) -> None:
        config["process"]["apparmorProfile"] = "acme_secure_profile"
        config["process"]["selinuxLabel"] = "system_u:system_r:svirt_lxc_net_t:s0:c124,c675"
        config["linux"]["mountLabel"] = "system_u:object_r:svirt_sandbox_file_t:s0:c715,c811"
        config["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"}]}
        config["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                                 "options": ["nosuid", "strictatime", "mode=755", "size=1k"]})

    bundle = rt_bundle(["sh", "-c", "grep ' /tmp ' /proc/self/mountinfo; /bin/pwd"], edit)
    cid = flatrun.new_id()
    created = create(flatrun, bundle, cid)
    assert "process.apparmorProfile: AppArmor is not enabled" in created.stderr
    assert "process.selinuxLabel: SELinux is not enabled" in created.stderr
    flatrun("start", cid)
    assert wait_status(flatrun, cid, "stopped")["status"] == "stopped"
    out = (bundle / f"stdout-{cid}").read_text() + (bundle / f"stderr-{cid}").read_text()
    assert " /tmp rw,nosuid - tmpfs tmpfs " in out
    assert "Operation not permitted" in out  # getcwd -> EPERM
