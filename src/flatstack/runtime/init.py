"""The container side of create and exec: the code that runs in forked children.

Stage one (a child of flatrun) joins and unshares namespaces; with a new PID
namespace it forks stage two, which becomes the container's PID 1, prepares
the root filesystem, drops privileges, waits on the exec FIFO and execs the
user's process.  Everything here runs single-threaded, after ``fork``.
"""

from __future__ import annotations

import os

from flatstack.errors import FlatstackError, KernelError
from flatstack.kernel import ns
from flatstack.runtime.sync import Channel

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class LaunchPlan:
    """Everything the forked stages need, computed by the parent before fork."""

    def __init__(self, config: dict[str, Any], *, container_id: str, bundle: str,
                 rootfs: str, channel: Channel) -> None:
        self.config = config
        self.container_id = container_id
        self.bundle = bundle
        self.rootfs = rootfs
        self.channel = channel
        self.process: dict[str, Any] = config.get("process") or {}
        self.linux: dict[str, Any] = config.get("linux") or {}
        self.joins: list[tuple[int, str]] = []
        self.new_flags = 0
        for entry in self.linux.get("namespaces") or []:
            flag = ns.NAMESPACES[entry["type"]][0]
            if entry.get("path"):
                self.joins.append((flag, entry["path"]))
            else:
                self.new_flags |= flag
        # The user namespace is joined first so the others are joined with its powers.
        self.joins.sort(key=lambda item: item[0] != ns.CLONE_NEWUSER)
        self.in_userns = bool(self.new_flags & ns.CLONE_NEWUSER) or any(
            flag == ns.CLONE_NEWUSER for flag, _ in self.joins)
        #: False when the container shares the runtime's mount namespace.
        self.has_mount_ns = bool(self.new_flags & ns.CLONE_NEWNS) or any(
            flag == ns.CLONE_NEWNS for flag, _ in self.joins)
        self.fifo_fd = -1
        self.console_fd = -1
        self.preserve_fds = 0
        self.no_pivot = False
        self.seccomp_bpf: bytes | None = None
        self.seccomp_flags = 0
        self.cgroup_paths: dict[str, str] = {}
        #: v1 cgroups the first child joins itself: (``tasks`` fd opened by the parent,
        #: directory) pairs (see create._fork_child)
        self.join_tasks: list[tuple[int, str]] = []
        self.hook_state: dict[str, Any] = {}
        self.wants_parent_hooks = bool(
            (config.get("hooks") or {}).get("prestart")
            or (config.get("hooks") or {}).get("createRuntime"))
        self.is_exec = False
        #: exec into a container without a mount namespace: its rootfs, to chroot into.
        self.exec_root = ""
        self.close_in_child: list[int] = []
        self.mount_trees: dict[str, int] = {}  # idmapped detached trees, made by the parent
        self.landlock: Any = None  # runtime.landlock.Policy, checked by the parent
        self.trampoline_fd = -1  # sealed memfd of the exec trampoline, made by preload

    def drop_inherited_fds(self) -> None:
        """In a forked child: close everything the parent held but the children do not
        use (a long-lived caller such as the engine's supervisor may hold thousands,
        and the spec's RLIMIT_NOFILE applies to the init's next open)."""
        from flatstack.kernel import proc

        keep = {self.channel.read_fd, self.channel.write_fd, self.fifo_fd, self.console_fd,
                self.trampoline_fd, *self.mount_trees.values(),
                *(fd for fd, _ in self.join_tasks)}
        proc.close_fds_from(3 + self.preserve_fds, keep, now=True)

    def close_parent_copies(self) -> None:
        """After fork: the parent's copies of descriptors only the children use."""
        for fd in (self.console_fd, self.trampoline_fd):
            if fd >= 0:
                os.close(fd)
        self.console_fd = self.trampoline_fd = -1


def _fail(channel: Channel, err: BaseException) -> None:
    """Report an error to the parent and exit the child."""
    if isinstance(err, FlatstackError):
        message = str(err)
    elif isinstance(err, OSError):
        message = f"{err.filename + ': ' if err.filename else ''}{os.strerror(err.errno or 0)}"
    else:
        message = f"{type(err).__name__}: {err}"
    try:
        channel.send("error", message)
    except OSError:
        # The parent has gone (after "created"): stderr is all that is left.
        try:
            os.write(2, f"flatrun: container init: {message}\n".encode())
        except OSError:
            pass
    os._exit(1)


def _enter_child(plan: LaunchPlan) -> None:
    """A forked child's first steps: drop the parent's descriptors, join the v1
    cgroups it was not born in (``plan.join_tasks``)."""
    for fd in plan.close_in_child:
        os.close(fd)
    plan.drop_inherited_fds()
    if plan.join_tasks:
        from flatstack.runtime.cgroups._fs import join_self

        for fd, directory in plan.join_tasks:
            join_self(fd, directory)
        plan.join_tasks = []


def direct_init(plan: LaunchPlan) -> None:
    """The init when the parent cloned it straight into its new namespaces (and
    cgroup; ``create._fork_child``): what stage one would have done for it, then stage
    two.  In a new user namespace it waits for the parent to write the id maps, then
    becomes the container's root.  Never returns."""
    try:
        _enter_child(plan)
        from flatstack.kernel import proc

        proc.set_dumpable(False)
        if plan.new_flags & ns.CLONE_NEWUSER:
            plan.channel.expect("maps")
            _become_root_if_mapped()
    except BaseException as err:
        _fail(plan.channel, err)
    stage_two(plan)


def stage_one(plan: LaunchPlan) -> None:
    """First child: namespaces, then fork PID 1 (or become it).  Never returns."""
    channel = plan.channel
    try:
        _enter_child(plan)
        if "rootfs" in plan.mount_trees:
            os.chdir(plan.rootfs)  # still host root: the tree is attached on the cwd
        for flag, path in plan.joins:
            join_namespace(flag, path)
        if plan.new_flags & ns.CLONE_NEWUSER:
            ns.unshare(ns.CLONE_NEWUSER)
            channel.send("userns")
            channel.expect("maps")
        if plan.in_userns:
            _become_root_if_mapped()
        from flatstack.kernel import proc

        proc.set_dumpable(False)
        rest = plan.new_flags & ~(ns.CLONE_NEWUSER | ns.CLONE_NEWCGROUP)
        if rest:
            ns.unshare(rest)
        if plan.new_flags & ns.CLONE_NEWTIME:
            _write_time_offsets(plan.linux.get("timeOffsets") or {})
        pid = os.fork()
        if pid == 0:
            stage_two(plan)
        channel.send("pid", pid)
        os._exit(0)
    except BaseException as err:
        _fail(channel, err)


def join_namespace(flag: int, path: str) -> None:
    """setns into the namespace at ``path`` (a ``linux.namespaces`` entry); a failure
    names the path and the reason."""
    try:
        ns.join_path(path, flag)
    except (KernelError, OSError) as err:
        raise FlatstackError(f"linux.namespaces: joining {path}: "
                             f"{os.strerror(err.errno or 0).lower()}") from None


def _become_root_if_mapped() -> None:
    try:
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    except OSError:
        pass  # container root is not mapped; keep the overflow ids


def _write_time_offsets(offsets: dict[str, Any]) -> None:
    lines = []
    for clock in ("monotonic", "boottime"):
        value = offsets.get(clock)
        if value:
            lines.append(f"{clock} {int(value.get('secs', 0))} {int(value.get('nanosecs', 0))}")
    if lines:
        with open("/proc/self/timens_offsets", "w") as f:
            f.write("\n".join(lines) + "\n")


class _CgroupGate:
    """Stage two waits for the parent's cgroup placement only where it matters."""

    def __init__(self, channel: Channel, unshare_cgroupns: bool) -> None:
        self.channel = channel
        self.unshare_cgroupns = unshare_cgroupns
        self.done = False

    def __call__(self) -> None:
        if self.done:
            return
        self.channel.expect("cgroup")
        if self.unshare_cgroupns:
            ns.unshare(ns.CLONE_NEWCGROUP)
        self.done = True


def preload(plan: LaunchPlan) -> None:
    """Import now everything the children need: after a user namespace is entered
    (the interpreter may live under a home directory the mapped ids cannot read),
    pivot_root or setns(mnt), flatrun's files and the standard library are out of reach.
    Called by the parent before it forks."""
    from flatstack.kernel import caps, proc  # noqa: F401
    from flatstack.runtime import process_attrs, trampoline  # noqa: F401

    config = plan.config
    process = plan.process
    # The init builds the rootfs; process_attrs writes oomScoreAdj through it. Loaded
    # here, a long-lived caller (the engine's supervisor) imports it once, not per init.
    if not plan.is_exec or process.get("oomScoreAdj") is not None:
        from flatstack.runtime import rootfs  # noqa: F401
    if plan.new_flags & ns.CLONE_NEWNET:
        import _socket
        import fcntl  # noqa: F401
    if process.get("terminal"):
        import _socket  # noqa: F401
        import array  # noqa: F401

        from flatstack.runtime import console  # noqa: F401
    if plan.seccomp_bpf is not None:
        from flatstack.runtime import seccomp  # noqa: F401
    if plan.landlock is not None:
        from flatstack.runtime import landlock  # noqa: F401

    if (config.get("hooks") or {}).get("startContainer") or (config.get("hooks") or {}).get(
            "createContainer"):
        import subprocess  # noqa: F401

        from flatstack.runtime import hooks  # noqa: F401
    plan.trampoline_fd = trampoline.sealed_copy(min_fd=3 + plan.preserve_fds)


def stage_two(plan: LaunchPlan) -> None:
    """The container's init: rootfs, identity, exec FIFO, exec.  Never returns."""
    channel = plan.channel
    try:
        os.setsid()
        gate = _CgroupGate(channel, bool(plan.new_flags & ns.CLONE_NEWCGROUP))
        config = plan.config
        linux = plan.linux
        process = plan.process
        if plan.new_flags & ns.CLONE_NEWUTS or any(f == ns.CLONE_NEWUTS for f, _ in plan.joins):
            _set_names(config)
        if plan.new_flags & ns.CLONE_NEWNET:
            _loopback_up()
        from flatstack.runtime.rootfs import RootfsBuilder

        builder = RootfsBuilder(config, plan.rootfs, plan.bundle, in_userns=plan.in_userns,
                                cgroup_paths=plan.cgroup_paths, cgroup_hook=gate,
                                mount_trees=plan.mount_trees,
                                own_mount_ns=plan.has_mount_ns)
        builder.prepare()
        if plan.wants_parent_hooks:
            gate()  # the parent sends "cgroup" first; prestart hooks see the cgroup
            channel.send("hooks")
            channel.expect("hooks-done")
        if (config.get("hooks") or {}).get("createContainer"):
            from flatstack.runtime.hooks import run_hooks

            run_hooks(config, "createContainer", dict(plan.hook_state, pid=os.getpid()))
        builder.pivot(plan.no_pivot)
        _apply_sysctl(linux.get("sysctl") or {})
        if process.get("terminal"):
            from flatstack.runtime.console import setup_console

            setup_console(plan.console_fd, process.get("consoleSize"), mount_console=True)
        builder.finalize()
        gate()
        finish_process(plan)
    except BaseException as err:
        _fail(channel, err)


def _loopback_up() -> None:
    """Bring ``lo`` up in a new network namespace, as runc and crun do."""
    try:
        ns.loopback_up()
    except OSError as err:
        raise FlatstackError(f"linux.namespaces: network: bringing up lo: "
                             f"{os.strerror(err.errno or 0).lower()}") from None


def _set_names(config: dict[str, Any]) -> None:
    from flatstack.kernel.libc import syscall

    hostname = config.get("hostname")
    if hostname is not None:
        data = hostname.encode()
        syscall("sethostname", data, len(data), detail=hostname)
    domainname = config.get("domainname")
    if domainname is not None:
        data = domainname.encode()
        syscall("setdomainname", data, len(data), detail=domainname)


def _apply_sysctl(sysctl: dict[str, str]) -> None:
    from flatstack.runtime.rootfs import write_procfs  # imported before pivot_root

    for key, value in sysctl.items():
        try:
            write_procfs("sys/" + key.replace(".", "/"), value)
        except FlatstackError as err:
            raise FlatstackError(f"linux.sysctl.{key}: {err}") from None
        except OSError as err:
            raise FlatstackError(f"linux.sysctl.{key}: cannot set to {value!r}: "
                                 f"{os.strerror(err.errno or 0).lower()}") from None


def resolve_executable(args: list[str], env: dict[str, str]) -> str:
    """Find ``args[0]`` like execvp would, so a missing binary fails ``create``."""
    name = args[0]
    if "/" in name:
        candidates = [name]
    else:
        candidates = [os.path.join(d or ".", name)
                      for d in env.get("PATH", DEFAULT_PATH).split(":")]
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
        if "/" in name and os.path.exists(path):
            raise FlatstackError(f"process.args[0]: {name}: permission denied")
    raise FlatstackError(f"process.args[0]: exec: {name!r}: executable file not found "
                         "in $PATH" if "/" not in name else
                         f"process.args[0]: {name}: no such file or directory")


def env_dict(env_list: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in env_list:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def finish_process(plan: LaunchPlan) -> None:
    """Identity, limits, capabilities, exec FIFO wait, seccomp, execve."""
    from flatstack.kernel import proc
    from flatstack.runtime import process_attrs as pa

    channel = plan.channel
    process = plan.process
    linux = plan.linux
    env = env_dict(process.get("env") or [])
    cwd = process.get("cwd") or "/"
    pa.apply_rlimits(process.get("rlimits") or [])
    if process.get("oomScoreAdj") is not None:
        pa.apply_oom_score_adj(process["oomScoreAdj"])
    if process.get("ioPriority"):
        pa.apply_io_priority(process["ioPriority"])
    if process.get("scheduler"):
        pa.apply_scheduler(process["scheduler"])
    if linux.get("personality"):
        pa.apply_personality(linux["personality"])
    if process.get("execCPUAffinity"):
        pa.apply_exec_cpu_affinity(process["execCPUAffinity"])
    _chdir(cwd, process.get("user") or {}, plan.is_exec)
    path = resolve_executable(process["args"], env)
    cap_plan = pa.prepare_capabilities(process.get("capabilities"))
    for warning in cap_plan.warnings:  # the spec's MUST: logged by the runtime, not fatal
        channel.send("warning", warning)
    nnp = bool(process.get("noNewPrivileges"))
    ruleset = -1
    if plan.landlock is not None:  # paths resolve in the container; errors fail create
        from flatstack.runtime import landlock

        ruleset = landlock.build_ruleset(plan.landlock)
    # A notify listener is handed over by the runtime before "created" (runc's order);
    # otherwise, with no_new_privs, the filter goes on as late as possible.
    early_seccomp = plan.seccomp_bpf is not None and (
        not nnp or bool((linux.get("seccomp") or {}).get("listenerPath")))
    if plan.seccomp_bpf is not None and not nnp:
        _install_seccomp(plan)
    _apply_lsm_labels(process)
    pa.drop_bounding(cap_plan)
    pa.apply_user(process.get("user") or {}, keep_caps=True)
    pa.apply_final_caps(cap_plan)
    if nnp:
        proc.set_no_new_privs()
        if early_seccomp:
            _install_seccomp(plan)
    channel.send("created" if not plan.is_exec else "started", os.getpid())
    channel.close()
    if plan.fifo_fd >= 0:
        _wait_exec_fifo(plan.fifo_fd)
        if (plan.config.get("hooks") or {}).get("startContainer"):
            from flatstack.runtime.hooks import run_hooks

            run_hooks(plan.config, "startContainer",
                      dict(plan.hook_state, pid=os.getpid(), status="created"))
    if ruleset >= 0:  # after the FIFO (a host path) and startContainer hooks
        landlock.restrict(ruleset)
    if plan.seccomp_bpf is not None and not early_seccomp:
        _install_seccomp(plan)
    _seal_fds(plan.preserve_fds, plan.trampoline_fd)
    # Ignored signals and the signal mask survive execve: the trampoline resets every
    # disposition to the default and unblocks everything right before the final exec.
    from flatstack.runtime import trampoline

    try:
        trampoline.exec_program(plan.trampoline_fd, path, process["args"], env)
    except OSError as err:
        os.write(2, f"flatrun: exec {path}: {os.strerror(err.errno or 0).lower()}\n".encode())
        os._exit(127 if err.errno == 2 else 126)


def _apply_lsm_labels(process: dict[str, Any]) -> None:
    """Ask the enabled LSM to switch to the configured profile/label at execve.

    Hosts without the LSM were warned about at create time; a host with it must
    never silently run the container unconfined, so a failed write fails create.
    """
    profile = process.get("apparmorProfile")
    if profile and os.path.exists("/sys/kernel/security/apparmor"):
        _write_attr(("attr/apparmor/exec", "attr/exec"),
                    f"exec {profile}", "process.apparmorProfile")
    label = process.get("selinuxLabel")
    if label and os.path.exists("/sys/fs/selinux/enforce"):
        _write_attr(("attr/exec",), label, "process.selinuxLabel")


def _write_attr(paths: tuple[str, ...], value: str, field: str) -> None:
    from flatstack.runtime.rootfs import write_procfs

    last: BaseException | None = None
    for path in paths:  # the init is single-threaded: its pid names its only task
        try:
            write_procfs(f"{os.getpid()}/{path}", value)
            return
        except (OSError, FlatstackError) as err:
            last = err
    raise FlatstackError(f"{field}: cannot apply {value!r}: {last}")


def _chdir(cwd: str, user: dict[str, Any], is_exec: bool) -> None:
    try:
        os.chdir(cwd)
    except FileNotFoundError:
        try:
            os.makedirs(cwd, 0o755, exist_ok=True)
            os.chdir(cwd)
        except OSError as err:
            raise FlatstackError(f"process.cwd: {cwd}: cannot create: "
                                 f"{os.strerror(err.errno or 0).lower()}") from None
    except OSError as err:
        raise FlatstackError(f"process.cwd: {cwd}: {os.strerror(err.errno or 0).lower()}"
                             ) from None
    # CVE-2024-21626: a leaked host directory fd as cwd shows as "(unreachable)".
    here = os.getcwd()
    if not here.startswith("/"):
        raise FlatstackError(f"process.cwd: {cwd} resolves outside the container")


def _install_seccomp(plan: LaunchPlan) -> None:
    from flatstack.runtime import seccomp

    assert plan.seccomp_bpf is not None
    listener = seccomp.install_filter(plan.seccomp_bpf, plan.seccomp_flags)
    if listener:
        # The runtime takes the fd with pidfd_getfd and sends it to listenerPath: the
        # path is a host path, out of reach after pivot_root.
        plan.channel.send("seccomp-listener", listener)
        plan.channel.expect("seccomp-done")
        os.close(listener)


def _wait_exec_fifo(fifo_fd: int) -> None:
    """Block until ``flatrun start`` opens the FIFO, then tell it we go."""
    fd = os.open(f"/proc/self/fd/{fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
    os.write(fd, b"0")
    os.close(fd)
    os.close(fifo_fd)


def _seal_fds(preserve: int, trampoline_fd: int) -> None:
    """Only stdio and the preserved fds reach the container process (the trampoline's
    memfd is close-on-exec: it is gone once the trampoline runs)."""
    from flatstack.kernel import proc

    keep = set(range(3 + preserve)) | {trampoline_fd}
    for fd in range(3, 3 + preserve):
        try:
            os.set_inheritable(fd, True)
        except OSError:
            pass
    proc.close_fds_from(3 + preserve, keep)
