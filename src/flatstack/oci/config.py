"""Load and validate a bundle's config.json (runtime-spec 1.2, Linux).

Errors name the field by its JSON path (``mounts[2].destination``).  Unknown
keys are ignored, as the spec allows extensions.  Standard library only: this
runs on every ``flatrun create``.
"""

from __future__ import annotations

import os

from flatstack import _fastjson
from flatstack.errors import ConfigError
from flatstack.kernel import mount as m
from flatstack.kernel.caps import CAPABILITIES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["CAPABILITIES", "MOUNT_FLAGS", "PROPAGATION_FLAGS", "RLIMITS", "load_config",
           "validate_config"]

#: option -> (clears the flag?, MS_* flag)
MOUNT_FLAGS: dict[str, tuple[bool, int]] = {
    "ro": (False, m.MS_RDONLY), "rw": (True, m.MS_RDONLY),
    "nosuid": (False, m.MS_NOSUID), "suid": (True, m.MS_NOSUID),
    "nodev": (False, m.MS_NODEV), "dev": (True, m.MS_NODEV),
    "noexec": (False, m.MS_NOEXEC), "exec": (True, m.MS_NOEXEC),
    "sync": (False, m.MS_SYNCHRONOUS), "async": (True, m.MS_SYNCHRONOUS),
    "dirsync": (False, m.MS_DIRSYNC), "remount": (False, m.MS_REMOUNT),
    "mand": (False, m.MS_MANDLOCK), "nomand": (True, m.MS_MANDLOCK),
    "atime": (True, m.MS_NOATIME), "noatime": (False, m.MS_NOATIME),
    "diratime": (True, m.MS_NODIRATIME), "nodiratime": (False, m.MS_NODIRATIME),
    "bind": (False, m.MS_BIND), "rbind": (False, m.MS_BIND | m.MS_REC),
    "relatime": (False, m.MS_RELATIME), "norelatime": (True, m.MS_RELATIME),
    "strictatime": (False, m.MS_STRICTATIME), "nostrictatime": (True, m.MS_STRICTATIME),
    "lazytime": (False, m.MS_LAZYTIME), "nolazytime": (True, m.MS_LAZYTIME),
    "nosymfollow": (False, m.MS_NOSYMFOLLOW), "symfollow": (True, m.MS_NOSYMFOLLOW),
    "silent": (False, m.MS_SILENT), "loud": (True, m.MS_SILENT),
}
PROPAGATION_FLAGS: dict[str, int] = {
    "private": m.MS_PRIVATE, "rprivate": m.MS_PRIVATE | m.MS_REC,
    "shared": m.MS_SHARED, "rshared": m.MS_SHARED | m.MS_REC,
    "slave": m.MS_SLAVE, "rslave": m.MS_SLAVE | m.MS_REC,
    "unbindable": m.MS_UNBINDABLE, "runbindable": m.MS_UNBINDABLE | m.MS_REC,
}
RLIMITS: dict[str, int] = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3,
    "RLIMIT_CORE": 4, "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7,
    "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9, "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11,
    "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13, "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}
NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
              "poststop")
CAP_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")

_TYPE_NAMES = {str: "string", int: "integer", bool: "boolean", list: "array", dict: "object",
               float: "number"}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _expect(value: Any, kind: type, field: str) -> Any:
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        raise ConfigError(field, f"expected {_TYPE_NAMES[kind]}, got {_kind(value)}")
    return value


def _opt(obj: dict[str, Any], key: str, kind: type, field: str) -> Any:
    value = obj.get(key)
    if value is None:
        return None
    return _expect(value, kind, f"{field}.{key}" if field else key)


def _int_range(value: Any, field: str, lo: int, hi: int) -> int:
    _expect(value, int, field)
    if not lo <= value <= hi:
        raise ConfigError(field, f"must be between {lo} and {hi}, got {value}")
    return value


def _abs_path(value: Any, field: str) -> str:
    _expect(value, str, field)
    if not value.startswith("/"):
        raise ConfigError(field, f"must be an absolute path, got {value!r}")
    return value


def _string_list(value: Any, field: str) -> list[str]:
    _expect(value, list, field)
    for i, item in enumerate(value):
        _expect(item, str, f"{field}[{i}]")
    return value


def load_config(bundle: str) -> dict[str, Any]:
    """Read, parse and validate ``<bundle>/config.json``; resolve root.path."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ConfigError("", f"config.json not found in bundle {bundle}") from None
    except OSError as err:
        raise ConfigError("", f"cannot read {path}: {os.strerror(err.errno or 0).lower()}"
                          ) from None
    try:
        config = _fastjson.loads(data)
    except UnicodeDecodeError:
        raise ConfigError("config.json", "not valid UTF-8") from None
    except _fastjson.JSONError as err:
        raise ConfigError("config.json", f"invalid JSON: {err}") from None
    if not isinstance(config, dict):
        raise ConfigError("config.json", f"expected an object, got {_kind(config)}")
    validate_config(config)
    root_path = config["root"]["path"]
    if not root_path.startswith("/"):
        root_path = os.path.join(bundle, root_path)
    root_path = os.path.realpath(root_path)
    if not os.path.isdir(root_path):
        raise ConfigError("root.path", f"{root_path} does not exist or is not a directory")
    config["root"]["path"] = root_path
    return config


def validate_config(config: dict[str, Any]) -> None:
    """Check every field flatrun uses; raise ConfigError naming the first bad one."""
    version = config.get("ociVersion")
    if version is None:
        raise ConfigError("ociVersion", "required")
    _expect(version, str, "ociVersion")
    if not version.split(".")[0] == "1":
        raise ConfigError("ociVersion", f"unsupported version {version!r}: flatrun "
                          "implements runtime-spec 1.x")
    root = config.get("root")
    if root is None:
        raise ConfigError("root", "required")
    _expect(root, dict, "root")
    _expect(root.get("path"), str, "root.path")
    if not root["path"]:
        raise ConfigError("root.path", "must not be empty")
    _opt(root, "readonly", bool, "root")
    for key in ("hostname", "domainname"):
        _opt(config, key, str, "")
    _validate_mounts(config.get("mounts"))
    if config.get("process") is not None:
        _validate_process(_expect(config["process"], dict, "process"))
    _validate_hooks(config.get("hooks"))
    annotations = config.get("annotations")
    if annotations is not None:
        _expect(annotations, dict, "annotations")
        for key, value in annotations.items():
            _expect(value, str, f"annotations.{key}")
    if config.get("linux") is not None:
        _validate_linux(_expect(config["linux"], dict, "linux"))


def _validate_mounts(mounts: Any) -> None:
    if mounts is None:
        return
    _expect(mounts, list, "mounts")
    for i, mnt in enumerate(mounts):
        field = f"mounts[{i}]"
        _expect(mnt, dict, field)
        dest = mnt.get("destination")
        if dest is None:
            raise ConfigError(f"{field}.destination", "required")
        _expect(dest, str, f"{field}.destination")
        if not dest:
            raise ConfigError(f"{field}.destination", "must not be empty")
        _opt(mnt, "type", str, field)
        _opt(mnt, "source", str, field)
        if mnt.get("options") is not None:
            _string_list(mnt["options"], f"{field}.options")
        for key in ("uidMappings", "gidMappings"):
            if mnt.get(key) is not None:
                _validate_mappings(mnt[key], f"{field}.{key}")


def _validate_process(process: dict[str, Any]) -> None:
    f = "process"
    _opt(process, "terminal", bool, f)
    size = process.get("consoleSize")
    if size is not None:
        _expect(size, dict, "process.consoleSize")
        for key in ("height", "width"):
            _int_range(size.get(key, 0), f"process.consoleSize.{key}", 0, 65535)
    user = process.get("user")
    if user is not None:
        _expect(user, dict, "process.user")
        for key in ("uid", "gid"):
            if user.get(key) is not None:
                _int_range(user[key], f"process.user.{key}", 0, 0xFFFFFFFE)
        if user.get("umask") is not None:
            _int_range(user["umask"], "process.user.umask", 0, 0o777)
        gids = user.get("additionalGids")
        if gids is not None:
            _expect(gids, list, "process.user.additionalGids")
            for i, gid in enumerate(gids):
                _int_range(gid, f"process.user.additionalGids[{i}]", 0, 0xFFFFFFFE)
    args = process.get("args")
    if args is not None:
        _string_list(args, "process.args")
    if process.get("commandLine") is not None:
        _expect(process["commandLine"], str, "process.commandLine")
    env = process.get("env")
    if env is not None:
        _string_list(env, "process.env")
        for i, item in enumerate(env):
            if "=" not in item:
                raise ConfigError(f"process.env[{i}]", f"expected KEY=VALUE, got {item!r}")
    cwd = process.get("cwd")
    if cwd is not None:
        _abs_path(cwd, "process.cwd")
    caps = process.get("capabilities")
    if caps is not None:
        _expect(caps, dict, "process.capabilities")
        for key in CAP_SETS:
            if caps.get(key) is None:
                continue
            names = _string_list(caps[key], f"process.capabilities.{key}")
            for i, name in enumerate(names):
                if name not in CAPABILITIES:
                    raise ConfigError(f"process.capabilities.{key}[{i}]",
                                      f"unknown capability {name!r}")
    rlimits = process.get("rlimits")
    if rlimits is not None:
        _expect(rlimits, list, "process.rlimits")
        seen = set()
        for i, limit in enumerate(rlimits):
            field = f"process.rlimits[{i}]"
            _expect(limit, dict, field)
            kind = limit.get("type")
            _expect(kind, str, f"{field}.type")
            if kind not in RLIMITS:
                raise ConfigError(f"{field}.type", f"unknown rlimit {kind!r}")
            if kind in seen:
                raise ConfigError(f"{field}.type", f"duplicate rlimit {kind!r}")
            seen.add(kind)
            soft = _expect(limit.get("soft"), int, f"{field}.soft")
            hard = _expect(limit.get("hard"), int, f"{field}.hard")
            if soft > hard:
                raise ConfigError(f"{field}.soft", f"soft limit {soft} exceeds hard limit {hard}")
    _opt(process, "noNewPrivileges", bool, f)
    _opt(process, "apparmorProfile", str, f)
    _opt(process, "selinuxLabel", str, f)
    if process.get("oomScoreAdj") is not None:
        _int_range(process["oomScoreAdj"], "process.oomScoreAdj", -1000, 1000)
    io = process.get("ioPriority")
    if io is not None:
        _expect(io, dict, "process.ioPriority")
        if io.get("class") not in ("IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE", "IOPRIO_CLASS_IDLE"):
            raise ConfigError("process.ioPriority.class", f"unknown class {io.get('class')!r}")
        _int_range(io.get("priority", 0), "process.ioPriority.priority", 0, 7)
    sched = process.get("scheduler")
    if sched is not None:
        _expect(sched, dict, "process.scheduler")
        _expect(sched.get("policy"), str, "process.scheduler.policy")
        if sched.get("nice") is not None:
            _int_range(sched["nice"], "process.scheduler.nice", -20, 19)
    affinity = process.get("execCPUAffinity")
    if affinity is not None:
        _expect(affinity, dict, "process.execCPUAffinity")


def _validate_hooks(hooks: Any) -> None:
    if hooks is None:
        return
    _expect(hooks, dict, "hooks")
    for kind, entries in hooks.items():
        if kind not in HOOK_KINDS:
            continue
        _expect(entries, list, f"hooks.{kind}")
        for i, hook in enumerate(entries):
            field = f"hooks.{kind}[{i}]"
            _expect(hook, dict, field)
            if hook.get("path") is None:
                raise ConfigError(f"{field}.path", "required")
            _abs_path(hook["path"], f"{field}.path")
            if hook.get("args") is not None:
                _string_list(hook["args"], f"{field}.args")
            if hook.get("env") is not None:
                _string_list(hook["env"], f"{field}.env")
            if hook.get("timeout") is not None:
                _expect(hook["timeout"], int, f"{field}.timeout")
                if hook["timeout"] <= 0:
                    raise ConfigError(f"{field}.timeout", "must be greater than zero")


def _validate_mappings(maps: Any, field: str) -> None:
    _expect(maps, list, field)
    for i, item in enumerate(maps):
        f = f"{field}[{i}]"
        _expect(item, dict, f)
        for key in ("containerID", "hostID", "size"):
            if item.get(key) is None:
                raise ConfigError(f"{f}.{key}", "required")
            _int_range(item[key], f"{f}.{key}", 0, 0xFFFFFFFF)
        if item["size"] == 0:
            raise ConfigError(f"{f}.size", "must be greater than zero")


def _validate_linux(linux: dict[str, Any]) -> None:
    namespaces = linux.get("namespaces")
    types: set[str] = set()
    if namespaces is not None:
        _expect(namespaces, list, "linux.namespaces")
        for i, entry in enumerate(namespaces):
            field = f"linux.namespaces[{i}]"
            _expect(entry, dict, field)
            kind = entry.get("type")
            _expect(kind, str, f"{field}.type")
            if kind not in NAMESPACE_TYPES:
                raise ConfigError(f"{field}.type", f"unknown namespace type {kind!r}")
            if kind in types:
                raise ConfigError(f"{field}.type", f"duplicate namespace type {kind!r}")
            types.add(kind)
            if entry.get("path") is not None:
                _abs_path(entry["path"], f"{field}.path")
    for key in ("uidMappings", "gidMappings"):
        if linux.get(key) is not None:
            _validate_mappings(linux[key], f"linux.{key}")
    devices = linux.get("devices")
    if devices is not None:
        _expect(devices, list, "linux.devices")
        for i, dev in enumerate(devices):
            field = f"linux.devices[{i}]"
            _expect(dev, dict, field)
            if dev.get("type") not in ("c", "b", "u", "p"):
                raise ConfigError(f"{field}.type", f"unknown device type {dev.get('type')!r}")
            _abs_path(dev.get("path"), f"{field}.path")
            if dev["type"] != "p":
                for key in ("major", "minor"):
                    if dev.get(key) is None:
                        raise ConfigError(f"{field}.{key}", "required for this device type")
                    _expect(dev[key], int, f"{field}.{key}")
            for key in ("fileMode", "uid", "gid"):
                if dev.get(key) is not None:
                    _expect(dev[key], int, f"{field}.{key}")
    _opt(linux, "cgroupsPath", str, "linux")
    resources = linux.get("resources")
    if resources is not None:
        _validate_resources(_expect(resources, dict, "linux.resources"))
    sysctl = linux.get("sysctl")
    if sysctl is not None:
        _expect(sysctl, dict, "linux.sysctl")
        for key, value in sysctl.items():
            _expect(value, str, f"linux.sysctl.{key}")
    seccomp = linux.get("seccomp")
    if seccomp is not None:
        _expect(seccomp, dict, "linux.seccomp")
    prop = linux.get("rootfsPropagation")
    if prop is not None and prop not in PROPAGATION_FLAGS:
        raise ConfigError("linux.rootfsPropagation", f"unknown propagation {prop!r}")
    for key in ("maskedPaths", "readonlyPaths"):
        if linux.get(key) is not None:
            for i, path in enumerate(_string_list(linux[key], f"linux.{key}")):
                _abs_path(path, f"linux.{key}[{i}]")
    personality = linux.get("personality")
    if personality is not None:
        _expect(personality, dict, "linux.personality")
        if personality.get("domain") not in ("LINUX", "LINUX32"):
            raise ConfigError("linux.personality.domain",
                              f"unknown domain {personality.get('domain')!r}")
    offsets = linux.get("timeOffsets")
    if offsets is not None:
        _expect(offsets, dict, "linux.timeOffsets")
        for clock in offsets:
            if clock not in ("monotonic", "boottime"):
                raise ConfigError(f"linux.timeOffsets.{clock}", "unknown clock")


def _validate_resources(res: dict[str, Any]) -> None:
    base = "linux.resources"
    for section in ("memory", "cpu", "pids", "blockIO", "network", "unified", "rdma"):
        if res.get(section) is not None:
            _expect(res[section], dict, f"{base}.{section}")
    memory = res.get("memory") or {}
    for key in ("limit", "reservation", "swap", "kernel", "kernelTCP"):
        if memory.get(key) is not None:
            _expect(memory[key], int, f"{base}.memory.{key}")
    if memory.get("swappiness") is not None:
        _int_range(memory["swappiness"], f"{base}.memory.swappiness", 0, 100)
    cpu = res.get("cpu") or {}
    for key in ("shares", "quota", "period", "realtimeRuntime", "realtimePeriod", "burst"):
        if cpu.get(key) is not None:
            _expect(cpu[key], int, f"{base}.cpu.{key}")
    for key in ("cpus", "mems"):
        if cpu.get(key) is not None:
            _expect(cpu[key], str, f"{base}.cpu.{key}")
    pids = res.get("pids") or {}
    if pids.get("limit") is not None:
        _expect(pids["limit"], int, f"{base}.pids.limit")
    devices = res.get("devices")
    if devices is not None:
        _expect(devices, list, f"{base}.devices")
        for i, rule in enumerate(devices):
            field = f"{base}.devices[{i}]"
            _expect(rule, dict, field)
            _expect(rule.get("allow"), bool, f"{field}.allow")
            if rule.get("type") not in (None, "a", "c", "b"):
                raise ConfigError(f"{field}.type", f"unknown device type {rule.get('type')!r}")
            access = rule.get("access")
            if access is not None and (not isinstance(access, str) or set(access) - set("rwm")):
                raise ConfigError(f"{field}.access", f"expected a subset of 'rwm', got {access!r}")
            for key in ("major", "minor"):
                if rule.get(key) is not None:
                    _expect(rule[key], int, f"{field}.{key}")
    hugepages = res.get("hugepageLimits")
    if hugepages is not None:
        _expect(hugepages, list, f"{base}.hugepageLimits")
        for i, item in enumerate(hugepages):
            _expect(item, dict, f"{base}.hugepageLimits[{i}]")
            _expect(item.get("pageSize"), str, f"{base}.hugepageLimits[{i}].pageSize")
            _expect(item.get("limit"), int, f"{base}.hugepageLimits[{i}].limit")
    unified = res.get("unified") or {}
    for key, value in unified.items():
        _expect(value, str, f"{base}.unified.{key}")
