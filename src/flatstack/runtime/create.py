"""``flatrun create``: everything the parent does to bring a container to "created"."""

from __future__ import annotations

import os

from flatstack.errors import FlatstackError
from flatstack.kernel import ns
from flatstack.runtime.init import LaunchPlan, direct_init, join_namespace, preload, stage_one
from flatstack.runtime.state import Container, process_start_time, rfc3339_now
from flatstack.runtime.sync import Channel

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SECCOMP_CACHE = ".seccomp-cache"

# Sysctl prefixes that are namespaced, and the namespace each needs.
_IPC_SYSCTLS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")


class CreateOptions:
    """Flags of ``flatrun create`` / ``run``."""

    def __init__(self, *, root: str, container_id: str, bundle: str,
                 pid_file: str | None = None, console_socket: str | None = None,
                 preserve_fds: int = 0, no_pivot: bool = False, no_new_keyring: bool = False,
                 systemd_cgroup: bool = False) -> None:
        self.root = root
        self.container_id = container_id
        self.bundle = os.path.abspath(bundle)
        self.pid_file = pid_file
        self.console_socket = console_socket
        self.preserve_fds = preserve_fds
        self.no_pivot = no_pivot
        self.no_new_keyring = no_new_keyring
        self.systemd_cgroup = systemd_cgroup
        #: Foreground ``run``: with a terminal and no --console-socket, flatrun keeps
        #: the pty master itself (``Container.console_peer`` receives it).
        self.internal_console = False


def _is_own(path: str | None, kind: str) -> bool:
    """Whether a namespace to join (``kind`` as in /proc/PID/ns) is the runtime's own."""
    if not path:
        return False
    try:
        joined, own = os.stat(path), os.stat(f"/proc/self/ns/{kind}")
    except OSError:
        return False  # joining it fails later with a clear error
    return (joined.st_dev, joined.st_ino) == (own.st_dev, own.st_ino)


def inherit_own_mount_namespace(config: dict[str, Any]) -> None:
    """A mount namespace given by path that is the runtime's own is no private tree:
    the container inherits it, as with no ``mount`` entry at all (rootfs mounts made
    there and detached by delete, a chroot).  Setting it up as a private tree would
    make the host's "/" a slave and pivot_root the host's root away."""
    linux = config.get("linux") or {}
    spaces = linux.get("namespaces") or []
    if any(n.get("type") == "mount" and _is_own(n.get("path"), "mnt") for n in spaces):
        linux["namespaces"] = [n for n in spaces if n.get("type") != "mount"]


def check_runtime_requirements(config: dict[str, Any]) -> None:
    """Spec requirements the runtime enforces beyond the config's shape."""
    linux = config.get("linux") or {}
    types = {n.get("type"): n for n in linux.get("namespaces") or []}
    if "mount" not in types:
        # The container shares the runtime's mount namespace (the spec's "inherit"):
        # what needs a private mount tree cannot be had there.
        if "user" in types:
            raise FlatstackError("linux.namespaces: a user namespace needs a mount "
                                 "namespace too (its mounts would be the host's)")
        if _wants_idmapped_trees(config):
            raise FlatstackError("mounts: idmapped mounts need a mount namespace")
        if linux.get("rootfsPropagation"):
            raise FlatstackError("linux.rootfsPropagation: needs a mount namespace")
    process = config.get("process")
    if not process or not process.get("args"):
        raise FlatstackError("process.args: required to create a container")
    for field in ("hostname", "domainname"):
        if config.get(field) is not None and ("uts" not in types
                                              or _is_own(types["uts"].get("path"), "uts")):
            raise FlatstackError(f"{field}: setting a {field} needs a uts namespace other "
                                 "than the runtime's own")
    user_ns = types.get("user")
    if user_ns is not None and _is_own(user_ns.get("path"), "user"):
        raise FlatstackError(f"linux.namespaces: joining {user_ns['path']}: it is the "
                             "runtime's own user namespace (leave the entry out to share it)")
    if user_ns is not None and not user_ns.get("path") and not linux.get("uidMappings"):
        raise FlatstackError("linux.uidMappings: a new user namespace needs uid mappings")
    if user_ns is None and (linux.get("uidMappings") or linux.get("gidMappings")):
        raise FlatstackError("linux.uidMappings: mappings given without a user namespace")
    if process.get("terminal") is None:
        pass
    for key in linux.get("sysctl") or {}:
        if key.startswith("net."):
            if "network" not in types:
                raise FlatstackError(f"linux.sysctl.{key}: needs a network namespace")
        elif key.startswith(_IPC_SYSCTLS) or key.startswith("fs.mqueue."):
            if "ipc" not in types:
                raise FlatstackError(f"linux.sysctl.{key}: needs an ipc namespace")
        elif key in ("kernel.hostname", "kernel.domainname"):
            raise FlatstackError(f"linux.sysctl.{key}: use the hostname/domainname fields")
        else:
            raise FlatstackError(f"linux.sysctl.{key}: not a namespaced sysctl; "
                                 "it would change the host")
    if linux.get("timeOffsets") and "time" not in types:
        raise FlatstackError("linux.timeOffsets: needs a time namespace")
    # A host without the LSM cannot confine anything: like crun (and runc for SELinux)
    # the field is then a no-op, said on stderr; runtime-tools' apparmor test expects it.
    if (process.get("apparmorProfile") and
            not os.path.exists("/sys/kernel/security/apparmor")):
        os.write(2, b"flatrun: warning: process.apparmorProfile: AppArmor is not enabled "
                    b"on this host, the profile is not applied\n")
    if process.get("selinuxLabel") and not os.path.exists("/sys/fs/selinux/enforce"):
        os.write(2, b"flatrun: warning: process.selinuxLabel: SELinux is not enabled "
                    b"on this host, the label is not applied\n")
    if linux.get("intelRdt"):
        raise FlatstackError("linux.intelRdt: Intel RDT is not supported")
    if "org.flatstack.landlock" in (config.get("annotations") or {}):
        from flatstack.runtime.landlock import compile_policy

        compile_policy(config)  # a bad policy fails here, before anything is made


def default_device_rules(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Device cgroup rules: the config's, then linux.devices, then runc's defaults."""
    linux = config.get("linux") or {}
    resources = linux.get("resources") or {}
    rules = list(resources.get("devices") or [])
    for dev in linux.get("devices") or []:
        if dev.get("type") in ("c", "b"):
            rules.append({"allow": True, "type": dev["type"], "major": dev.get("major"),
                          "minor": dev.get("minor"), "access": "rwm"})
    for major, minor in ((1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2),
                         (136, None), (10, 200)):
        rule: dict[str, Any] = {"allow": True, "type": "c", "major": major, "access": "rwm"}
        if minor is not None:
            rule["minor"] = minor
        rules.append(rule)
    # Any character/block device may be mknod-ed, as runc allows.
    rules.append({"allow": True, "type": "c", "access": "m"})
    rules.append({"allow": True, "type": "b", "access": "m"})
    return rules


def seccomp_program(config: dict[str, Any], root: str) -> tuple[bytes | None, int]:
    """Compiled BPF (cached) and filter flags for linux.seccomp, or (None, 0)."""
    profile = (config.get("linux") or {}).get("seccomp")
    if not profile:
        return None, 0
    from flatstack.runtime import seccomp

    bpf = seccomp.load_cached(profile, os.path.join(root, SECCOMP_CACHE))
    return bpf, seccomp.filter_flags(profile)


def create(opts: CreateOptions, *, subreaper: bool = False) -> Container:
    """Create a container and leave it waiting on its exec FIFO."""
    from flatstack.oci.config import load_config

    config = load_config(opts.bundle)
    inherit_own_mount_namespace(config)
    if "org.flatstack.userns" not in (config.get("annotations") or {}):
        check_runtime_requirements(config)
    container = Container.new(opts.root, opts.container_id)
    cleanup = _Cleanup(container)
    try:
        if "org.flatstack.userns" in (config.get("annotations") or {}):
            from flatstack.runtime import userns_pool

            owner = os.path.abspath(container.dir)
            if userns_pool.apply_auto(config, owner, container.dir) is not None:
                cleanup.userns_owner = owner
                container.data["userns_pool"] = owner
            check_runtime_requirements(config)
        _create(opts, config, container, cleanup, subreaper)
    except BaseException:
        cleanup.run()
        raise
    return container


class _Cleanup:
    """Undo a partial create: kill the init, remove the cgroup and the state."""

    def __init__(self, container: Container) -> None:
        self.container = container
        self.pids: list[int] = []
        self.cgroup: Any = None
        self.userns_owner = ""
        self.trees: dict[str, int] = {}
        #: (rootfs, mount ids kept): a container without a mount namespace of its own.
        self.host_mounts: tuple[str, list[int]] | None = None

    def run(self) -> None:
        for fd in self.trees.values():
            os.close(fd)
        self.trees = {}
        for pid in self.pids:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        if self.cgroup is not None:
            try:
                self.cgroup.destroy()
            except FlatstackError:
                pass
        if self.host_mounts is not None:
            from flatstack.runtime import host_mounts

            host_mounts.release(*self.host_mounts)
        if self.userns_owner:
            from flatstack.runtime.userns_pool import release

            release(self.userns_owner)
        self.container.remove_dir()


def _create(opts: CreateOptions, config: dict[str, Any], container: Container,
            cleanup: _Cleanup, subreaper: bool) -> None:
    linux = config.get("linux") or {}
    rootless = os.geteuid() != 0
    bpf, sec_flags = seccomp_program(config, opts.root)
    cgroup = _make_cgroup(opts, config, container.id, rootless)
    cleanup.cgroup = cgroup
    annotations = config.get("annotations") or {}
    container.data.update({
        "ociVersion": config.get("ociVersion", "1.2.0"),
        "bundle": opts.bundle,
        "rootfs": config["root"]["path"],
        "created": rfc3339_now(),
        "owner": "" if not rootless else str(os.geteuid()),
        "annotations": annotations,
        "creating": True,
        "cgroup": cgroup.to_state() if cgroup is not None else None,
        "hooks": {k: v for k, v in (config.get("hooks") or {}).items()
                  if k in ("poststart", "poststop")},
        "namespaces": linux.get("namespaces") or [],
        "process": config.get("process"),
        "config_linux": {k: linux[k] for k in ("seccomp", "uidMappings", "gidMappings")
                         if k in linux},
        "rootless": rootless,
    })
    os.mkfifo(container.fifo_path, 0o622)
    # Writable by the container's root even when it is an unmapped id (user namespace);
    # the init reaches the FIFO only through the fd it inherits.
    os.chmod(container.fifo_path, 0o622)
    fifo_fd = os.open(container.fifo_path, os.O_PATH | os.O_CLOEXEC)
    parent_end, child_end = Channel.pair()
    plan = LaunchPlan(config, container_id=container.id, bundle=opts.bundle,
                      rootfs=config["root"]["path"], channel=child_end)
    plan.fifo_fd = fifo_fd
    if not plan.has_mount_ns:
        from flatstack.runtime import host_mounts

        cleanup.host_mounts = (plan.rootfs, host_mounts.snapshot(plan.rootfs))
        container.data["host_mounts"] = cleanup.host_mounts
    if container._lock_fd is not None:
        plan.close_in_child.append(container._lock_fd)
    plan.preserve_fds = opts.preserve_fds
    plan.no_pivot = opts.no_pivot
    plan.seccomp_bpf = bpf
    plan.seccomp_flags = sec_flags
    if "org.flatstack.landlock" in annotations:
        from flatstack.runtime.landlock import compile_policy

        plan.landlock = compile_policy(config)
    plan.cgroup_paths = dict(getattr(cgroup, "paths", {}) or {}) if cgroup else {}
    plan.hook_state = {"ociVersion": container.data["ociVersion"], "id": container.id,
                       "status": "creating", "bundle": opts.bundle, "annotations": annotations}
    if (config.get("process") or {}).get("terminal"):
        if opts.console_socket:
            from flatstack.runtime.console import connect_console_socket

            plan.console_fd = connect_console_socket(opts.console_socket)
        elif opts.internal_console:
            from flatstack.runtime.console import console_pair

            plan.console_fd, container.console_peer = console_pair()
        else:
            raise FlatstackError("process.terminal: a terminal needs --console-socket "
                                 "(or use 'run' without --detach)")
    clone_all = (not rootless and bool(plan.new_flags & ns.CLONE_NEWUSER)
                 and bool(plan.new_flags & ns.CLONE_NEWNS))
    if clone_all or _wants_idmapped_trees(config):
        from flatstack.runtime.idmapped import prepare_trees

        cleanup.trees = plan.mount_trees = prepare_trees(config, plan.rootfs, opts.bundle,
                                                         clone_all=clone_all)
    if subreaper:
        from flatstack.kernel import proc

        proc.set_child_subreaper()
    preload(plan)
    first, born_in_cgroup, is_init = _fork_child(plan, cgroup, linux, rootless)
    if first == 0:
        parent_end.close()
        if is_init:
            direct_init(plan)
        stage_one(plan)
    cleanup.pids.append(first)
    child_end.close()
    plan.close_parent_copies()
    try:
        if not is_init:
            init_pid = _drive_stage_one(parent_end, plan, first, linux)
        else:
            init_pid = first
            if plan.new_flags & ns.CLONE_NEWUSER:
                _feed_maps(parent_end, init_pid, linux)
        cleanup.pids = [init_pid]
        if cgroup is not None and not born_in_cgroup:
            cgroup.add_pid(init_pid)
        try:
            parent_end.send("cgroup")
        except BrokenPipeError:
            pass  # the init already failed and exited: its error is read below
        container.data["pid"] = init_pid
        container.data["pid_start"] = process_start_time(init_pid)
        container.save()
        while True:
            tag, payload = parent_end.recv()
            if tag == "hooks":
                from flatstack.runtime.hooks import run_hooks

                # runc, crun and runtime-tools' hooks_stdin report "created" here.
                state = dict(plan.hook_state, pid=init_pid, status="created")
                run_hooks(config, "prestart", state)
                run_hooks(config, "createRuntime", state)
                parent_end.send("hooks-done")
            elif tag == "seccomp-listener":
                relay_seccomp_listener(config, dict(plan.hook_state, pid=init_pid), init_pid,
                                       payload)
                parent_end.send("seccomp-done")
            elif tag == "created":
                break
            elif tag == "error":
                raise FlatstackError(payload)
            else:
                raise FlatstackError(f"internal error: unexpected {tag!r} from container init")
    finally:
        parent_end.close()
        os.close(fifo_fd)
        for fd in cleanup.trees.values():
            os.close(fd)
        cleanup.trees = {}
    container.data.pop("creating", None)
    container.save()
    if opts.pid_file:
        write_pid_file(opts.pid_file, init_pid)
    cleanup.pids.clear()
    cleanup.cgroup = None


def relay_seccomp_listener(config: dict[str, Any], state: dict[str, Any], pid: int,
                           remote_fd: int) -> None:
    """Pass the container's seccomp notify fd to the agent at linux.seccomp.listenerPath."""
    from flatstack.runtime import seccomp

    sec = (config.get("linux") or {}).get("seccomp") or {}
    seccomp.relay_listener(pid, remote_fd, sec["listenerPath"], state,
                           sec.get("listenerMetadata", ""))


def _wants_idmapped_trees(config: dict[str, Any]) -> bool:
    if "org.flatstack.rootfs.idmap" in (config.get("annotations") or {}):
        return True
    return any(mnt.get("uidMappings") or "idmap" in (mnt.get("options") or ())
               or "ridmap" in (mnt.get("options") or ()) for mnt in config.get("mounts") or [])


def _drive_stage_one(channel: Channel, plan: LaunchPlan, first: int,
                     linux: dict[str, Any]) -> int:
    """Feed stage one its id maps and collect the init's pid."""
    try:
        if plan.new_flags & ns.CLONE_NEWUSER:
            channel.expect("userns")
            _feed_maps(channel, first, linux)
        init_pid = channel.expect("pid")
    except BaseException:
        try:
            os.kill(first, 9)
        except OSError:
            pass
        raise
    finally:
        try:
            os.waitpid(first, 0)
        except ChildProcessError:
            pass
    return int(init_pid)


def _fork_child(plan: LaunchPlan, cgroup: Any, linux: dict[str, Any],
                rootless: bool) -> tuple[int, bool, bool]:
    """Fork the first child; returns its pid (0 in the child), whether it is placed in
    the container's cgroup and whether it is the init itself.

    Where it can, the child is born in the cgroup: clone3 into the cgroup2 directory,
    and it joins the v1 ones itself by writing ``0`` to ``tasks`` files the parent
    opened (``plan.join_tasks``), so nobody writes a ``cgroup.procs`` file and waits
    for an RCU grace period.  Unless it joins a user, mount, PID, cgroup or time
    namespace by path or needs a new time namespace, it is also born in its
    namespaces, a new user namespace included, and is the init (as crun does): no
    stage one to fork, wait for and reap.  The parent writes the id maps of a new user
    namespace (``_feed_maps``) and steps into the network, IPC and UTS namespaces to
    join around the clone (``_born_in``), so the child starts in them."""
    if rootless:
        return os.fork(), False, False
    from flatstack.kernel.clone import clone3, single_threaded
    from flatstack.runtime.cgroups._fs import open_tasks
    from flatstack.runtime.cgroups.base import room_for_a_helper

    if not single_threaded():
        return os.fork(), False, False
    direct = not (plan.new_flags & ns.CLONE_NEWTIME
                  or any(flag not in _JOINED_AROUND_CLONE for flag, _ in plan.joins))
    # The cgroup namespace comes last, once the init is placed (init._CgroupGate).
    namespaces = plan.new_flags & ~ns.CLONE_NEWCGROUP if direct else 0
    if cgroup is not None and (direct or room_for_a_helper(linux.get("resources") or {})):
        v2_dir, v1_dirs = cgroup.birth_places()
    elif direct:  # no cgroup to be born in
        v2_dir, v1_dirs = None, []
    else:
        return os.fork(), False, False
    opened: list[int] = []
    cwd = -1
    own: list[tuple[int, int]] = []
    try:
        if direct:
            own = _born_in(plan.joins)
        for directory in v1_dirs:
            opened.append(open_tasks(directory))
            plan.join_tasks.append((opened[-1], directory))
        if v2_dir is not None:
            opened.append(os.open(v2_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        if direct and "rootfs" in plan.mount_trees:
            # The init attaches the rootfs tree on its cwd (RootfsBuilder.prepare); born
            # in its user namespace, it may not be able to search the path to it.
            cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            os.chdir(plan.rootfs)
        pid = clone3(namespaces, opened[-1] if v2_dir is not None else None)
    except OSError:
        # Stage one unshares (and reports a refusal) and the parent places the init.
        _release_birth_places(plan, opened, cwd, own)
        return os.fork(), False, False
    except BaseException:
        _release_birth_places(plan, opened, cwd, own)
        raise
    if pid:  # the child keeps its cwd, namespaces and the tasks fds (init._enter_child)
        _release_birth_places(plan, opened, cwd, own)
    return pid, cgroup is not None, direct


#: Namespaces the parent may enter for the clone and leave again (a joined user
#: namespace cannot be left; mount, PID, cgroup and time joins stay with stage one).
_JOINED_AROUND_CLONE = frozenset({ns.CLONE_NEWNET, ns.CLONE_NEWIPC, ns.CLONE_NEWUTS})


def _born_in(joins: list[tuple[int, str]]) -> list[tuple[int, int]]:
    """Enter the namespaces to join (network, IPC, UTS) so the next clone is born in
    them; returns (fd of our own, flag) pairs for ``_release_birth_places``."""
    own: list[tuple[int, int]] = []
    names = {flag: name for flag, name in ns.NAMESPACES.values()}
    try:
        for flag, path in joins:
            own.append((os.open(f"/proc/self/ns/{names[flag]}", os.O_RDONLY | os.O_CLOEXEC),
                        flag))
            join_namespace(flag, path)
    except BaseException:
        _return_to(own)
        raise
    return own


def _return_to(own: list[tuple[int, int]]) -> None:
    """Back into our own namespaces (``_born_in``); the fds are closed."""
    for fd, flag in reversed(own):
        try:
            ns.setns(fd, flag)
        finally:
            os.close(fd)


def _release_birth_places(plan: LaunchPlan, opened: list[int], cwd: int,
                          own: list[tuple[int, int]]) -> None:
    """In the parent, after (or instead of) the clone: its namespaces and cwd back, its
    fds closed."""
    _return_to(own)
    if cwd >= 0:
        os.fchdir(cwd)
        os.close(cwd)
    for fd in opened:
        os.close(fd)
    plan.join_tasks = []


def _feed_maps(channel: Channel, pid: int, linux: dict[str, Any]) -> None:
    """Write the id maps of the user namespace ``pid`` was born in; tell it so."""
    from flatstack.runtime.idmap import write_maps

    write_maps(pid, linux.get("uidMappings") or [], linux.get("gidMappings") or [])
    channel.send("maps")


def _make_cgroup(opts: CreateOptions, config: dict[str, Any], container_id: str,
                 rootless: bool) -> Any:
    """The container's cgroup, made and limited (None when it runs without one)."""
    from flatstack.runtime.cgroups import manager_for

    linux = config.get("linux") or {}
    manager = manager_for(linux.get("cgroupsPath"), container_id, rootless=rootless,
                          systemd=opts.systemd_cgroup)
    if manager is None:
        return None
    resources = dict(linux.get("resources") or {})
    wanted = list(manager.paths)
    try:
        manager.create()
        if not rootless:
            resources["devices"] = default_device_rules(config)
        manager.apply(resources)
    except BaseException:
        manager.destroy()
        raise
    if rootless:
        return _delegated_only(manager, wanted)
    return manager


def _delegated_only(manager: Any, wanted: list[str]) -> Any:
    """Rootless: warn about the hierarchies this user may not write (create() left
    them out); None when none is left, so the container runs without a cgroup."""
    skipped = [key or "unified" for key in wanted if key not in manager.paths]
    if skipped:
        os.write(2, f"flatrun: warning: cgroups not delegated to uid {os.geteuid()}: "
                    f"skipped {', '.join(skipped)} (no resource limits, pause or stats "
                    "there)\n".encode())
    if manager.paths:
        return manager
    manager.destroy()
    return None


def write_pid_file(path: str, pid: int) -> None:
    """Write the pid atomically, as runc does."""
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.rename(tmp, path)
