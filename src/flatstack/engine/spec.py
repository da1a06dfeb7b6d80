"""config.json for a container from an image: the hardened default + image config + flags.

Order of precedence, as docker and podman: the command-line options, then the
image config (Entrypoint, Cmd, Env, WorkingDir, User), then flatrun's hardened
default spec (``oci/defaults.py``). User and group names are looked up in the
image's ``/etc/passwd`` and ``/etc/group``, read through the container's root
filesystem with ``openat2(RESOLVE_IN_ROOT)`` so a symlink in the image cannot
make the engine read a host file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from flatstack.errors import ConfigError, FlatstackError, KernelError
from flatstack.kernel import mount as km

_ENV_KEY = re.compile(r"^[^=\0]+$")
MIN_MEMORY = 6 << 20  # podman's and docker's minimum
CPU_PERIOD = 100_000
_MAX_DB = 1 << 20


@dataclass
class User:
    """A resolved process user."""

    uid: int
    gid: int
    additional_gids: list[int] = field(default_factory=list)
    home: str = "/"

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {"uid": self.uid, "gid": self.gid}
        if self.additional_gids:
            out["additionalGids"] = list(self.additional_gids)
        return out


def command(image_cfg: dict[str, Any], entrypoint: list[str] | None,
            cmd: list[str] | None) -> list[str]:
    """Entrypoint + Cmd after overrides (a new entrypoint drops the image's Cmd)."""
    ep = list(entrypoint) if entrypoint is not None else list(image_cfg.get("Entrypoint") or [])
    if cmd:
        args = list(cmd)
    elif entrypoint is not None:
        args = []
    else:
        args = list(image_cfg.get("Cmd") or [])
    argv = ep + args
    if not argv:
        raise ConfigError("command", "the image has no Entrypoint or Cmd; give a command")
    for i, word in enumerate(argv):
        if not isinstance(word, str) or "\0" in word:
            raise ConfigError(f"command[{i}]", "must be a string without NUL bytes")
    return argv


def merge_env(image_env: list[str], extra: list[str], *,
              host_env: dict[str, str] | None = None) -> list[str]:
    """Image Env then ``-e`` values. ``KEY`` alone takes its value from ``host_env`` (the
    caller's environment, which the CLI passes) or is dropped: never from the daemon's
    own environment, which is not the user's and may hold secrets."""
    host_env = {} if host_env is None else host_env
    merged: dict[str, str] = {}
    for i, item in enumerate([*image_env, *extra]):
        where = f"env[{i - len(image_env)}]" if i >= len(image_env) else "image Env"
        if not isinstance(item, str):
            raise ConfigError(where, f"{item!r} is not a string")
        key, eq, value = item.partition("=")
        if not _ENV_KEY.match(key) or "\0" in value:
            raise ConfigError(where, f"{item!r} is not KEY=VALUE")
        if not eq:
            if key not in host_env:
                continue
            value = host_env[key]
        merged[key] = value
    if "PATH" not in merged:
        merged = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                  **merged}
    return [f"{k}={v}" for k, v in merged.items()]


def _read_in_root(root: str, path: str) -> str:
    """A small text file of the container's root filesystem, or "" when absent."""
    dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = km.openat2(dfd, path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK,
                        resolve=km.RESOLVE_IN_ROOT | km.RESOLVE_NO_MAGICLINKS)
    except KernelError as err:
        if err.errno in (2, 20, 40):  # ENOENT, ENOTDIR, ELOOP: no usable file
            return ""
        raise ConfigError("user", f"reading {path} of the image: {err}") from None
    finally:
        os.close(dfd)
    try:
        import stat

        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        return os.read(fd, _MAX_DB).decode("utf-8", "replace")
    finally:
        os.close(fd)


def _entries(text: str, fields: int) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= fields and not line.startswith("#"):
            rows.append(parts)
    return rows


def resolve_user(root: str, spec: str | None) -> User:
    """``uid[:gid]`` or ``name[:group]`` against the image's passwd and group files."""
    spec = (spec or "").strip()
    name, _, group = spec.partition(":")
    if not name:
        if group:
            raise ConfigError("user", f"{spec!r}: a group needs a user")
        name = "0"
    passwd = _entries(_read_in_root(root, "/etc/passwd"), 7)
    user: list[str] | None = None
    if name.isdigit():
        uid = int(name)
        user = next((p for p in passwd if p[2] == name), None)
        gid = int(user[3]) if user and user[3].isdigit() else 0
    else:
        user = next((p for p in passwd if p[0] == name), None)
        if user is None or not user[2].isdigit() or not user[3].isdigit():
            raise ConfigError("user", f"unable to find user {name}: no matching entry in the "
                              "image's /etc/passwd")
        uid, gid = int(user[2]), int(user[3])
    groups = _entries(_read_in_root(root, "/etc/group"), 4) if (group or user) else []
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            found = next((g for g in groups if g[0] == group), None)
            if found is None or not found[2].isdigit():
                raise ConfigError("user", f"unable to find group {group}: no matching entry "
                                  "in the image's /etc/group")
            gid = int(found[2])
    for value in (uid, gid):
        if value >= 65536:
            raise ConfigError("user", f"{spec!r}: id {value} is outside the container's "
                              "65536 ids")
    extra: list[int] = []
    if user is not None and not group:
        for g in groups:
            members = g[3].split(",") if g[3] else []
            if user[0] in members and g[2].isdigit() and int(g[2]) != gid:
                extra.append(int(g[2]))
    return User(uid, gid, extra, user[5] if user and user[5] else "/")


def check_resources(memory: int | None, cpus: float | None, pids_limit: int | None) -> None:
    """ConfigError for a resource flag out of range."""
    if memory is not None and (not isinstance(memory, int) or memory < MIN_MEMORY):
        raise ConfigError("memory", f"{memory!r}: the minimum is 6 MiB ({MIN_MEMORY} bytes)")
    if cpus is not None:
        count = os.cpu_count() or 1
        if not isinstance(cpus, int | float) or not 0.01 <= cpus <= count:
            raise ConfigError("cpus", f"{cpus!r}: the range is 0.01 to {count} (CPUs here)")
    if pids_limit is not None and (not isinstance(pids_limit, int) or pids_limit == 0
                                   or pids_limit < -1):
        raise ConfigError("pids_limit", f"{pids_limit!r}: a positive number, or -1 for none")


def resources(memory: int | None, cpus: float | None, pids_limit: int | None,
              base: dict[str, Any]) -> dict[str, Any]:
    """linux.resources: the default fences with the flags applied."""
    out = dict(base)
    if memory is not None:
        out["memory"] = {"limit": memory, "swap": memory}
    if cpus is not None:
        out["cpu"] = {"quota": max(1000, round(cpus * CPU_PERIOD)), "period": CPU_PERIOD}
    if pids_limit is not None:
        if pids_limit == -1:
            out.pop("pids", None)
        else:
            out["pids"] = {"limit": pids_limit}
    return out


def network_sysctls(id_maps: list[dict[str, int]], *, inside: bool = False
                    ) -> dict[str, str]:
    """What docker and podman set in a container's own network namespace: any port may be
    bound without CAP_NET_BIND_SERVICE, and every group of the container may open ICMP
    echo sockets (ping without CAP_NET_RAW). The group range in the writer's ids: the
    container's host gids when the host writes it, ``0 <size-1>`` (``inside``) when the
    container's init does (the kernel maps them through its user namespace)."""
    key = "containerID" if inside else "hostID"
    ranges = [(m[key], m[key] + m["size"] - 1) for m in id_maps if m.get("size")]
    low = min((r[0] for r in ranges), default=0)
    high = max((r[1] for r in ranges), default=0)
    return {"net.ipv4.ip_unprivileged_port_start": "0",
            "net.ipv4.ping_group_range": f"{low} {high}"}


def apply_network_sysctls(netns_path: str, sysctls: dict[str, str]) -> None:
    """Write ``sysctls`` into the network namespace at ``netns_path`` from the host.

    Not through ``linux.sysctl``: the engine's namespaces belong to the host's user
    namespace, and the container's root (unprivileged on the host) may not write their
    sysctls (podman avoids this by letting the runtime create the namespace inside the
    container's user namespace). A short-lived thread joins the namespace, so nothing
    has to be restored."""
    import threading

    from flatstack.kernel import ns as kns

    failure: list[BaseException] = []

    def write() -> None:
        try:
            kns.join_path(netns_path, kns.CLONE_NEWNET)
            for key, value in sysctls.items():
                with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                    f.write(value)
        except (OSError, FlatstackError) as err:
            failure.append(err)

    worker = threading.Thread(target=write, name="netns-sysctl")
    worker.start()
    worker.join()
    if failure:
        raise FlatstackError(f"network sysctls in {netns_path}: {failure[0]}")


def build(*, args: list[str], env: list[str], cwd: str, user: User, hostname: str,
          rootfs: str, id_maps: list[dict[str, int]], netns_path: str | None,
          mounts: list[dict[str, Any]], tty: bool, own_netns: bool = False,
          memory: int | None = None,
          cpus: float | None = None, pids_limit: int | None = None,
          annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """The container's config.json: the network namespace at ``netns_path``, a new one
    made by the runtime in the container's user namespace (``own_netns``, sysctls set
    by the init), else the host's."""
    from flatstack.oci.defaults import default_spec

    spec = default_spec(args=args)
    process = spec["process"]
    process.update(terminal=tty, env=env, cwd=cwd, user=user.spec())
    if tty and not any(e.startswith("TERM=") for e in env):
        process["env"] = [*env, "TERM=xterm"]
    spec["root"] = {"path": rootfs, "readonly": False}
    spec["hostname"] = hostname
    spec["mounts"] = [*spec["mounts"], *mounts]
    linux = spec["linux"]
    namespaces = [n for n in linux["namespaces"] if n["type"] != "network"]
    if netns_path is not None:
        namespaces.append({"type": "network", "path": netns_path})
    elif own_netns:
        namespaces.append({"type": "network"})
        linux["sysctl"] = {**(linux.get("sysctl") or {}),
                           **network_sysctls(id_maps, inside=True)}
    namespaces.append({"type": "user"})
    linux["namespaces"] = namespaces
    linux["uidMappings"] = [dict(m) for m in id_maps]
    linux["gidMappings"] = [dict(m) for m in id_maps]
    linux["resources"] = resources(memory, cpus, pids_limit, linux.get("resources") or {})
    if annotations:
        spec["annotations"] = dict(annotations)
    return spec
