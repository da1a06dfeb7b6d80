"""Load and validate a bundle's config.json (runtime-spec 1.2, Linux).

Errors are :class:`~flatstack.errors.ConfigError` naming the field by its JSON
path: ``mounts[2].destination``, ``linux.namespaces[1].type``; map keys are
appended with a dot, as in ``linux.sysctl.net.ipv4.ip_forward``.  Unknown keys are ignored,
as the spec allows extensions; ``null`` counts as absent, as in runc.

This module is on the hot path of every ``flatrun create``: standard library
only, no ``re``/``json``/``ctypes`` at import.  ``MOUNT_FLAGS`` and
``PROPAGATION_FLAGS`` are built from :mod:`flatstack.kernel.mount` on first
access (module ``__getattr__``), so importing this module stays cheap.
"""

from __future__ import annotations

import os

from flatstack.errors import ConfigError
from flatstack.kernel.names import CAPABILITIES, RLIMITS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    MOUNT_FLAGS: dict[str, tuple[bool, int]]
    PROPAGATION_FLAGS: dict[str, int]

__all__ = [
    "CAPABILITIES", "HOOK_KINDS", "MOUNT_FLAGS", "NAMESPACE_TYPES", "PROPAGATION_FLAGS",
    "RECURSIVE_ATTRS", "RLIMITS", "load_config", "validate_config",
]

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
              "poststop")
CAP_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave", "unbindable",
                "runbindable")

# mount_setattr(2) attributes (linux/mount.h).  The atime modes are a 3-bit
# field, not flags: to set one, put MOUNT_ATTR__ATIME in attr_clr as well.
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_IDMAP = 0x100000
MOUNT_ATTR_NOSYMFOLLOW = 0x200000

#: Recursive mount options -> (clears the attribute?, MOUNT_ATTR_*), applied with
#: mount_setattr(AT_RECURSIVE) as runc does.  ``idmap`` is the one non-recursive
#: entry (top mount only); ``ridmap`` is its recursive form.  ``rrelatime`` sets
#: the value 0 in the atime field; ``rnorelatime`` therefore changes nothing.
RECURSIVE_ATTRS: dict[str, tuple[bool, int]] = {
    "rro": (False, MOUNT_ATTR_RDONLY), "rrw": (True, MOUNT_ATTR_RDONLY),
    "rnosuid": (False, MOUNT_ATTR_NOSUID), "rsuid": (True, MOUNT_ATTR_NOSUID),
    "rnodev": (False, MOUNT_ATTR_NODEV), "rdev": (True, MOUNT_ATTR_NODEV),
    "rnoexec": (False, MOUNT_ATTR_NOEXEC), "rexec": (True, MOUNT_ATTR_NOEXEC),
    "rnodiratime": (False, MOUNT_ATTR_NODIRATIME), "rdiratime": (True, MOUNT_ATTR_NODIRATIME),
    "rrelatime": (False, MOUNT_ATTR_RELATIME), "rnorelatime": (True, MOUNT_ATTR_RELATIME),
    "rnoatime": (False, MOUNT_ATTR_NOATIME), "ratime": (True, MOUNT_ATTR_NOATIME),
    "rstrictatime": (False, MOUNT_ATTR_STRICTATIME),
    "rnostrictatime": (True, MOUNT_ATTR_STRICTATIME),
    "rnosymfollow": (False, MOUNT_ATTR_NOSYMFOLLOW), "rsymfollow": (True, MOUNT_ATTR_NOSYMFOLLOW),
    "idmap": (False, MOUNT_ATTR_IDMAP), "ridmap": (False, MOUNT_ATTR_IDMAP),
}


def _mount_flags() -> dict[str, tuple[bool, int]]:
    from flatstack.kernel import mount as m

    posixacl = getattr(m, "MS_POSIXACL", 1 << 16)
    i_version = getattr(m, "MS_I_VERSION", 1 << 23)
    return {
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
        "acl": (False, posixacl), "noacl": (True, posixacl),
        "iversion": (False, i_version), "noiversion": (True, i_version),
        "defaults": (False, 0),
    }


def _propagation_flags() -> dict[str, int]:
    from flatstack.kernel import mount as m

    return {
        "private": m.MS_PRIVATE, "rprivate": m.MS_PRIVATE | m.MS_REC,
        "shared": m.MS_SHARED, "rshared": m.MS_SHARED | m.MS_REC,
        "slave": m.MS_SLAVE, "rslave": m.MS_SLAVE | m.MS_REC,
        "unbindable": m.MS_UNBINDABLE, "runbindable": m.MS_UNBINDABLE | m.MS_REC,
    }


def __getattr__(name: str) -> Any:
    """Build the MS_* tables on first use (kernel.mount loads the syscall extension)."""
    if name == "MOUNT_FLAGS":
        value: Any = _mount_flags()
    elif name == "PROPAGATION_FLAGS":
        value = _propagation_flags()
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


# -- load --------------------------------------------------------------------
def load_config(bundle: str) -> dict[str, Any]:
    """Read, parse and validate ``<bundle>/config.json`` for ``create``.

    Requires ``process``; resolves ``root.path`` (relative to the bundle) to an
    absolute, symlink-free path that must be a directory; rewrites relative
    mount destinations (deprecated in runtime-spec 1.2) as relative to ``/``.
    """
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        if not os.path.isdir(bundle):
            raise ConfigError("", f"bundle {bundle} does not exist") from None
        raise ConfigError("", f"config.json not found in bundle {bundle}") from None
    except OSError as err:
        raise ConfigError("", f"cannot read {path}: {os.strerror(err.errno or 0).lower()}"
                          ) from None
    from flatstack import _fastjson

    try:
        config = _fastjson.loads(data)
    except UnicodeDecodeError as err:
        raise ConfigError("config.json", f"invalid UTF-8 at byte {err.start}") from None
    except _fastjson.JSONError as err:
        raise ConfigError("config.json", f"invalid JSON at line {err.line} column "
                                         f"{err.column}: {err.reason}") from None
    if type(config) is not dict:
        raise _type_error("config.json", "object", config)
    if config.get("process") is None:
        raise ConfigError("process", "required")
    validate_config(config)
    root = config["root"]
    root_path = root["path"]
    if not root_path.startswith("/"):
        root_path = os.path.join(bundle, root_path)
    root_path = os.path.realpath(root_path)
    if not os.path.isdir(root_path):
        reason = "is not a directory" if os.path.exists(root_path) else "does not exist"
        raise ConfigError("root.path", f"{root_path} {reason}")
    root["path"] = root_path
    for mnt in config.get("mounts") or ():
        if not mnt["destination"].startswith("/"):
            mnt["destination"] = "/" + mnt["destination"]
    return config


# -- small checks --------------------------------------------------------------
_TYPE_NAMES = {str: "string", int: "integer", bool: "boolean", list: "array", dict: "object",
               float: "number", type(None): "null"}
_U16 = 0xFFFF
_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
_I32_MIN = -(1 << 31)
_I32_MAX = (1 << 31) - 1
_ID_MAX = 0xFFFFFFFE  # (uid_t)-1 is not an id
_ONLY_STR = {str}


def _type_error(field: str, want: str, value: Any) -> ConfigError:
    got = _TYPE_NAMES.get(type(value), type(value).__name__)
    return ConfigError(field, f"expected {want}, got {got}")


def _key(field: str, key: str) -> str:
    return f"{field}.{key}"


def _obj(value: Any, field: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise _type_error(field, "object", value)
    return value


def _arr(value: Any, field: str) -> list[Any]:
    if type(value) is not list:
        raise _type_error(field, "array", value)
    return value


def _str(value: Any, field: str) -> str:
    if type(value) is not str:
        raise _type_error(field, "string", value)
    return value


def _bool(value: Any, field: str) -> bool:
    if type(value) is not bool:
        raise _type_error(field, "boolean", value)
    return value


def _int(value: Any, field: str, lo: int, hi: int) -> int:
    if type(value) is not int:
        raise _type_error(field, "integer", value)
    if value < lo or value > hi:
        if lo == 0 and value < 0:
            raise ConfigError(field, f"must not be negative, got {value}")
        if lo == 0:
            raise ConfigError(field, f"must be at most {hi}, got {value}")
        raise ConfigError(field, f"must be between {lo} and {hi}, got {value}")
    return value


def _opt(obj: dict[str, Any], key: str, field: str, check: Any, *bounds: int) -> Any:
    """``check(obj[key], field.key, *bounds)`` unless the key is absent or null."""
    value = obj.get(key)
    if value is None:
        return None
    return check(value, f"{field}.{key}", *bounds)


def _req(obj: dict[str, Any], key: str, field: str, check: Any, *bounds: int) -> Any:
    value = obj.get(key)
    if value is None:
        raise ConfigError(f"{field}.{key}", "required")
    return check(value, f"{field}.{key}", *bounds)


def _strings(value: Any, field: str) -> list[str]:
    _arr(value, field)
    if value and set(map(type, value)) != _ONLY_STR:
        for i, item in enumerate(value):
            if type(item) is not str:
                raise _type_error(f"{field}[{i}]", "string", item)
    return value


def _abs_path(value: Any, field: str) -> str:
    _str(value, field)
    if not value.startswith("/"):
        raise ConfigError(field, "must be an absolute path")
    return value


def _string_map(value: Any, field: str) -> dict[str, str]:
    _obj(value, field)
    for key, item in value.items():
        if type(item) is not str:
            raise _type_error(_key(field, key), "string", item)
    return value


def _cpu_list(value: Any, field: str) -> str:
    """A CPU list as ``0-3,7``; empty means unset."""
    _str(value, field)
    if value:
        for part in value.split(","):
            lo, dash, hi = part.partition("-")
            ok = lo.isascii() and lo.isdigit() and (
                not dash or (hi.isascii() and hi.isdigit() and int(lo) <= int(hi)))
            if not ok:
                raise ConfigError(field, f'invalid cpu list "{value}": expected a list like '
                                         '"0-3,7"')
    return value


# -- validate ------------------------------------------------------------------
def validate_config(config: dict[str, Any]) -> None:
    """Structural and semantic checks of every field flatrun uses (runtime-spec 1.2, Linux).

    ``process`` may be absent (``load_config`` requires it for create); when it
    is present ``args`` (non-empty) and ``cwd`` are required.  Raises
    ConfigError naming the first bad field.
    """
    if type(config) is not dict:
        raise _type_error("config.json", "object", config)
    _version(config.get("ociVersion"))
    root = config.get("root")
    if root is None:
        raise ConfigError("root", "required")
    _obj(root, "root")
    if not _req(root, "path", "root", _str):
        raise ConfigError("root.path", "must not be empty")
    _opt(root, "readonly", "root", _bool)
    linux = config.get("linux")
    if linux is not None:
        _obj(linux, "linux")
        namespaces = _namespaces(linux.get("namespaces"))
    else:
        linux = {}
        namespaces = {}
    mounts = config.get("mounts")
    if mounts is not None:
        _mounts(mounts)
    process = config.get("process")
    if process is not None:
        _process(_obj(process, "process"))
    for key in ("hostname", "domainname"):
        name = config.get(key)
        if name is not None and _str(name, key) and "uts" not in namespaces:
            raise ConfigError(key, "requires a uts namespace in linux.namespaces")
    hooks = config.get("hooks")
    if hooks is not None:
        _hooks(_obj(hooks, "hooks"))
    annotations = config.get("annotations")
    if annotations is not None:
        _string_map(annotations, "annotations")
        if "" in annotations:
            raise ConfigError("annotations", "keys must not be empty")
    if linux:
        _linux(linux, namespaces, config)


def _version(version: Any) -> None:
    if version is None:
        raise ConfigError("ociVersion", "required")
    _str(version, "ociVersion")
    core = version.partition("+")[0].partition("-")[0]
    parts = core.split(".")
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() for p in parts):
        raise ConfigError("ociVersion", f'invalid version "{version}": expected '
                                        'MAJOR.MINOR.PATCH')
    if parts[0] != "1":
        raise ConfigError("ociVersion", f'unsupported version "{version}": flatrun '
                                        'implements runtime-spec 1.x')


def _mounts(mounts: Any) -> None:
    _arr(mounts, "mounts")
    for i, mnt in enumerate(mounts):
        f = f"mounts[{i}]"
        _obj(mnt, f)
        if not _req(mnt, "destination", f, _str):
            raise ConfigError(f"{f}.destination", "must not be empty")
        _opt(mnt, "type", f, _str)
        _opt(mnt, "source", f, _str)
        _opt(mnt, "options", f, _strings)
        uid_maps = _opt(mnt, "uidMappings", f, _mappings)
        gid_maps = _opt(mnt, "gidMappings", f, _mappings)
        if (uid_maps is None) != (gid_maps is None):
            missing = "gidMappings" if gid_maps is None else "uidMappings"
            raise ConfigError(f"{f}.{missing}", "required when "
                              f"{'uidMappings' if gid_maps is None else 'gidMappings'} is set")


def _process(process: dict[str, Any]) -> None:
    f = "process"
    _opt(process, "terminal", f, _bool)
    size = process.get("consoleSize")
    if size is not None:
        _obj(size, "process.consoleSize")
        _req(size, "height", "process.consoleSize", _int, 0, _U16)
        _req(size, "width", "process.consoleSize", _int, 0, _U16)
    user = process.get("user")
    if user is not None:
        _obj(user, "process.user")
        _opt(user, "uid", "process.user", _int, 0, _ID_MAX)
        _opt(user, "gid", "process.user", _int, 0, _ID_MAX)
        _opt(user, "umask", "process.user", _int, 0, 0o777)
        gids = _opt(user, "additionalGids", "process.user", _arr)
        for i, gid in enumerate(gids or ()):
            _int(gid, f"process.user.additionalGids[{i}]", 0, _ID_MAX)
    args = _req(process, "args", f, _strings)
    if not args:
        raise ConfigError("process.args", "must not be empty")
    if not args[0]:
        raise ConfigError("process.args[0]", "must not be empty")
    _req(process, "cwd", f, _abs_path)
    env = _opt(process, "env", f, _strings)
    for i, item in enumerate(env or ()):
        name, eq, _ = item.partition("=")
        if not eq:
            raise ConfigError(f"process.env[{i}]", f'expected KEY=VALUE, got "{item}"')
        if not name:
            raise ConfigError(f"process.env[{i}]", "variable name must not be empty")
        if "\0" in item:
            raise ConfigError(f"process.env[{i}]", "must not contain a NUL byte")
    caps = process.get("capabilities")
    if caps is not None:
        _obj(caps, "process.capabilities")
        for key in CAP_SETS:
            names = caps.get(key)
            if names is None:
                continue
            field = f"process.capabilities.{key}"
            _strings(names, field)
            for i, name in enumerate(names):
                if name not in CAPABILITIES:
                    raise ConfigError(f"{field}[{i}]", f'unknown capability "{name}"')
    rlimits = process.get("rlimits")
    if rlimits is not None:
        _arr(rlimits, "process.rlimits")
        seen: set[str] = set()
        for i, limit in enumerate(rlimits):
            field = f"process.rlimits[{i}]"
            _obj(limit, field)
            kind = _req(limit, "type", field, _str)
            if kind not in RLIMITS:
                raise ConfigError(f"{field}.type", f'unknown rlimit "{kind}"')
            if kind in seen:
                raise ConfigError(f"{field}.type", f'duplicate rlimit "{kind}"')
            seen.add(kind)
            soft = _req(limit, "soft", field, _int, 0, _U64)
            hard = _req(limit, "hard", field, _int, 0, _U64)
            if soft > hard:
                raise ConfigError(f"{field}.soft", f"{soft} exceeds the hard limit {hard}")
    _opt(process, "noNewPrivileges", f, _bool)
    _opt(process, "apparmorProfile", f, _str)
    _opt(process, "selinuxLabel", f, _str)
    _opt(process, "oomScoreAdj", f, _int, -1000, 1000)
    io = process.get("ioPriority")
    if io is not None:
        _obj(io, "process.ioPriority")
        cls = _req(io, "class", "process.ioPriority", _str)
        if cls not in ("IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE", "IOPRIO_CLASS_IDLE"):
            raise ConfigError("process.ioPriority.class", f'unknown class "{cls}"')
        _opt(io, "priority", "process.ioPriority", _int, 0, 7)
    sched = process.get("scheduler")
    if sched is not None:
        _scheduler(_obj(sched, "process.scheduler"))
    affinity = process.get("execCPUAffinity")
    if affinity is not None:
        _obj(affinity, "process.execCPUAffinity")
        _opt(affinity, "initial", "process.execCPUAffinity", _cpu_list)
        _opt(affinity, "final", "process.execCPUAffinity", _cpu_list)


_SCHED_POLICIES = ("SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH", "SCHED_ISO",
                   "SCHED_IDLE", "SCHED_DEADLINE")
_SCHED_FLAGS = ("SCHED_FLAG_RESET_ON_FORK", "SCHED_FLAG_RECLAIM", "SCHED_FLAG_DL_OVERRUN",
                "SCHED_FLAG_KEEP_POLICY", "SCHED_FLAG_KEEP_PARAMS", "SCHED_FLAG_UTIL_CLAMP_MIN",
                "SCHED_FLAG_UTIL_CLAMP_MAX")


def _scheduler(sched: dict[str, Any]) -> None:
    f = "process.scheduler"
    policy = _req(sched, "policy", f, _str)
    if policy not in _SCHED_POLICIES:
        raise ConfigError(f"{f}.policy", f'unknown policy "{policy}"')
    _opt(sched, "nice", f, _int, -20, 19)
    priority = _opt(sched, "priority", f, _int, _I32_MIN, _I32_MAX)
    if priority:
        if policy not in ("SCHED_FIFO", "SCHED_RR"):
            raise ConfigError(f"{f}.priority", "only allowed with SCHED_FIFO or SCHED_RR")
        _int(priority, f"{f}.priority", 1, 99)
    flags = _opt(sched, "flags", f, _strings)
    for i, flag in enumerate(flags or ()):
        if flag not in _SCHED_FLAGS:
            raise ConfigError(f"{f}.flags[{i}]", f'unknown flag "{flag}"')
    runtime = _opt(sched, "runtime", f, _int, 0, _U64) or 0
    deadline = _opt(sched, "deadline", f, _int, 0, _U64) or 0
    period = _opt(sched, "period", f, _int, 0, _U64) or 0
    if policy != "SCHED_DEADLINE":
        for key, value in (("runtime", runtime), ("deadline", deadline), ("period", period)):
            if value:
                raise ConfigError(f"{f}.{key}", "only allowed with SCHED_DEADLINE")
    else:
        if runtime > deadline:
            raise ConfigError(f"{f}.runtime", f"{runtime} exceeds deadline {deadline}")
        if period and deadline > period:
            raise ConfigError(f"{f}.deadline", f"{deadline} exceeds period {period}")


def _hooks(hooks: dict[str, Any]) -> None:
    for kind in HOOK_KINDS:
        entries = hooks.get(kind)
        if entries is None:
            continue
        _arr(entries, f"hooks.{kind}")
        for i, hook in enumerate(entries):
            f = f"hooks.{kind}[{i}]"
            _obj(hook, f)
            _req(hook, "path", f, _abs_path)
            _opt(hook, "args", f, _strings)
            _opt(hook, "env", f, _strings)
            timeout = _opt(hook, "timeout", f, _int, _I64_MIN, _I64_MAX)
            if timeout is not None and timeout <= 0:
                raise ConfigError(f"{f}.timeout", f"must be greater than zero, got {timeout}")


def _mappings(maps: Any, field: str) -> list[dict[str, int]]:
    """An id mapping list: sizes > 0, no overflow, no overlaps, at most 340 lines."""
    _arr(maps, field)
    if len(maps) > 340:
        raise ConfigError(field, f"at most 340 mappings are allowed, got {len(maps)}")
    for i, item in enumerate(maps):
        f = f"{field}[{i}]"
        _obj(item, f)
        cid = _req(item, "containerID", f, _int, 0, _U32)
        hid = _req(item, "hostID", f, _int, 0, _U32)
        size = _req(item, "size", f, _int, 0, _U32)
        if size == 0:
            raise ConfigError(f"{f}.size", "must be greater than zero")
        for key, start in (("containerID", cid), ("hostID", hid)):
            if start + size > _U32 + 1:
                raise ConfigError(f"{f}.size", f"{key} {start} + size {size} exceeds "
                                               f"{_U32 + 1}")
    if len(maps) > 1:
        for key in ("containerID", "hostID"):
            ranges = sorted((m[key], m[key] + m["size"], i) for i, m in enumerate(maps))
            for n in range(1, len(ranges)):
                if ranges[n][0] < ranges[n - 1][1]:
                    first, second = sorted((ranges[n - 1][2], ranges[n][2]))
                    raise ConfigError(f"{field}[{second}].{key}",
                                      f"range overlaps {field}[{first}]")
    return maps


def _mapped(maps: list[dict[str, int]], ident: int) -> bool:
    return any(m["containerID"] <= ident < m["containerID"] + m["size"] for m in maps)


def _namespaces(namespaces: Any) -> dict[str, tuple[int, str | None]]:
    """type -> (index, path or None)."""
    found: dict[str, tuple[int, str | None]] = {}
    if namespaces is None:
        return found
    _arr(namespaces, "linux.namespaces")
    for i, entry in enumerate(namespaces):
        f = f"linux.namespaces[{i}]"
        _obj(entry, f)
        kind = _req(entry, "type", f, _str)
        if kind not in NAMESPACE_TYPES:
            raise ConfigError(f"{f}.type", f'unknown namespace type "{kind}"')
        if kind in found:
            raise ConfigError(f"{f}.type", f'duplicate namespace type "{kind}"')
        found[kind] = (i, _opt(entry, "path", f, _abs_path) or None)
    return found


def _linux(linux: dict[str, Any], ns: dict[str, tuple[int, str | None]],
           config: dict[str, Any]) -> None:
    # With this annotation the runtime fills in (or rejects, naming it) the maps.
    auto = "org.flatstack.userns" in (config.get("annotations") or {})
    _user_namespace(linux, ns, config.get("process"), auto_maps=auto)
    offsets = linux.get("timeOffsets")
    if offsets is not None:
        _time_offsets(_obj(offsets, "linux.timeOffsets"), ns)
    devices = linux.get("devices")
    if devices is not None:
        _devices(devices)
    _opt(linux, "cgroupsPath", "linux", _str)
    resources = linux.get("resources")
    if resources is not None:
        _resources(_obj(resources, "linux.resources"))
    if linux.get("intelRdt") is not None:
        raise ConfigError("linux.intelRdt", "intel rdt is not supported by flatrun")
    sysctl = linux.get("sysctl")
    if sysctl is not None:
        _sysctl(_string_map(sysctl, "linux.sysctl"), ns)
    seccomp = linux.get("seccomp")
    if seccomp is not None:
        _seccomp(_obj(seccomp, "linux.seccomp"))
    prop = _opt(linux, "rootfsPropagation", "linux", _str)
    if prop and prop not in PROPAGATIONS:
        raise ConfigError("linux.rootfsPropagation", f'unknown propagation "{prop}"')
    for key in ("maskedPaths", "readonlyPaths"):
        paths = _opt(linux, key, "linux", _strings)
        if not paths:
            continue
        for i, path in enumerate(paths):
            if not path.startswith("/"):
                raise ConfigError(f"linux.{key}[{i}]", "must be an absolute path")
    _opt(linux, "mountLabel", "linux", _str)
    personality = linux.get("personality")
    if personality is not None:
        _obj(personality, "linux.personality")
        domain = _req(personality, "domain", "linux.personality", _str)
        if domain not in ("LINUX", "LINUX32"):
            raise ConfigError("linux.personality.domain", f'unknown domain "{domain}"')
        _opt(personality, "flags", "linux.personality", _strings)


def _user_namespace(linux: dict[str, Any], ns: dict[str, tuple[int, str | None]],
                    process: Any, auto_maps: bool = False) -> None:
    uid_maps = _opt(linux, "uidMappings", "linux", _mappings)
    gid_maps = _opt(linux, "gidMappings", "linux", _mappings)
    if "user" not in ns:
        for key, maps in (("uidMappings", uid_maps), ("gidMappings", gid_maps)):
            if maps:
                raise ConfigError(f"linux.{key}", "requires a user namespace in "
                                                  "linux.namespaces")
        return
    if ns["user"][1] is not None:
        return  # joining: the namespace's own maps apply
    if auto_maps and not uid_maps and not gid_maps:
        return  # the runtime allocates a range (runtime/userns_pool.py)
    if not uid_maps:
        raise ConfigError("linux.uidMappings", "required when creating a user namespace")
    if not gid_maps:
        raise ConfigError("linux.gidMappings", "required when creating a user namespace")
    user = process.get("user") if type(process) is dict else None
    if not user:
        return
    uid = user.get("uid") or 0
    if not _mapped(uid_maps, uid):
        raise ConfigError("process.user.uid", f"{uid} is not mapped by linux.uidMappings")
    gid = user.get("gid") or 0
    if not _mapped(gid_maps, gid):
        raise ConfigError("process.user.gid", f"{gid} is not mapped by linux.gidMappings")
    for i, extra in enumerate(user.get("additionalGids") or ()):
        if not _mapped(gid_maps, extra):
            raise ConfigError(f"process.user.additionalGids[{i}]",
                              f"{extra} is not mapped by linux.gidMappings")


def _time_offsets(offsets: dict[str, Any], ns: dict[str, tuple[int, str | None]]) -> None:
    for clock, offset in offsets.items():
        f = _key("linux.timeOffsets", clock)
        if clock not in ("monotonic", "boottime"):
            raise ConfigError(f, f'unknown clock "{clock}"')
        _obj(offset, f)
        _opt(offset, "secs", f, _int, _I64_MIN, _I64_MAX)
        _opt(offset, "nanosecs", f, _int, 0, 999_999_999)
    if offsets:
        if "time" not in ns:
            raise ConfigError("linux.timeOffsets", "requires a time namespace in "
                                                   "linux.namespaces")
        if ns["time"][1] is not None:
            raise ConfigError("linux.timeOffsets", "cannot be set when joining an existing "
                                                   "time namespace")


def _devices(devices: Any) -> None:
    _arr(devices, "linux.devices")
    for i, dev in enumerate(devices):
        f = f"linux.devices[{i}]"
        _obj(dev, f)
        kind = _req(dev, "type", f, _str)
        if kind not in ("c", "b", "u", "p"):
            raise ConfigError(f"{f}.type", f'unknown device type "{kind}"')
        _req(dev, "path", f, _abs_path)
        for key in ("major", "minor"):
            if kind == "p":
                _opt(dev, key, f, _int, _I64_MIN, _I64_MAX)
            else:
                _req(dev, key, f, _int, _I64_MIN, _I64_MAX)
        for key in ("fileMode", "uid", "gid"):
            _opt(dev, key, f, _int, 0, _U32)


def _entries(res: dict[str, Any], key: str, field: str) -> list[tuple[str, dict[str, Any]]]:
    """(path, object) for each entry of the optional array ``res[key]``."""
    items = _opt(res, key, field, _arr) or ()
    out = []
    for i, item in enumerate(items):
        f = f"{field}.{key}[{i}]"
        out.append((f, _obj(item, f)))
    return out


def _resources(res: dict[str, Any]) -> None:
    base = "linux.resources"
    memory = res.get("memory")
    if memory is not None:
        f = f"{base}.memory"
        _obj(memory, f)
        for key in ("limit", "reservation", "swap", "kernel", "kernelTCP"):
            _opt(memory, key, f, _int, _I64_MIN, _I64_MAX)
        _opt(memory, "swappiness", f, _int, 0, 100)
        for key in ("disableOOMKiller", "useHierarchy", "checkBeforeUpdate"):
            _opt(memory, key, f, _bool)
    cpu = res.get("cpu")
    if cpu is not None:
        f = f"{base}.cpu"
        _obj(cpu, f)
        for key in ("shares", "period", "realtimePeriod", "burst"):
            _opt(cpu, key, f, _int, 0, _U64)
        for key in ("quota", "realtimeRuntime", "idle"):
            _opt(cpu, key, f, _int, _I64_MIN, _I64_MAX)
        _opt(cpu, "cpus", f, _str)
        _opt(cpu, "mems", f, _str)
    pids = res.get("pids")
    if pids is not None:
        _obj(pids, f"{base}.pids")
        _opt(pids, "limit", f"{base}.pids", _int, _I64_MIN, _I64_MAX)
    for f, rule in _entries(res, "devices", base):
        _req(rule, "allow", f, _bool)
        kind = _opt(rule, "type", f, _str)
        if kind is not None and kind not in ("a", "c", "b"):
            raise ConfigError(f"{f}.type", f'unknown device type "{kind}"')
        _opt(rule, "major", f, _int, _I64_MIN, _I64_MAX)
        _opt(rule, "minor", f, _int, _I64_MIN, _I64_MAX)
        access = _opt(rule, "access", f, _str)
        if access and (set(access) - set("rwm")):
            raise ConfigError(f"{f}.access", f'expected a combination of "r", "w" and "m", '
                                             f'got "{access}"')
    block = res.get("blockIO")
    if block is not None:
        f = f"{base}.blockIO"
        _obj(block, f)
        _opt(block, "weight", f, _int, 0, _U16)
        _opt(block, "leafWeight", f, _int, 0, _U16)
        for g, dev in _entries(block, "weightDevice", f):
            _req(dev, "major", g, _int, _I64_MIN, _I64_MAX)
            _req(dev, "minor", g, _int, _I64_MIN, _I64_MAX)
            _opt(dev, "weight", g, _int, 0, _U16)
            _opt(dev, "leafWeight", g, _int, 0, _U16)
        for key in ("throttleReadBpsDevice", "throttleWriteBpsDevice",
                    "throttleReadIOPSDevice", "throttleWriteIOPSDevice"):
            for g, dev in _entries(block, key, f):
                _req(dev, "major", g, _int, _I64_MIN, _I64_MAX)
                _req(dev, "minor", g, _int, _I64_MIN, _I64_MAX)
                _req(dev, "rate", g, _int, 0, _U64)
    for f, item in _entries(res, "hugepageLimits", base):
        _req(item, "pageSize", f, _str)
        _req(item, "limit", f, _int, 0, _U64)
    network = res.get("network")
    if network is not None:
        f = f"{base}.network"
        _obj(network, f)
        _opt(network, "classID", f, _int, 0, _U32)
        for g, prio in _entries(network, "priorities", f):
            _req(prio, "name", g, _str)
            _req(prio, "priority", g, _int, 0, _U32)
    rdma = res.get("rdma")
    if rdma is not None:
        _obj(rdma, f"{base}.rdma")
        for device, limits in rdma.items():
            g = _key(f"{base}.rdma", device)
            _obj(limits, g)
            _opt(limits, "hcaHandles", g, _int, 0, _U32)
            _opt(limits, "hcaObjects", g, _int, 0, _U32)
    unified = res.get("unified")
    if unified is not None:
        _string_map(unified, f"{base}.unified")
        for key in unified:
            if not key or "/" in key or key in (".", ".."):
                raise ConfigError(_key(f"{base}.unified", key),
                                  "must be a cgroup file name (no slashes)")


_IPC_SYSCTLS = frozenset(("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                          "kernel.shmall", "kernel.shmmax", "kernel.shmmni",
                          "kernel.shm_rmid_forced"))


def _sysctl(sysctl: dict[str, str], ns: dict[str, tuple[int, str | None]]) -> None:
    """Only sysctls the container's own namespaces isolate (as runc allows)."""
    host_net: bool | None = None
    for key in sysctl:
        f = _key("linux.sysctl", key)
        # "a.b/c.d" (dots separate, "/" is a literal dot) or "a/b.c/d" (the reverse).
        if "/" in key and ("." not in key or key.index("/") < key.index(".")):
            parts = key.split("/")
        else:
            parts = [p.replace("/", ".") for p in key.split(".")]
        if any(p in ("", ".", "..") or "\0" in p for p in parts):
            raise ConfigError(f, "invalid sysctl name")
        name = ".".join(p.replace(".", "/") for p in parts)
        if name in _IPC_SYSCTLS or name.startswith("fs.mqueue."):
            if "ipc" not in ns:
                raise ConfigError(f, "requires an ipc namespace in linux.namespaces")
            index, path = ns["ipc"]
            if path is not None and _same_file(path, "/proc/self/ns/ipc",
                                               f"linux.namespaces[{index}].path"):
                raise ConfigError(f, "not allowed in the host ipc namespace")
        elif name.startswith("net."):
            if "network" not in ns:
                raise ConfigError(f, "requires a network namespace in linux.namespaces")
            index, path = ns["network"]
            if path is not None:
                if host_net is None:
                    host_net = _same_file(path, "/proc/self/ns/net",
                                          f"linux.namespaces[{index}].path")
                if host_net:
                    raise ConfigError(f, "not allowed in the host network namespace")
        elif name == "kernel.domainname" and "uts" in ns:
            pass
        elif name == "kernel.hostname" and "uts" in ns:
            raise ConfigError(f, 'conflicts with the "hostname" field')
        else:
            raise ConfigError(f, "not isolated by a namespace of the container")


def _same_file(path: str, other: str, field: str) -> bool:
    try:
        a, b = os.stat(path), os.stat(other)
    except OSError as err:
        raise ConfigError(field, f"{err.filename}: {os.strerror(err.errno or 0).lower()}"
                          ) from None
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _seccomp(seccomp: dict[str, Any]) -> None:
    """Shape only; runtime.seccomp checks names against libseccomp's tables."""
    f = "linux.seccomp"
    _req(seccomp, "defaultAction", f, _str)
    _opt(seccomp, "defaultErrnoRet", f, _int, 0, _U32)
    _opt(seccomp, "architectures", f, _strings)
    _opt(seccomp, "flags", f, _strings)
    _opt(seccomp, "listenerPath", f, _str)
    _opt(seccomp, "listenerMetadata", f, _str)
    for g, rule in _entries(seccomp, "syscalls", f):
        names = _req(rule, "names", g, _strings)
        if not names:
            raise ConfigError(f"{g}.names", "must not be empty")
        _req(rule, "action", g, _str)
        _opt(rule, "errnoRet", g, _int, 0, _U32)
        for h, arg in _entries(rule, "args", g):
            _req(arg, "index", h, _int, 0, 5)
            _opt(arg, "value", h, _int, 0, _U64)
            _opt(arg, "valueTwo", h, _int, 0, _U64)
            _req(arg, "op", h, _str)
