"""Landlock: an opt-in sandbox for the container process (``org.flatstack.landlock``).

The annotation's value is a policy, clauses joined by ``;``::

    default                 ro=/ plus rw on /tmp /var/tmp /dev/shm /run and the
                            usual character devices (those that exist)
    ro=PATH[:PATH...]       read files, list directories, execute, beneath each PATH
    rw=PATH[:PATH...]       ro plus every write right: write, truncate, create and
                            remove entries, rename/link (refer), device ioctls
    bind=PORT[,PORT...]     the TCP ports the process may bind (ABI 4); ``bind=none``
    connect=PORT[,PORT...]  the TCP ports it may connect to (ABI 4); ``connect=none``
    scope=NAME[,NAME...]    ``signal``, ``abstract-unix``: no signals to, no abstract
                            unix sockets of processes outside the sandbox (ABI 6)

Every filesystem right the kernel's ABI knows is *handled*: what no ro/rw clause
allows is denied (EACCES), so ``ro=/usr:/bin;rw=/tmp`` cannot even read /etc.
Without a bind/connect clause TCP is left alone.  Paths are container paths,
resolved inside the container after pivot_root; a path that does not exist fails
create (``default``'s paths are skipped when absent).  Paths cannot contain ``:``.

The parent parses and checks the policy against the kernel before anything is
made (:func:`compile_policy`); the container init builds the ruleset before it
reports "created" (:func:`build_ruleset`) and enforces it after the exec FIFO,
right before seccomp and execve (:func:`restrict`).  landlock_restrict_self needs
no_new_privs or CAP_SYS_ADMIN, so the policy requires ``process.noNewPrivileges``
or CAP_SYS_ADMIN in ``process.capabilities.effective``.
"""

from __future__ import annotations

import os
import stat

from flatstack.errors import ConfigError, FlatstackError, KernelError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

ANNOTATION = "org.flatstack.landlock"
FIELD = f'annotations["{ANNOTATION}"]'

CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH = 1
RULE_NET_PORT = 2

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK = 1 << 8, 1 << 9, 1 << 10, 1 << 11
MAKE_SYM, REFER, TRUNCATE, IOCTL_DEV = 1 << 12, 1 << 13, 1 << 14, 1 << 15
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPES = {"abstract-unix": 1 << 0, "signal": 1 << 1}

#: The newest ABI this module knows; rights of newer ABIs are left unhandled.
KNOWN_ABI = 7
_FS_SINCE = ((1, (1 << 13) - 1), (2, REFER), (3, TRUNCATE), (5, IOCTL_DEV))
#: Rights that a rule on a non-directory may carry (others are EINVAL there).
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
RO = EXECUTE | READ_FILE | READ_DIR

DEFAULT_RO = ("/",)
DEFAULT_RW = ("/tmp", "/var/tmp", "/dev/shm", "/run", "/dev/null", "/dev/zero", "/dev/full",
              "/dev/random", "/dev/urandom", "/dev/tty", "/dev/ptmx", "/dev/pts")


class Policy:
    """A checked policy: what the ruleset handles and the rules to add."""

    def __init__(self, abi: int) -> None:
        self.abi = abi
        self.handled_fs = fs_rights(abi)
        self.handled_net = 0
        self.scoped = 0
        #: (path, access, required): required paths must exist in the container.
        self.paths: list[tuple[str, int, bool]] = []
        self.ports: list[tuple[int, int]] = []  # (access, port)


def fs_rights(abi: int) -> int:
    """Every filesystem right of Landlock ABI ``abi`` (capped at :data:`KNOWN_ABI`)."""
    rights = 0
    for since, bits in _FS_SINCE:
        if abi >= since:
            rights |= bits
    return rights


def abi_version() -> int:
    """The kernel's Landlock ABI version; raises FlatstackError when Landlock is absent."""
    from flatstack.kernel.libc import syscall

    try:
        return syscall("landlock_create_ruleset", None, 0, CREATE_RULESET_VERSION)
    except KernelError as err:
        if err.errno == 38:  # ENOSYS
            why = "this kernel has no Landlock (CONFIG_SECURITY_LANDLOCK)"
        elif err.errno == 95:  # EOPNOTSUPP
            why = "Landlock is disabled on this host (not in the lsm= boot parameter)"
        else:
            why = f"probing the Landlock ABI: {os.strerror(err.errno).lower()}"
        raise ConfigError(FIELD, why) from None


def parse(value: Any) -> tuple[list[tuple[str, str]], dict[str, list[int]], list[str]]:
    """Syntax only: (path clauses, port clauses, scopes).  Raises ConfigError(FIELD)."""
    if not isinstance(value, str):
        raise ConfigError(FIELD, "expected a string")
    paths: list[tuple[str, str]] = []
    ports: dict[str, list[int]] = {}
    scopes: list[str] = []
    clauses = [c.strip() for c in value.split(";")]
    if not any(clauses):
        raise ConfigError(FIELD, "empty policy (use 'default' or ro=PATH, rw=PATH)")
    for clause in clauses:
        if not clause:
            continue
        if clause == "default":
            paths.append(("default", ""))
            continue
        key, eq, rest = clause.partition("=")
        key = key.strip()
        if not eq:
            raise ConfigError(FIELD, f"{clause!r}: expected 'default' or KEY=VALUE "
                              "(keys: ro, rw, bind, connect, scope)")
        items = [item.strip() for item in rest.split(":" if key in ("ro", "rw") else ",")]
        if key in ("ro", "rw"):
            for path in items:
                if not path.startswith("/") or "\0" in path:
                    raise ConfigError(FIELD, f"{key}={rest}: {path!r} is not an absolute path")
                paths.append((key, path))
        elif key in ("bind", "connect"):
            ports.setdefault(key, [])
            if items == ["none"]:
                continue
            for item in items:
                if not item.isdigit() or int(item) > 65535:
                    raise ConfigError(FIELD, f"{key}={rest}: {item!r} is not a TCP port "
                                      "(0-65535) or 'none'")
                ports[key].append(int(item))
        elif key == "scope":
            for item in items:
                if item not in SCOPES:
                    raise ConfigError(FIELD, f"scope={rest}: unknown scope {item!r} "
                                      f"(known: {', '.join(sorted(SCOPES))})")
                scopes.append(item)
        else:
            raise ConfigError(FIELD, f"unknown key {key!r} (keys: ro, rw, bind, connect, "
                              "scope, or the word default)")
    return paths, ports, scopes


def compile_policy(config: dict[str, Any], process: dict[str, Any] | None = None) -> Policy:
    """Parse the annotation and check it against the kernel and the process.

    Called by the parent before anything is created; raises ConfigError naming
    the annotation.
    """
    value = (config.get("annotations") or {}).get(ANNOTATION)
    paths, ports, scopes = parse(value)
    _check_privileges(process if process is not None else config.get("process") or {})
    abi = abi_version()
    policy = Policy(min(abi, KNOWN_ABI))
    rw = policy.handled_fs
    for kind, path in paths:
        if kind == "default":
            policy.paths += [(p, RO, True) for p in DEFAULT_RO]
            policy.paths += [(p, rw, False) for p in DEFAULT_RW]
        else:
            policy.paths.append((path, RO if kind == "ro" else rw, True))
    if ports:
        if abi < 4:
            raise ConfigError(FIELD, f"bind/connect need Landlock ABI 4 (this kernel has {abi})")
        for key, access in (("bind", NET_BIND_TCP), ("connect", NET_CONNECT_TCP)):
            if key in ports:
                policy.handled_net |= access
                policy.ports += [(access, port) for port in ports[key]]
    if scopes:
        if abi < 6:
            raise ConfigError(FIELD, f"scope needs Landlock ABI 6 (this kernel has {abi})")
        for name in scopes:
            policy.scoped |= SCOPES[name]
    return policy


def _check_privileges(process: dict[str, Any]) -> None:
    if process.get("noNewPrivileges"):
        return
    effective = (process.get("capabilities") or {}).get("effective") or []
    if "CAP_SYS_ADMIN" in effective:
        return
    raise ConfigError(FIELD, "needs process.noNewPrivileges: true (or CAP_SYS_ADMIN in "
                      "process.capabilities.effective): the kernel requires it")


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "little")


def build_ruleset(policy: Policy) -> int:
    """Create the ruleset and add every rule; inside the container, after pivot_root.

    Returns the ruleset fd (close-on-exec) for :func:`restrict`.
    """
    from flatstack.kernel.libc import syscall

    attr = _u64(policy.handled_fs)
    if policy.abi >= 4:
        attr += _u64(policy.handled_net)
    if policy.abi >= 6:
        attr += _u64(policy.scoped)
    ruleset = syscall("landlock_create_ruleset", attr, len(attr), 0)
    try:
        for path, access, required in policy.paths:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError as err:
                if not required and err.errno in (2, 20):  # ENOENT, ENOTDIR
                    continue
                raise ConfigError(FIELD, f"{path}: {os.strerror(err.errno or 0).lower()} "
                                  "in the container") from None
            try:
                if not stat.S_ISDIR(os.fstat(fd).st_mode):
                    access &= _FILE_RIGHTS
                rule = _u64(access) + fd.to_bytes(4, "little", signed=True)
                syscall("landlock_add_rule", ruleset, RULE_PATH_BENEATH, rule, 0, detail=path)
            finally:
                os.close(fd)
        for access, port in policy.ports:
            syscall("landlock_add_rule", ruleset, RULE_NET_PORT, _u64(access) + _u64(port), 0,
                    detail=f"port {port}")
    except KernelError as err:
        os.close(ruleset)
        raise FlatstackError(f"{FIELD}: {err}") from None
    except BaseException:
        os.close(ruleset)
        raise
    return ruleset


def restrict(ruleset: int) -> None:
    """Enforce the ruleset on this process and everything it execs, then close it."""
    from flatstack.kernel.libc import syscall

    try:
        syscall("landlock_restrict_self", ruleset, 0)
    except KernelError as err:
        raise FlatstackError(f"{FIELD}: enforcing: {err}") from None
    finally:
        os.close(ruleset)
