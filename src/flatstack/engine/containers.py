"""Containers from images: the engine's one facade (used by the API daemon).

CONTRACT (session 3): the signatures and the shapes below are what the API/CLI
code calls; the bodies are being filled in. Keep the names; add, don't rename.

The engine prepares everything a container needs on the host (image layers,
overlay root filesystem, user-namespace id range, volumes, CNI network, the OCI
bundle) and then asks the node supervisor (a single-threaded process, see
``engine/supervisor.py``) to create and start it with the runtime library. The
daemon process itself never forks a container (it is threaded).

A container record (``ContainerInfo``, a plain dict, JSON-ready) has at least::

    id            64 hex chars;  name  (unique, generated "adjective_noun" if absent)
    image         the reference the user gave; image_id  config digest
    command       argv actually run (entrypoint + cmd after overrides)
    created, started_at, finished_at   RFC 3339 UTC strings ("" when not yet)
    state         "created" | "running" | "exited" (podman's words)
    exit_code     int or None;  oom_killed  bool;  pid  int (0 when not running)
    ports         ["0.0.0.0:8080->80/tcp", ...];  network  {"mode", "name", "ip", ...}
    mounts        [{"type": "bind"|"volume", "source", "destination", "ro"}]
    labels        {str: str};  log_path  str;  rm  bool (--rm)
    user, workdir, env   what was applied
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flatstack._atomic import write_json
from flatstack.engine import names as cnames
from flatstack.engine.client import ExitWatch
from flatstack.errors import (
    ConfigError,
    ContainerExists,
    ContainerNotFound,
    FlatstackError,
    InvalidState,
)

ContainerInfo = dict[str, Any]


@dataclass
class RunOptions:
    """What ``flatstack run`` / ``POST /containers`` asks for (docker/podman flags)."""

    image: str
    command: list[str] | None = None       # replaces the image's Cmd
    entrypoint: list[str] | None = None    # replaces the image's Entrypoint ([] clears it)
    name: str | None = None
    env: list[str] = field(default_factory=list)       # KEY=VALUE (KEY alone: from host)
    ports: list[str] = field(default_factory=list)     # [IP:]HOST:CTR[/tcp|udp]
    volumes: list[str] = field(default_factory=list)   # /host:/ctr[:ro] | name:/ctr[:ro]
    memory: int | None = None              # bytes
    cpus: float | None = None              # CPU quota in cores
    pids_limit: int | None = None
    network: str = "bridge"                # none | host | bridge | <network name>
    user: str | None = None                # uid[:gid] or name[:group] from the image
    workdir: str | None = None
    hostname: str | None = None
    tty: bool = False
    interactive: bool = False
    remove: bool = False                   # --rm: removed (with its rootfs) when it exits
    labels: dict[str, str] = field(default_factory=dict)
    console_socket: str | None = None      # with tty: where the pty master is sent


@dataclass
class ExecOptions:
    """``flatstack exec``: a process in a running container."""

    command: list[str]
    env: list[str] = field(default_factory=list)
    user: str | None = None
    workdir: str | None = None
    tty: bool = False
    detach: bool = False
    console_socket: str | None = None      # with tty: where the pty master is sent


RECORD = "container.json"
USERNS_SIZE = 65536
_TOMBSTONE_TTL = 300.0


class NameInUse(ContainerExists):
    """The container name is taken."""

    def __init__(self, name: str, owner: str) -> None:
        FlatstackError.__init__(self, f"the container name {name!r} is already in use by "
                                f"container {owner[:12]}; choose another name or remove it")
        self.container_id = name


class WaitTimeout(FlatstackError, TimeoutError):
    """The container did not exit within the time asked for."""


def rfc3339(ts: float | None) -> str:
    """RFC 3339 UTC with nanoseconds, "" for None."""
    if not ts:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_PUBLIC = ("id", "name", "image", "image_id", "image_digest", "command", "created",
           "ports", "network", "mounts", "labels", "log_path", "rm", "user", "workdir", "env",
           "hostname", "stop_signal", "tty", "resources", "exposed_ports", "userns")


class Engine:
    """All container operations; every path lives under ``state_dir``/``runtime_root``.

    Layout: ``<state>/containers/<id>/`` holds ``container.json`` (this record),
    ``config.json`` (the bundle is this directory), the overlay (``diff/``,
    ``merged/``, ``mapped/``), ``userdata/`` (resolv.conf, hosts, hostname) and
    ``ctr.log``; ``<state>/names/<name>`` is a symlink to the id (names are unique by
    ``symlink(2)``); ``<state>/supervisor/`` is the supervisor's own record directory;
    ``<state>/volumes/``, ``<state>/networks/`` and ``<state>/images/`` as their
    modules say. ``run_dir`` (default: the supervisor socket's directory) holds the
    network namespaces and the user-namespace range registry.
    """

    def __init__(self, state_dir: str, runtime_root: str, supervisor_socket: str, *,
                 run_dir: str | None = None, networks: Any = None,
                 userns_registry: str | None = None) -> None:
        from flatstack.engine.client import SupervisorClient

        self.state_dir = os.path.abspath(state_dir)
        self.runtime_root = os.path.abspath(runtime_root)
        self.supervisor_socket = os.path.abspath(supervisor_socket)
        self.run_dir = os.path.abspath(run_dir or os.path.dirname(self.supervisor_socket))
        self.containers_dir = os.path.join(self.state_dir, "containers")
        self.names_dir = os.path.join(self.state_dir, "names")
        self.tombstones_dir = os.path.join(self.state_dir, "removed")
        self.supervisor_state = os.path.join(self.state_dir, "supervisor")
        self.userns_registry = userns_registry or os.path.join(self.run_dir, "userns-ranges")
        self._networks = networks
        self._client = SupervisorClient(self.supervisor_socket)
        self._supervisor_ok = False
        self._samples: dict[str, dict[str, Any]] = {}

    # -- collaborators ------------------------------------------------------------
    @property
    def networks(self) -> Any:
        if self._networks is None:
            from flatstack.network.attach import Networks

            self._networks = Networks(os.path.join(self.state_dir, "networks"), self.run_dir)
        return self._networks

    @property
    def store(self) -> Any:
        from flatstack.image.store import Store

        return Store(self.state_dir)

    @property
    def volumes(self) -> Any:
        from flatstack.engine.volumes import Volumes

        return Volumes(self.state_dir)

    def ensure_supervisor(self) -> int:
        """The supervisor's pid; spawned (detached, own session) if it does not answer."""
        try:
            pid = int(self._client.call("ping")["pid"])
        except FlatstackError:
            from flatstack.engine.supervisor import spawn

            with self._flock("supervisor.lock"):
                try:
                    pid = int(self._client.call("ping")["pid"])
                except FlatstackError:
                    os.makedirs(self.run_dir, mode=0o755, exist_ok=True)
                    os.makedirs(os.path.dirname(self.supervisor_socket), mode=0o755,
                                exist_ok=True)
                    os.makedirs(self.supervisor_state, mode=0o700, exist_ok=True)
                    pid = spawn(self.supervisor_state, self.supervisor_socket,
                                self.runtime_root,
                                os.path.join(self.state_dir, "supervisor.log"))
        self._supervisor_ok = True
        return pid

    def _call(self, op: str, **args: Any) -> Any:
        if not self._supervisor_ok:
            self.ensure_supervisor()
        try:
            return self._client.call(op, **args)
        except FlatstackError as err:
            if not str(err).startswith("supervisor at "):
                raise
        self._supervisor_ok = False
        self.ensure_supervisor()
        return self._client.call(op, **args)

    @contextlib.contextmanager
    def _flock(self, name: str) -> Iterator[None]:
        os.makedirs(self.state_dir, mode=0o711, exist_ok=True)
        fd = os.open(os.path.join(self.state_dir, name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- records -------------------------------------------------------------------
    def _cdir(self, cid: str) -> str:
        return os.path.join(self.containers_dir, cid)

    def _read(self, cid: str) -> dict[str, Any] | None:
        try:
            with open(os.path.join(self._cdir(cid), RECORD)) as f:
                data = json.load(f)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _write(self, record: dict[str, Any]) -> None:
        path = os.path.join(self._cdir(record["id"]), RECORD)
        write_json(path, record, mode=0o600)

    def _ids(self) -> list[str]:
        try:
            return [n for n in os.listdir(self.containers_dir) if len(n) == 64]
        except FileNotFoundError:
            return []

    def _resolve(self, ref: str) -> str:
        """Container id for an id, a name or a unique id prefix."""
        if not isinstance(ref, str) or not ref or "/" in ref or ref.startswith("."):
            raise ContainerNotFound(str(ref))
        if len(ref) == 64 and os.path.isdir(self._cdir(ref)):
            return ref
        try:
            cid = os.readlink(os.path.join(self.names_dir, ref))
            if os.path.isdir(self._cdir(cid)):
                return cid
        except OSError:
            pass
        if all(c in "0123456789abcdef" for c in ref):
            found = [c for c in self._ids() if c.startswith(ref)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise FlatstackError(f"container id prefix {ref!r} is ambiguous: "
                                     f"{len(found)} containers match")
        raise ContainerNotFound(ref)

    def _record(self, ref: str) -> dict[str, Any]:
        cid = self._resolve(ref)
        record = self._read(cid)
        if record is None:
            raise ContainerNotFound(ref)
        return record

    def _reserve_name(self, name: str | None, cid: str) -> str:
        os.makedirs(self.names_dir, mode=0o700, exist_ok=True)
        for _ in range(20):
            chosen = cnames.validate(name) if name else cnames.generate(
                set(os.listdir(self.names_dir)))
            link = os.path.join(self.names_dir, chosen)
            try:
                os.symlink(cid, link)
                return chosen
            except FileExistsError:
                owner = os.readlink(link)
                if not os.path.isdir(self._cdir(owner)):  # stale: its container is gone
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(link)
                    continue
                if name:
                    raise NameInUse(name, owner) from None
        raise ConfigError("name", "could not reserve a container name")

    def _release_name(self, name: str, cid: str) -> None:
        link = os.path.join(self.names_dir, name)
        with contextlib.suppress(OSError):
            if os.readlink(link) == cid:
                os.unlink(link)

    def _info(self, record: dict[str, Any], sup: dict[str, Any] | None) -> ContainerInfo:
        """The public record: stored fields plus the state the supervisor observed."""
        info: ContainerInfo = {k: record.get(k) for k in _PUBLIC}
        info.update(state="created", exit_code=None, oom_killed=False, pid=0,
                    started_at=record.get("started_at", ""), finished_at="")
        if sup is None and record.get("state") == "running":
            info.update(state="exited", finished_at=record.get("started_at", ""))
        elif sup is not None:
            info["started_at"] = info["started_at"] or rfc3339(sup.get("created"))
            if sup.get("state") == "running":
                info.update(state="running", pid=int(sup.get("pid") or 0))
            else:
                ended = sup.get("exit") or {}
                info.update(state="exited", exit_code=ended.get("code"),
                            oom_killed=bool(ended.get("oom_killed")),
                            finished_at=rfc3339(ended.get("finished")))
        return info

    def _status(self, cid: str) -> dict[str, Any] | None:
        try:
            return self._call("status", id=cid)  # type: ignore[no-any-return]
        except FlatstackError as err:
            if "no such container" in str(err):
                return None
            raise

    # -- run -------------------------------------------------------------------------
    def _validate(self, opts: RunOptions) -> tuple[list[Any], list[Any]]:
        from flatstack.engine.spec import check_resources
        from flatstack.engine.volumes import parse_volume
        from flatstack.network.attach import parse_ports

        if not isinstance(opts.image, str) or not opts.image:
            raise ConfigError("image", "an image reference is required")
        if opts.name:
            cnames.validate(opts.name)
        ports = parse_ports(list(opts.ports))
        vols = [parse_volume(v, i) for i, v in enumerate(opts.volumes)]
        dests = [v.destination for v in vols]
        for i, dest in enumerate(dests):
            if dest in dests[:i]:
                raise ConfigError(f"volumes[{i}]", f"{dest} is a destination twice")
        check_resources(opts.memory, opts.cpus, opts.pids_limit)
        if opts.workdir is not None and not opts.workdir.startswith("/"):
            raise ConfigError("workdir", f"{opts.workdir!r} must be an absolute path")
        if opts.network in ("none", "host") and ports:
            raise ConfigError("ports", f"ports cannot be published with --network {opts.network}")
        if opts.network not in ("none", "host", "bridge", "default"):
            self.networks.store.get(opts.network)  # ConfigError when it is not defined
        if opts.hostname is not None:
            cnames.validate_hostname(opts.hostname)
        if opts.console_socket and not opts.tty:
            raise ConfigError("console_socket", "only with tty")
        if opts.tty and not opts.console_socket:
            raise ConfigError("console_socket", "required with tty: the terminal's master "
                              "is sent there")
        if opts.interactive and not opts.tty:
            raise ConfigError("interactive", "stdin is only attached through a terminal: "
                              "use it with tty (-it)")
        for key, value in opts.labels.items():
            if not isinstance(key, str) or not isinstance(value, str) or not key:
                raise ConfigError("labels", f"{key!r}: keys and values must be strings")
        return ports, vols

    def run(self, opts: RunOptions) -> ContainerInfo:
        """Create and start a container; on any failure nothing is left behind."""
        from flatstack.engine import spec as specs
        from flatstack.engine.overlay import mount_rootfs, unmount_rootfs
        from flatstack.engine.volume_seed import seed_volume
        from flatstack.engine.volumes import mount_entry
        from flatstack.image.unpack import unpack_image
        from flatstack.network.attach import write_hosts
        from flatstack.runtime import userns_pool
        from flatstack.runtime.state import process_start_time

        ports, vols = self._validate(opts)
        store = self.store
        image = store.image(opts.image)
        cfg = image.config.get("config") or {}
        argv = specs.command(cfg, opts.entrypoint, opts.command)
        env = specs.merge_env(list(cfg.get("Env") or []), list(opts.env))
        cid = secrets.token_hex(32)
        cdir = self._cdir(cid)
        undo: list[Callable[[], Any]] = []
        attached: dict[str, Any] = {}  # the network worker's result or error
        try:
            os.makedirs(self.containers_dir, mode=0o700, exist_ok=True)
            # The directory first: a name link whose container directory is missing
            # counts as stale, so a concurrent run could otherwise take the name too.
            os.mkdir(cdir, 0o700)
            undo.append(lambda: shutil.rmtree(cdir, ignore_errors=True))
            name = self._reserve_name(opts.name, cid)
            undo.append(lambda: self._release_name(name, cid))
            now = time.time()
            record: dict[str, Any] = {
                "id": cid, "name": name, "image": opts.image, "image_id": image.config_digest,
                "image_digest": image.digest, "image_name": image.name, "command": argv,
                "created": rfc3339(now), "created_ts": now, "started_at": "",
                "state": "created", "ports": [], "network": {"mode": opts.network},
                "mounts": [v.to_json() for v in vols], "labels": {
                    **(cfg.get("Labels") or {}), **opts.labels},
                "log_path": os.path.join(cdir, "ctr.log"), "rm": opts.remove, "env": env,
                "user": opts.user or cfg.get("User") or "", "workdir": "",
                "hostname": "", "stop_signal": cfg.get("StopSignal") or "SIGTERM",
                "tty": opts.tty, "exposed_ports": sorted(cfg.get("ExposedPorts") or {}),
                "resources": {"memory": opts.memory, "cpus": opts.cpus,
                              "pids_limit": opts.pids_limit},
                "creator": {"pid": os.getpid(), "start": process_start_time(os.getpid())},
                "volumes_created": []}
            self._write(record)
            mode = opts.network
            netns_ready = threading.Event()
            if mode not in ("host", "none"):
                # CNI ADD overlaps the rootfs work and the container's creation below:
                # the container is created in the namespace as soon as it exists, and
                # started once the plugins have configured it.
                worker = threading.Thread(target=self._attach_into,
                                          args=(attached, cid, mode, ports, netns_ready),
                                          daemon=True)
                undo.append(lambda: self.networks.detach(cid))
                undo.append(worker.join)
                worker.start()
            with store.writing():
                lowers = unpack_image(store, image.name)
                store.hold(cid, image, what=f"{name} ({cid[:12]})")
            undo.append(lambda: store.release(cid))
            owner = os.path.abspath(cdir)
            host_id = userns_pool.allocate(owner, owner, USERNS_SIZE,
                                           registry=self.userns_registry)
            undo.append(lambda: userns_pool.release(owner, registry=self.userns_registry))
            record["userns"] = {"host_id": host_id, "size": USERNS_SIZE}
            maps = [{"containerID": 0, "hostID": host_id, "size": USERNS_SIZE}]
            undo.append(lambda: unmount_rootfs(cdir))
            merged = mount_rootfs(list(reversed(lowers)), cdir, id_maps=(maps, maps))
            user = specs.resolve_user(merged, record["user"])
            workdir = opts.workdir or cfg.get("WorkingDir") or "/"
            if not workdir.startswith("/"):
                raise ConfigError("image WorkingDir", f"{workdir!r} is not absolute")
            mounts = []
            record["mounts"] = []
            for vol in vols:
                source = vol.source
                if vol.kind == "volume":
                    source, created = self.volumes.ensure(vol.source)
                    if created:
                        record["volumes_created"].append(vol.source)
                        undo.append(lambda n=vol.source: self.volumes.remove(n))
                        seed_volume(source, merged, vol.destination, host_id, USERNS_SIZE)
                mounts.append(mount_entry(vol, source))
                record["mounts"].append(vol.to_json(source))
            netns_path: str | None = None
            if mode == "none":
                # the runtime makes the namespace, inside the container's user namespace
                # (as podman does): nothing on the host to create, name or remove
                record["network"] = {"mode": "none", "name": "", "ip": ""}
                hostname = opts.hostname or cid[:12]
            elif mode != "host":
                netns_ready.wait()
                if "netns" not in attached:  # the attach failed before the namespace
                    worker.join()
                    raise attached["error"]
                netns_path = attached["netns"]
                specs.apply_network_sysctls(netns_path, specs.network_sysctls(maps))
                hostname = opts.hostname or cid[:12]
            else:
                record["network"] = {"mode": "host", "name": "", "ip": ""}
                hostname = opts.hostname or os.uname().nodename
            mounts[:0] = self._etc_files(cdir, mode, hostname, record["network"].get("ip", ""),
                                         host_id)
            record.update(hostname=hostname, workdir=workdir)
            env = [*env, f"HOSTNAME={hostname}"] if not any(
                e.startswith("HOSTNAME=") for e in env) else env
            record["env"] = env
            config = specs.build(args=argv, env=env, cwd=workdir, user=user,
                                 hostname=hostname, rootfs=merged, id_maps=maps,
                                 netns_path=netns_path, own_netns=mode == "none",
                                 mounts=mounts, tty=opts.tty,
                                 memory=opts.memory, cpus=opts.cpus,
                                 pids_limit=opts.pids_limit,
                                 annotations={"org.flatstack.engine.name": name})
            with open(os.path.join(cdir, "config.json"), "w") as f:
                f.write(json.dumps(config))
            self._write(record)
            start: dict[str, Any] = {"id": cid, "bundle": cdir, "log": record["log_path"]}
            if opts.console_socket:
                start["console_socket"] = opts.console_socket
            undo.append(lambda: self._forget(cid, True))
            if netns_path is None:
                status = self._call("start", **start)
            else:  # created while the plugins work; started once they are done
                self._call("start", **start, hold=True)
                worker.join()
                if "error" in attached:
                    raise attached["error"]
                net = attached["info"]
                record["network"] = {"mode": net.mode, "name": net.network, "ip": net.ip,
                                     "prefix_length": net.prefix_length,
                                     "gateway": net.gateway, "mac": net.mac,
                                     "netns": net.netns_path}
                record["ports"] = [_port_text(p) for p in net.ports]
                # hosts again, with the address: rewritten in place (same inode), so the
                # created container's bind mount shows it
                write_hosts(os.path.join(cdir, "userdata"), hostname, net.ip)
                self._write(record)
                status = self._call("release", id=cid)
            record.update(state="running", started_at=rfc3339(status.get("created")))
            self._write(record)
        except BaseException as err:
            for step in reversed(undo):
                try:
                    step()
                except Exception:  # report the run error, not the cleanup's
                    pass
            failed = attached.get("error")
            if failed is not None and failed is not err:
                # the network failed first and its clean-up took the namespace away
                # from under the rest: the plugin's error is the one to report
                raise failed from None
            raise
        return self._info(record, status)

    def _attach_into(self, out: dict[str, Any], cid: str, mode: str, ports: list[Any],
                     netns_ready: threading.Event) -> None:
        def ready(path: str) -> None:
            out["netns"] = path
            netns_ready.set()

        try:
            out["info"] = self.networks.attach(cid, mode, ports, netns_ready=ready)
        except BaseException as err:  # re-raised by run() in its own thread
            out["error"] = err
        finally:
            netns_ready.set()

    def _etc_files(self, cdir: str, mode: str, hostname: str, ip: str,
                   host_id: int) -> list[dict[str, Any]]:
        """resolv.conf, hosts and hostname, owned by the container's root, bind-mounted."""
        from flatstack.network.attach import write_hosts, write_resolv_conf

        userdata = os.path.join(cdir, "userdata")
        os.makedirs(userdata, mode=0o711, exist_ok=True)
        paths = [write_resolv_conf(userdata, "host" if mode == "host" else "bridge"),
                 write_hosts(userdata, hostname, ip)]
        with open(os.path.join(userdata, "hostname"), "w") as f:
            f.write(hostname + "\n")
        paths.append(os.path.join(userdata, "hostname"))
        mounts = []
        for path in paths:
            os.chown(path, host_id, host_id)
            os.chmod(path, 0o644)
            mounts.append({"destination": "/etc/" + os.path.basename(path), "type": "bind",
                           "source": path, "options": ["bind", "rw", "nosuid", "nodev",
                                                       "noexec"]})
        return mounts

    # -- queries ---------------------------------------------------------------------
    def list(self, all: bool = False) -> list[ContainerInfo]:
        """Running containers (all: also exited ones), newest first."""
        records = [r for r in (self._read(c) for c in self._ids()) if r is not None]
        if not records:
            return []
        sup = {s["id"]: s for s in self._call("list")}
        out = []
        for record in sorted(records, key=lambda r: r.get("created_ts", 0), reverse=True):
            info = self._info(record, sup.get(record["id"]))
            if all or info["state"] == "running":
                out.append(info)
        return out

    def inspect(self, ref: str) -> ContainerInfo:
        """One container by id, unique id prefix or name (FlatstackError if unknown)."""
        record = self._record(ref)
        return self._info(record, self._status(record["id"]))

    # -- signals ---------------------------------------------------------------------
    def stop(self, ref: str, timeout: float = 10.0) -> ContainerInfo:
        """StopSignal (image config, default SIGTERM), then SIGKILL after ``timeout``."""
        from flatstack.runtime.signals import parse_signal

        record = self._record(ref)
        info = self._info(record, self._status(record["id"]))
        if info["state"] != "running":
            return info
        try:
            number = parse_signal(str(record.get("stop_signal") or "SIGTERM"))
        except FlatstackError:
            number = 15
        self._signal(record["id"], number)
        try:
            return self.wait(record["id"], timeout=max(0.0, timeout))
        except TimeoutError:
            pass
        self._signal(record["id"], 9)
        return self.wait(record["id"], timeout=30)

    def _signal(self, cid: str, number: int) -> None:
        try:
            self._call("kill", id=cid, signal=number)
        except FlatstackError as err:
            if "not running" not in str(err):
                raise

    def kill(self, ref: str, signal: str | int = "KILL") -> None:
        """Send a signal (name or number) to the container's init."""
        from flatstack.runtime.signals import parse_signal

        try:
            number = parse_signal(str(signal))
        except FlatstackError as err:
            raise ConfigError("signal", str(err)) from None
        record = self._record(ref)
        if self._info(record, self._status(record["id"]))["state"] != "running":
            raise InvalidState(f"container {record['name']} is not running")
        self._call("kill", id=record["id"], signal=number)

    def wait(self, ref: str, timeout: float | None = None, *,
             remove: bool = True) -> ContainerInfo:
        """Block until the container has exited; returns its record.

        A ``--rm`` container is removed here once it has exited (``remove``); its
        final record stays readable for a while (a tombstone), so a waiter that
        lost the race to the reconciler still gets the exit code. Raises
        :class:`WaitTimeout` (a FlatstackError and a TimeoutError) after ``timeout``."""
        try:
            record = self._record(ref)
        except ContainerNotFound:
            gone = self._tombstone(ref)
            if gone is None:
                raise
            return gone
        cid = record["id"]
        with ExitWatch(self.supervisor_socket, cid) as watch:
            return self._wait_loop(ref, record, timeout, remove, watch)

    def _wait_loop(self, ref: str, record: dict[str, Any], timeout: float | None,
                   remove: bool, watch: ExitWatch) -> ContainerInfo:
        cid = record["id"]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                sup = self._status(cid)
                if sup is None and record.get("state") != "created":
                    # the supervisor forgot it: being removed (wait for the remover,
                    # then the tombstone answers) or lost (exit code unknown)
                    self._await_remover(cid)
                info = self._info(record, sup)
            except FlatstackError:
                gone = self._tombstone(cid)
                if gone is None or os.path.isdir(self._cdir(cid)):
                    raise
                return gone
            if not os.path.isdir(self._cdir(cid)):
                gone = self._tombstone(cid)
                if gone is not None:
                    return gone
                raise ContainerNotFound(ref)
            if info["state"] == "exited":
                if remove and record.get("rm"):
                    self._remove_record(record, info, force=False)
                return info
            left = 1.0 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(f"container {record['name']} did not exit within "
                                  f"{timeout} s")
            watch.wait(min(left, 1.0))  # the exit notification, or re-check each second

    # -- removal ---------------------------------------------------------------------
    def remove(self, ref: str, force: bool = False) -> None:
        """Remove an exited container (force: kill it first): rootfs, network, records."""
        record = self._record(ref)
        info = self._info(record, self._status(record["id"]))
        if info["state"] == "running" and not force:
            raise InvalidState(f"container {record['name']} is running; stop it first or "
                               "remove it with force")
        self._remove_record(record, info, force=True)

    def _remove_record(self, record: dict[str, Any], info: ContainerInfo | None,
                       force: bool) -> None:
        """Tear down everything a container owns; the record goes last (only when every
        step worked, so a failed removal can be retried). Volumes stay."""
        from flatstack.engine.overlay import unmount_rootfs
        from flatstack.runtime import userns_pool

        cid = record["id"]
        cdir = self._cdir(cid)
        try:  # one remover per container: flock on its directory (gone: already done)
            dfd = os.open(cdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(dfd, fcntl.LOCK_EX)
            if not os.path.isdir(cdir):
                return
            errors: list[str] = []

            def attempt(what: str, step: Callable[[], Any]) -> None:
                try:
                    step()
                except (FlatstackError, OSError) as err:
                    errors.append(f"{what}: {err}")

            # The supervisor's delete (cgroup, runtime state), the network's (CNI DEL)
            # and the rootfs teardown share nothing once the container has exited: do
            # them side by side (they wait on the kernel and plugins, not on Python). A
            # running one dies first.
            steps = [("network", lambda: self._detach(cid)),
                     ("rootfs", lambda: unmount_rootfs(cdir))]
            if info is not None and info.get("state") == "exited":
                steps.insert(0, ("supervisor", lambda: self._forget(cid, force)))
            else:
                attempt("supervisor", lambda: self._forget(cid, force))
            beside = [threading.Thread(target=attempt, args=step) for step in steps[:-1]]
            for thread in beside:
                thread.start()
            attempt(*steps[-1])
            for thread in beside:
                thread.join()
            attempt("userns", lambda: userns_pool.release(os.path.abspath(cdir),
                                                          registry=self.userns_registry))
            attempt("image hold", lambda: self.store.release(cid))
            if errors:
                raise FlatstackError(f"removing container {record.get('name')}: "
                                     + "; ".join(errors))
            if info is not None:
                self._write_tombstone(info)
            self._release_name(record.get("name", ""), cid)
            shutil.rmtree(cdir, ignore_errors=True)
        finally:
            os.close(dfd)

    def _await_remover(self, cid: str) -> None:
        """Return once nobody is removing the container (its directory's flock)."""
        try:
            dfd = os.open(self._cdir(cid), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(dfd, fcntl.LOCK_EX)
        finally:
            os.close(dfd)

    def _forget(self, cid: str, force: bool) -> None:
        try:
            self._call("remove", id=cid, force=force)
        except FlatstackError as err:
            if "no such container" not in str(err):
                raise

    def _detach(self, cid: str) -> None:
        if self.networks.info(cid) is not None:
            self.networks.detach(cid)

    def _write_tombstone(self, info: ContainerInfo) -> None:
        os.makedirs(self.tombstones_dir, mode=0o700, exist_ok=True)
        path = os.path.join(self.tombstones_dir, f"{info['id']}.json")
        write_json(path, {**info, "removed": True}, mode=0o600)

    def _tombstone(self, ref: str) -> ContainerInfo | None:
        try:
            names = os.listdir(self.tombstones_dir)
        except FileNotFoundError:
            return None
        hexref = all(c in "0123456789abcdef" for c in ref)
        for entry in sorted(names, key=lambda n: not (hexref and n.startswith(ref))):
            if not entry.endswith(".json"):
                continue
            try:
                with open(os.path.join(self.tombstones_dir, entry)) as f:
                    info = json.load(f)
            except (OSError, ValueError):
                continue
            if (hexref and entry.startswith(ref)) or info.get("name") == ref:
                return info  # type: ignore[no-any-return]
        return None

    # -- reconciliation ---------------------------------------------------------------
    def reconcile(self) -> dict[str, list[str]]:
        """Converge on-disk state with what the supervisor observed; run at start-up and
        periodically. Removes exited ``--rm`` containers (also those that exited while
        the daemon was down), undoes half-made containers whose creator died, detaches
        network attachments (CNI DEL) and releases image holds and names of containers
        that no longer exist. Returns what it did."""
        from flatstack.runtime.state import process_start_time

        done: dict[str, list[str]] = {"removed": [], "abandoned": [], "detached": [],
                                      "released": []}
        ids = set(self._ids())
        records = [r for r in (self._read(c) for c in sorted(ids)) if r is not None]
        # the snapshot is taken after the records: a container a concurrent run() has
        # started and recorded as running is in it (never mistaken for a lost one)
        sup = {s["id"]: s for s in self._call("list")} if records else {}
        for record in records:
            cid = record["id"]
            status = sup.get(cid)
            if status is None and record.get("state") != "created":
                status = self._status(cid)  # not in the snapshot: ask once more
            info = self._info(record, status)
            if info["state"] == "exited" and record.get("rm"):
                with contextlib.suppress(FlatstackError):
                    self._remove_record(record, info, force=False)
                    done["removed"].append(cid)
            elif info["state"] == "created" and status is None:
                creator = record.get("creator") or {}
                pid, start = int(creator.get("pid") or 0), creator.get("start")
                if pid <= 0 or start is None or process_start_time(pid) != start:
                    with contextlib.suppress(FlatstackError):
                        self._remove_record(record, None, force=True)
                        for vol in record.get("volumes_created") or []:
                            with contextlib.suppress(FlatstackError, OSError):
                                self.volumes.remove(vol)
                        done["abandoned"].append(cid)
        # Each listing below is read BEFORE the container ids it is checked against: a
        # concurrent run() makes its directory before its netns, hold and name, so what
        # a listing shows of a run in progress is always among the ids read after it.
        attached = list(self.networks.attached())
        ids = set(self._ids())
        for cid in attached:
            if cid not in ids:
                with contextlib.suppress(FlatstackError):
                    self.networks.detach(cid)
                    done["detached"].append(cid)
        store = self.store
        holds = list(store.holds())
        ids = set(self._ids())
        for hold in holds:
            owner = str(hold.get("owner", ""))
            if owner not in ids:
                store.release(owner)
                done["released"].append(owner)
        self._prune_names_and_tombstones()
        return done

    def _prune_names_and_tombstones(self) -> None:
        links: list[tuple[str, str]] = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.listdir(self.names_dir):
                link = os.path.join(self.names_dir, entry)
                with contextlib.suppress(OSError):
                    links.append((link, os.readlink(link)))
        ids = set(self._ids())  # after the links (see reconcile)
        for link, cid in links:
            if cid not in ids:
                with contextlib.suppress(OSError):
                    if os.readlink(link) == cid:  # not taken by a new container meanwhile
                        os.unlink(link)
        cutoff = time.time() - _TOMBSTONE_TTL
        with contextlib.suppress(FileNotFoundError):
            for entry in os.listdir(self.tombstones_dir):
                path = os.path.join(self.tombstones_dir, entry)
                with contextlib.suppress(OSError):
                    if os.stat(path).st_mtime < cutoff:
                        os.unlink(path)

    def reconcile_forever(self, stop: Any, interval: float = 1.0) -> None:
        """Call :meth:`reconcile` every ``interval`` seconds until ``stop`` (a
        ``threading.Event``) is set; errors are logged to stderr and retried."""
        import sys

        while not stop.wait(interval):
            try:
                self.reconcile()
            except Exception as err:  # a loop that must keep going
                print(f"flatstack: reconcile: {err}", file=sys.stderr)

    # -- logs, exec, stats ---------------------------------------------------------
    def logs(self, ref: str, tail: int | None = None, follow: bool = False,
             timestamps: bool = False) -> Iterator[tuple[str, bytes]]:
        """(stream, line) pairs, stream "stdout" or "stderr"; follow until it exits."""
        from flatstack.engine.logs import read_log

        record = self._record(ref)
        cid = record["id"]
        if not follow:
            return read_log(record["log_path"], tail, timestamps=timestamps)

        def following() -> Iterator[tuple[str, bytes]]:
            with ExitWatch(self.supervisor_socket, cid) as watch:  # ends the follow at once
                def running() -> bool:
                    if not watch.broken:  # the notification says it: no request per read
                        return not watch.exited
                    try:
                        return self._info(record, self._status(cid))["state"] == "running"
                    except FlatstackError:
                        return False
                yield from read_log(record["log_path"], tail, True, timestamps,
                                    is_running=running, pause=watch.wait)
        return following()

    def exec(self, ref: str, opts: ExecOptions) -> tuple[int, bytes, bytes]:
        """Run a process in the container; (exit code, stdout, stderr) when not detached
        ((0, b"", b"") when detached). The supervisor forks it with the runtime library."""
        from flatstack.engine import spec as specs
        from flatstack.engine.client import SupervisorClient
        from flatstack.engine.supervisor import decode_exec

        record = self._record(ref)
        cid = record["id"]
        if self._info(record, self._status(cid))["state"] != "running":
            raise InvalidState(f"container {record['name']} is not running")
        if not opts.command or not all(isinstance(a, str) for a in opts.command):
            raise ConfigError("command", "a non-empty list of strings is required")
        for i, item in enumerate(opts.env):
            if not isinstance(item, str) or "=" not in item or item.startswith("="):
                raise ConfigError(f"env[{i}]", f"{item!r} is not KEY=VALUE")
        if opts.workdir is not None and not opts.workdir.startswith("/"):
            raise ConfigError("workdir", f"{opts.workdir!r} must be an absolute path")
        if opts.tty and not opts.console_socket:
            raise ConfigError("console_socket", "required with tty")
        user = None
        if opts.user:
            found = specs.resolve_user(os.path.join(self._cdir(cid), "merged"), opts.user)
            user = f"{found.uid}:{found.gid}"
        result = SupervisorClient(self.supervisor_socket, timeout=None).call(
            "exec", id=cid, args=list(opts.command), env=list(opts.env), cwd=opts.workdir,
            user=user, tty=opts.tty, console_socket=opts.console_socket, detach=opts.detach)
        if opts.detach:
            return 0, b"", b""
        if opts.tty:
            return int((result or {}).get("exit_code") or 0), b"", b""
        return decode_exec(result)

    def stats(self, ref: str) -> dict[str, Any]:
        """cgroup counters: cpu_ns, cpu_percent, memory_bytes, memory_limit, pids,
        net rx/tx bytes, block read/write bytes (``engine/stats.py``). cpu_percent is
        over the time since this engine's previous sample of the container (within a
        minute), else over a fresh 100 ms interval, as ``docker stats`` does."""
        from flatstack.engine import stats as cstats

        record = self._record(ref)
        cid = record["id"]
        if self._info(record, self._status(cid))["state"] != "running":
            raise InvalidState(f"container {record['name']} is not running")
        netns = (record.get("network") or {}).get("netns") or None
        previous = self._samples.get(cid)
        if previous is None or time.monotonic_ns() - previous["time_ns"] > 60e9:
            previous = cstats.collect(self.runtime_root, cid, netns)
            time.sleep(0.1)
        sample = cstats.collect(self.runtime_root, cid, netns)
        self._samples[cid] = sample
        return {**sample, "name": record["name"],
                "cpu_percent": cstats.cpu_percent(previous, sample)}


def _port_text(p: Any) -> str:
    return f"{p.host_ip or '0.0.0.0'}:{p.host_port}->{p.container_port}/{p.protocol}"
