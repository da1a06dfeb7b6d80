"""``flatrun exec``: run another process inside a running container."""

from __future__ import annotations

import os

from flatstack import _fastjson
from flatstack.errors import ConfigError, FlatstackError, InvalidState
from flatstack.kernel import ns
from flatstack.runtime.init import LaunchPlan, _fail, finish_process, preload
from flatstack.runtime.state import Container
from flatstack.runtime.sync import Channel

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class ExecOptions:
    """Flags of ``flatrun exec``."""

    def __init__(self, *, root: str, container_id: str, args: list[str],
                 process_file: str | None = None, tty: bool = False, detach: bool = False,
                 pid_file: str | None = None, console_socket: str | None = None,
                 env: list[str] | None = None, cwd: str | None = None,
                 user: str | None = None, caps: list[str] | None = None,
                 no_new_privs: bool = False, preserve_fds: int = 0,
                 additional_gids: list[int] | None = None) -> None:
        self.root = root
        self.container_id = container_id
        self.args = args
        self.process_file = process_file
        self.tty = tty
        self.detach = detach
        self.pid_file = pid_file
        self.console_socket = console_socket
        self.env = env or []
        self.cwd = cwd
        self.user = user
        self.caps = caps or []
        self.no_new_privs = no_new_privs
        self.preserve_fds = preserve_fds
        self.additional_gids = additional_gids or []


def build_process(opts: ExecOptions, base: dict[str, Any]) -> dict[str, Any]:
    """The process to exec: --process FILE, or the container's process + flags."""
    if opts.process_file:
        try:
            with open(opts.process_file, "rb") as f:
                process = _fastjson.loads(f.read())
        except OSError as err:
            raise FlatstackError(f"--process {opts.process_file}: "
                                 f"{os.strerror(err.errno or 0).lower()}") from None
        except ValueError as err:
            raise ConfigError("process", f"invalid JSON in {opts.process_file}: {err}"
                              ) from None
        if not isinstance(process, dict):
            raise ConfigError("process", "expected a JSON object")
        from flatstack.oci.config import validate_config

        validate_config({"ociVersion": "1.2.0", "root": {"path": "/"}, "process": process})
        if not process.get("args"):
            raise ConfigError("process.args", "required")
        return process
    if not opts.args:
        raise FlatstackError("exec: a command is required (or --process FILE)")
    process = {k: v for k, v in base.items()
               if k in ("env", "cwd", "user", "capabilities", "noNewPrivileges",
                        "apparmorProfile", "selinuxLabel", "rlimits", "oomScoreAdj")}
    process["args"] = list(opts.args)
    process["terminal"] = opts.tty
    if opts.env:
        env = list(process.get("env") or []) + list(opts.env)
        process["env"] = env
    if opts.cwd:
        process["cwd"] = opts.cwd
    if opts.user:
        uid, _, gid = opts.user.partition(":")
        try:
            process["user"] = {"uid": int(uid), "gid": int(gid or 0)}
        except ValueError:
            raise FlatstackError(f"--user {opts.user!r}: expected UID[:GID]") from None
    if opts.additional_gids:
        process.setdefault("user", {"uid": 0, "gid": 0})
        process["user"]["additionalGids"] = opts.additional_gids
    if opts.caps:
        caps = dict(process.get("capabilities") or {})
        for key in ("bounding", "effective", "permitted", "inheritable", "ambient"):
            merged = list(caps.get(key) or [])
            for cap in opts.caps:
                if cap not in merged:
                    merged.append(cap)
            if key != "ambient" or caps.get("ambient"):
                caps[key] = merged
        process["capabilities"] = caps
    if opts.no_new_privs:
        process["noNewPrivileges"] = True
    return process


def exec_process(opts: ExecOptions) -> int:
    """Start the process; wait for it unless detached.  Returns its exit status."""
    container = Container.load(opts.root, opts.container_id)
    status = container.status()
    if status == "stopped":
        raise InvalidState(f"cannot exec in a stopped container: {opts.container_id}")
    if status == "paused":
        raise InvalidState(f"cannot exec in a paused container: {opts.container_id}")
    process = build_process(opts, container.data.get("process") or {})
    if process.get("terminal") and not opts.console_socket:
        raise FlatstackError("--tty: a terminal needs --console-socket")
    init_pid = container.pid
    linux = dict(container.data.get("config_linux") or {})
    config = {"process": process, "linux": linux, "hooks": {}}
    parent_end, child_end = Channel.pair()
    plan = LaunchPlan(config, container_id=container.id,
                      bundle=container.data.get("bundle", ""), rootfs="/", channel=child_end)
    plan.is_exec = True
    plan.preserve_fds = opts.preserve_fds
    plan.joins = _namespaces_of(init_pid, container.data.get("namespaces") or [])
    plan.new_flags = 0
    plan.in_userns = any(flag == ns.CLONE_NEWUSER for flag, _ in plan.joins)
    if not any(flag == ns.CLONE_NEWNS for flag, _ in plan.joins):
        # The container shares the runtime's mount namespace: its root is a chroot, the
        # rootfs recorded at create (not /proc/PID/root, which the container can move).
        plan.exec_root = container.data.get("rootfs") or "/"
    if linux.get("seccomp"):
        from flatstack.runtime.create import seccomp_program

        plan.seccomp_bpf, plan.seccomp_flags = seccomp_program({"linux": linux}, opts.root)
    plan.hook_state = container.oci_state()
    annotations = container.data.get("annotations") or {}
    if "org.flatstack.landlock" in annotations:  # exec'd processes are sandboxed alike
        from flatstack.runtime.landlock import compile_policy

        plan.landlock = compile_policy({"annotations": annotations}, process)
    if process.get("terminal"):
        from flatstack.runtime.console import connect_console_socket

        plan.console_fd = connect_console_socket(opts.console_socket or "")
    cgroup = None
    if container.data.get("cgroup"):
        from flatstack.runtime.cgroups import manager_from_state

        cgroup = manager_from_state(container.data["cgroup"])
    from flatstack.kernel import proc

    if not opts.detach:
        proc.set_child_subreaper()
    preload(plan)
    first = os.fork()
    if first == 0:
        parent_end.close()
        _exec_stage_one(plan)
    child_end.close()
    plan.close_parent_copies()
    pid = 0
    try:
        if cgroup is not None:
            cgroup.add_pid(first)
        parent_end.send("cgroup")
        pid = int(parent_end.expect("pid"))
        while True:
            tag, payload = parent_end.recv()
            if tag == "seccomp-listener":
                from flatstack.runtime.create import relay_seccomp_listener

                state = {"ociVersion": container.data.get("ociVersion", "1.2.0"),
                         "id": container.id, "status": "running", "pid": container.pid,
                         "bundle": container.data.get("bundle", ""),
                         "annotations": container.data.get("annotations") or {}}
                relay_seccomp_listener({"linux": {"seccomp": plan.linux.get("seccomp")}},
                                       state, pid, payload)
                parent_end.send("seccomp-done")
            elif tag == "started":
                break
            elif tag == "error":
                raise FlatstackError(payload)
            else:
                raise FlatstackError(f"internal error: unexpected {tag!r} from exec process")
    except BaseException:
        for victim in (pid, first):
            if victim:
                try:
                    os.kill(victim, 9)
                except OSError:
                    pass
        raise
    finally:
        parent_end.close()
        try:
            os.waitpid(first, 0)
        except ChildProcessError:
            pass
    if opts.pid_file:
        from flatstack.runtime.create import write_pid_file

        write_pid_file(opts.pid_file, pid)
    if opts.detach:
        return 0
    from flatstack.runtime.verbs.run import wait_for

    return wait_for(pid)


def _namespaces_of(pid: int, namespaces: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """The init's namespaces to join, user first (skipping ones we already share)."""
    joins = []
    for entry in namespaces:
        flag, name = ns.NAMESPACES[entry["type"]]
        path = f"/proc/{pid}/ns/{name}"
        try:
            if os.stat(path).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                continue
        except OSError as err:
            raise FlatstackError(f"cannot join namespace {path}: "
                                 f"{os.strerror(err.errno or 0).lower()}") from None
        joins.append((flag, path))
    joins.sort(key=lambda item: item[0] != ns.CLONE_NEWUSER)
    return joins


def _exec_stage_one(plan: LaunchPlan) -> None:
    """Join the container's namespaces, fork into its PID namespace.  Never returns."""
    channel = plan.channel
    try:
        plan.drop_inherited_fds()
        channel.expect("cgroup")
        from flatstack.kernel import proc

        proc.set_dumpable(False)
        root_fd = -1
        if plan.exec_root:
            root_fd = os.open(plan.exec_root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        mount_fd = -1
        joins = plan.joins
        if plan.in_userns and os.geteuid() == 0:
            # A namespace the container joined by path may belong to the host's user
            # namespace (an engine's CNI netns): setns to it is refused from inside the
            # container's user namespace, so join what host root can first.
            joins = []
            for flag, path in plan.joins:
                if flag in (ns.CLONE_NEWUSER, ns.CLONE_NEWNS):
                    joins.append((flag, path))
                    continue
                try:
                    ns.join_path(path, flag)
                except FlatstackError:
                    joins.append((flag, path))
        for flag, path in joins:
            if flag == ns.CLONE_NEWNS:
                mount_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                continue
            ns.join_path(path, flag)
        if mount_fd >= 0:
            ns.setns(mount_fd, ns.CLONE_NEWNS)
            os.close(mount_fd)
        if root_fd >= 0:
            os.fchdir(root_fd)
            os.chroot(".")
            os.close(root_fd)
        if plan.in_userns:
            try:
                os.setresgid(0, 0, 0)
                os.setresuid(0, 0, 0)
            except OSError:
                pass
        # The parent must hear "pid" before the child's "started" (same channel):
        # the child waits for this end of the pipe to close.
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(ready_w)
            os.read(ready_r, 1)
            os.close(ready_r)
            _exec_stage_two(plan)
        channel.send("pid", pid)
        os._exit(0)
    except BaseException as err:
        _fail(channel, err)


def _exec_stage_two(plan: LaunchPlan) -> None:
    try:
        process = plan.process
        if process.get("terminal"):
            os.setsid()
            from flatstack.runtime.console import setup_console

            setup_console(plan.console_fd, process.get("consoleSize"), mount_console=False)
        finish_process(plan)
    except BaseException as err:
        _fail(plan.channel, err)
