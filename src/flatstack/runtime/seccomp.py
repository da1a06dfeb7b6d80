"""Seccomp: validate and compile ``linux.seccomp``, cache the BPF, install it.

Compilation goes through libseccomp (``_libseccomp``, loaded by soname on
first use).  The program is cached on disk, so the hot path of a container
start -- :func:`load_cached` on a warm cache, then :func:`install_filter` --
reads one small file, checks a digest and makes one ``seccomp(2)`` call
without ever mapping libseccomp.

Semantics follow runc:

* unknown syscall names are skipped silently (the profile may name syscalls
  newer than this libseccomp); unknown actions, architectures, operators and
  flags are errors;
* a rule whose action equals the default action is skipped;
* a rule with several conditions on the same argument index becomes one
  rule per condition (libseccomp allows one comparison per argument in a
  rule), i.e. the conditions are OR-ed, not AND-ed;
* unless the default action lets syscalls through (ALLOW, LOG, TRACE), a
  stub in front of libseccomp's program answers ENOSYS to every syscall
  number above the highest one the profile names, per architecture, so a C
  library probing a syscall newer than the profile falls back instead of
  failing with EPERM.
* SCMP_ACT_NOTIFY may not be the default action, nor apply to the syscalls
  in :data:`NOTIFY_FORBIDDEN` (the runtime itself needs them between loading
  the filter and handing the listener fd over).
"""

from __future__ import annotations

import os

from flatstack.errors import KernelError, SeccompError
from flatstack.kernel.libc import _sys, syscall

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: runtime-spec action name -> SCMP_ACT_* value (errno/trace data OR-ed in later).
ACTIONS: dict[str, int] = {
    "SCMP_ACT_KILL": 0x00000000,
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
    "SCMP_ACT_NOTIFY": 0x7FC00000,
}
#: Actions that carry a return code (errnoRet / defaultErrnoRet).
ERRNO_ACTIONS = frozenset({"SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"})
#: Default actions that let unknown syscalls run: no ENOSYS stub for them (as runc).
PERMISSIVE_ACTIONS = frozenset({"SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE"})
OPERATORS: dict[str, int] = {
    "SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7,
}
#: runtime-spec architecture -> libseccomp architecture name.
ARCHES: dict[str, str] = {
    "SCMP_ARCH_X86": "x86", "SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_X32": "x32",
    "SCMP_ARCH_ARM": "arm", "SCMP_ARCH_AARCH64": "aarch64",
    "SCMP_ARCH_MIPS": "mips", "SCMP_ARCH_MIPS64": "mips64",
    "SCMP_ARCH_MIPS64N32": "mips64n32", "SCMP_ARCH_MIPSEL": "mipsel",
    "SCMP_ARCH_MIPSEL64": "mipsel64", "SCMP_ARCH_MIPSEL64N32": "mipsel64n32",
    "SCMP_ARCH_PPC": "ppc", "SCMP_ARCH_PPC64": "ppc64", "SCMP_ARCH_PPC64LE": "ppc64le",
    "SCMP_ARCH_S390": "s390", "SCMP_ARCH_S390X": "s390x",
    "SCMP_ARCH_PARISC": "parisc", "SCMP_ARCH_PARISC64": "parisc64",
    "SCMP_ARCH_RISCV64": "riscv64",
}
#: linux.seccomp.flags -> SECCOMP_FILTER_FLAG_* (the ones runtime-spec 1.2 names).
FLAGS: dict[str, int] = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 32,
}
FLAG_TSYNC = 1
FLAG_NEW_LISTENER = 8
FLAG_TSYNC_ESRCH = 16
FLAG_WAIT_KILLABLE_RECV = 32
#: Syscalls SCMP_ACT_NOTIFY may not trap: the runtime makes them after the filter
#: is loaded and before anyone reads the listener (runc forbids ``write``).
NOTIFY_FORBIDDEN = frozenset({
    "write", "writev", "read", "close", "sendmsg", "sendto", "socket", "connect",
    "brk", "mmap", "munmap", "futex",
})

BPF_MAXINSNS = 4096
_EPERM = 1
_ENOSYS = 38
_EEXIST = 17
_U64 = (1 << 64) - 1
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes with the NUL

_FIELD = "linux.seccomp"


# --------------------------------------------------------------------------- validation


def validate(seccomp: dict[str, Any]) -> None:
    """Check ``linux.seccomp``; :class:`SeccompError` names the faulty field.

    Structure and vocabulary only: syscall names are not checked (unknown ones
    are skipped at compile time, as runc does), so libseccomp is not needed.
    """
    f = _FIELD
    if not isinstance(seccomp, dict):
        raise SeccompError(f"{f}: expected an object")
    if "defaultAction" not in seccomp:
        raise SeccompError(f"{f}.defaultAction: required")
    default = _action_name(seccomp["defaultAction"], f"{f}.defaultAction")
    if default == "SCMP_ACT_NOTIFY":
        raise SeccompError(f"{f}.defaultAction: SCMP_ACT_NOTIFY cannot be the default action")
    _check_errno(seccomp, "defaultErrnoRet", default, f)
    for i, arch in enumerate(_array(seccomp, "architectures", f)):
        if not isinstance(arch, str) or arch not in ARCHES:
            raise SeccompError(f"{f}.architectures[{i}]: unknown architecture {_q(arch)}")
    flags = 0
    for i, flag in enumerate(_array(seccomp, "flags", f)):
        if not isinstance(flag, str) or flag not in FLAGS:
            raise SeccompError(f"{f}.flags[{i}]: unknown flag {_q(flag)}")
        flags |= FLAGS[flag]
    notify = False
    for i, rule in enumerate(_array(seccomp, "syscalls", f)):
        g = f"{f}.syscalls[{i}]"
        if not isinstance(rule, dict):
            raise SeccompError(f"{g}: expected an object")
        names = rule.get("names")
        if not isinstance(names, list) or not names:
            raise SeccompError(f"{g}.names: required, a non-empty array of syscall names")
        for j, name in enumerate(names):
            if not isinstance(name, str) or not name:
                raise SeccompError(f"{g}.names[{j}]: expected a syscall name, got {_q(name)}")
        if "action" not in rule:
            raise SeccompError(f"{g}.action: required")
        action = _action_name(rule["action"], f"{g}.action")
        _check_errno(rule, "errnoRet", action, g)
        if action == "SCMP_ACT_NOTIFY":
            notify = True
            for j, name in enumerate(names):
                if name in NOTIFY_FORBIDDEN:
                    raise SeccompError(f"{g}.names[{j}]: SCMP_ACT_NOTIFY cannot be used for "
                                       f"{name} (the runtime needs it to hand the listener over)")
        for j, arg in enumerate(_array(rule, "args", g)):
            _check_arg(arg, f"{g}.args[{j}]")
    path = seccomp.get("listenerPath")
    if path is not None and (not isinstance(path, str) or not path):
        raise SeccompError(f"{f}.listenerPath: expected a non-empty path")
    if path and len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise SeccompError(f"{f}.listenerPath: longer than a unix socket path can be "
                           f"({_SUN_PATH_MAX} bytes)")
    if notify and not path:
        raise SeccompError(f"{f}.listenerPath: required when a rule uses SCMP_ACT_NOTIFY")
    metadata = seccomp.get("listenerMetadata")
    if metadata is not None:
        if not isinstance(metadata, str):
            raise SeccompError(f"{f}.listenerMetadata: expected a string")
        if metadata and not path:
            raise SeccompError(f"{f}.listenerMetadata: set without listenerPath")
    if flags & FLAG_WAIT_KILLABLE_RECV and not notify:
        raise SeccompError(f"{f}.flags: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs a rule "
                           "with SCMP_ACT_NOTIFY")


def _q(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _array(obj: dict[str, Any], key: str, field: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise SeccompError(f"{field}.{key}: expected an array")
    return value


def _action_name(value: object, field: str) -> str:
    if not isinstance(value, str) or value not in ACTIONS:
        raise SeccompError(f"{field}: unknown action {_q(value)}")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_errno(obj: dict[str, Any], key: str, action: str, field: str) -> None:
    value = obj.get(key)
    if value is None:
        return
    if not _is_int(value) or not 0 <= value <= 0xFFFF:
        raise SeccompError(f"{field}.{key}: expected an integer from 0 to 65535")
    if action not in ERRNO_ACTIONS:
        raise SeccompError(f"{field}.{key}: not supported by action {action}")


def _check_arg(arg: object, field: str) -> None:
    if not isinstance(arg, dict):
        raise SeccompError(f"{field}: expected an object")
    index = arg.get("index")
    if not _is_int(index) or not 0 <= index <= 5:
        raise SeccompError(f"{field}.index: expected an integer from 0 to 5, got {_q(index)}")
    if "op" not in arg:
        raise SeccompError(f"{field}.op: required")
    if not isinstance(arg["op"], str) or arg["op"] not in OPERATORS:
        raise SeccompError(f"{field}.op: unknown operator {_q(arg['op'])}")
    for key in ("value", "valueTwo"):
        value = arg.get(key)
        if value is not None and (not _is_int(value) or not 0 <= value <= _U64):
            raise SeccompError(f"{field}.{key}: expected an unsigned 64-bit integer")


# --------------------------------------------------------------------------- flags


def uses_notify(seccomp: dict[str, Any]) -> bool:
    """Whether any rule (or the default) is SCMP_ACT_NOTIFY."""
    return seccomp.get("defaultAction") == "SCMP_ACT_NOTIFY" or any(
        isinstance(rule, dict) and rule.get("action") == "SCMP_ACT_NOTIFY"
        for rule in seccomp.get("syscalls") or ())


def filter_flags(seccomp: dict[str, Any]) -> int:
    """``seccomp(2)`` flags for ``linux.seccomp.flags``, plus NEW_LISTENER for notify.

    TSYNC together with NEW_LISTENER needs TSYNC_ESRCH (else the kernel says
    EINVAL), so it is added then.
    """
    flags = 0
    for name in seccomp.get("flags") or ():
        flags |= FLAGS.get(name, 0)
    if uses_notify(seccomp):
        flags |= FLAG_NEW_LISTENER
        if flags & FLAG_TSYNC:
            flags |= FLAG_TSYNC_ESRCH
    return flags


# --------------------------------------------------------------------------- compile


def _action_value(name: str, errno_ret: int | None) -> int:
    value = ACTIONS[name]
    if name in ERRNO_ACTIONS:
        value |= (_EPERM if errno_ret is None else errno_ret) & 0xFFFF
    return value


def compile_filter(seccomp: dict[str, Any]) -> bytes:
    """Compile ``linux.seccomp`` to a classic BPF program (``struct sock_filter[]``)."""
    validate(seccomp)
    from flatstack.runtime import _libseccomp as ls

    lib = ls.lib()
    default_name = seccomp["defaultAction"]
    default = _action_value(default_name, seccomp.get("defaultErrnoRet"))
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise SeccompError(f"{_FIELD}.defaultAction: libseccomp refused {default_name} "
                           "(not supported by this kernel?)")
    try:
        # flatrun sets no_new_privs itself, at the point the spec asks for.
        _attr(lib, ctx, ls.ATTR_CTL_NNP, 0, "SCMP_FLTATR_CTL_NNP")
        # A binary search over syscall numbers instead of a linear scan: fewer
        # instructions for every syscall the kernel's action cache cannot answer
        # (argument-filtered and refused ones); costs ~4 ms more to compile.
        _attr(lib, ctx, ls.ATTR_CTL_OPTIMIZE, ls.OPTIMIZE_BINARY_TREE, "SCMP_FLTATR_CTL_OPTIMIZE")
        tokens = [lib.seccomp_arch_native()]
        for i, arch in enumerate(seccomp.get("architectures") or ()):
            token = lib.seccomp_arch_resolve_name(ARCHES[arch].encode())
            if not token:
                raise SeccompError(f"{_FIELD}.architectures[{i}]: {arch} is not supported by "
                                   f"libseccomp {ls.version()}")
            rc = lib.seccomp_arch_add(ctx, token)
            if rc < 0 and rc != -_EEXIST:
                raise SeccompError(f"{_FIELD}.architectures[{i}]: cannot add {arch}: "
                                   f"{os.strerror(-rc).lower()}")
            if token not in tokens:
                tokens.append(token)
        for i, rule in enumerate(seccomp.get("syscalls") or ()):
            _add_rule(lib, ctx, rule, default, i)
        program = _export(lib, ctx)
    finally:
        lib.seccomp_release(ctx)
    errno_ret = seccomp.get("defaultErrnoRet")
    if default_name not in PERMISSIVE_ACTIONS and not (
            default_name == "SCMP_ACT_ERRNO" and errno_ret == _ENOSYS):
        program = _enosys_stub(lib, tokens, seccomp.get("syscalls") or ()) + program
    if len(program) // 8 > BPF_MAXINSNS:
        raise SeccompError(f"{_FIELD}: the compiled filter has {len(program) // 8} instructions, "
                           f"more than the kernel's limit of {BPF_MAXINSNS}")
    return program


def _attr(lib: Any, ctx: int, attr: int, value: int, name: str) -> None:
    rc = lib.seccomp_attr_set(ctx, attr, value)
    if rc < 0:
        raise SeccompError(f"{_FIELD}: libseccomp refused {name}={value}: "
                           f"{os.strerror(-rc).lower()}")


def _add_rule(lib: Any, ctx: int, rule: dict[str, Any], default: int, index: int) -> None:
    from flatstack.runtime._libseccomp import NR_ERROR, ArgCmp

    g = f"{_FIELD}.syscalls[{index}]"
    action = _action_value(rule["action"], rule.get("errnoRet"))
    if action == default:
        return  # libseccomp refuses such rules (EACCES); runc skips them
    conds = [ArgCmp(a["index"], OPERATORS[a["op"]], a.get("value") or 0, a.get("valueTwo") or 0)
             for a in rule.get("args") or ()]
    indexes = [c.arg for c in conds]
    if len(set(indexes)) == len(indexes):
        groups = [conds]
    else:
        # One comparison per argument per rule is all libseccomp takes: like
        # runc, split into one rule per condition (they match as OR).
        groups = [[c] for c in conds]
    arrays = [((ArgCmp * len(grp))(*grp) if grp else None, len(grp)) for grp in groups]
    for j, name in enumerate(rule["names"]):
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr == NR_ERROR:
            continue  # unknown to libseccomp: skipped, as runc does
        for array, count in arrays:
            rc = lib.seccomp_rule_add_array(ctx, action, nr, count, array)
            if rc < 0:
                raise SeccompError(f"{g}.names[{j}]: libseccomp rejected the rule for {name}: "
                                   f"{os.strerror(-rc).lower()}")


def _export(lib: Any, ctx: int) -> bytes:
    fd = os.memfd_create("flatrun-seccomp", os.MFD_CLOEXEC)
    try:
        rc = lib.seccomp_export_bpf(ctx, fd)
        if rc < 0:
            raise SeccompError(f"{_FIELD}: exporting the filter failed: "
                               f"{os.strerror(-rc).lower()}")
        size = os.fstat(fd).st_size
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


# classic BPF opcodes
_LD_W_ABS = 0x20
_JA = 0x05
_JEQ_K = 0x15
_JGT_K = 0x25
_JSET_K = 0x45
_RET_K = 0x06
_X32_BIT = 0x40000000
_AUDIT_X86_64 = 0xC000003E
_TOKEN_X32 = 0x4000003E
_AUDIT_S390 = 0x16
_AUDIT_S390X = 0x80000016


def _enosys_stub(lib: Any, tokens: list[int], rules: Any) -> bytes:
    """A BPF prefix returning ENOSYS for syscalls above the profile's highest, per arch."""
    names = {n.encode() for rule in rules for n in rule["names"]}
    top: dict[int, dict[str, int]] = {}  # audit arch -> {"64"|"x32": highest nr}
    for token in tokens:
        nrs = [nr for nr in (lib.seccomp_syscall_resolve_name_arch(token, n) for n in names)
               if nr >= 0]
        if not nrs:
            continue
        if token == _TOKEN_X32:
            top.setdefault(_AUDIT_X86_64, {})["x32"] = max(nrs)
        else:
            top.setdefault(token, {})["64"] = max(nrs)
    if not top:
        return b""
    # Assemble with symbolic labels; every jump is forward and short.
    prog: list[tuple[int, object, object, int]] = [(_LD_W_ABS, 0, 0, 4)]
    labels: dict[str, int] = {}
    for n, (arch, modes) in enumerate(top.items()):
        nxt = f"next{n}"
        prog.append((_JEQ_K, 0, nxt, arch))
        prog.append((_LD_W_ABS, 0, 0, 0))
        if arch == _AUDIT_X86_64:
            if "64" in modes and "x32" in modes:
                prog.append((_JSET_K, f"x32_{n}", 0, _X32_BIT))
                prog.append((_JGT_K, "enosys", "filter", modes["64"]))
                labels[f"x32_{n}"] = len(prog)
                prog.append((_JGT_K, "enosys", "filter", modes["x32"]))
            elif "64" in modes:
                prog.append((_JSET_K, "filter", 0, _X32_BIT))
                prog.append((_JGT_K, "enosys", "filter", modes["64"]))
            else:
                prog.append((_JSET_K, 0, "filter", _X32_BIT))
                prog.append((_JGT_K, "enosys", "filter", modes["x32"]))
        else:
            if arch in (_AUDIT_S390, _AUDIT_S390X):
                # Unknown syscalls reach the filter as nr 0 (the multiplexer).
                prog.append((_JEQ_K, "enosys", 0, 0))
            prog.append((_JGT_K, "enosys", "filter", modes["64"]))
        labels[nxt] = len(prog)
    prog.append((_JA, 0, 0, "filter"))  # other arches: libseccomp's bad-arch action
    labels["enosys"] = len(prog)
    prog.append((_RET_K, 0, 0, ACTIONS["SCMP_ACT_ERRNO"] | _ENOSYS))
    labels["filter"] = len(prog)
    out = bytearray()
    for pc, (code, jt, jf, k) in enumerate(prog):
        jt_off, jf_off, k_val = (_offset(x, labels, pc) for x in (jt, jf, k))
        if not (0 <= jt_off <= 255 and 0 <= jf_off <= 255):
            raise SeccompError(f"{_FIELD}: too many architectures for the ENOSYS stub")
        out += code.to_bytes(2, "little") + bytes((jt_off, jf_off)) + k_val.to_bytes(4, "little")
    return bytes(out)


def _offset(value: object, labels: dict[str, int], pc: int) -> int:
    """A label as a jump offset from the instruction after ``pc``; numbers as they are."""
    return labels[value] - pc - 1 if isinstance(value, str) else int(value)  # type: ignore[call-overload]


# --------------------------------------------------------------------------- cache

#: Bump when the compiled output for a given profile changes.
_CACHE_FORMAT = "flatrun-seccomp-3"
_MAGIC = b"FLATBPF3"
_HEAD = len(_MAGIC) + 32 + 2


def _sha256() -> Any:
    try:
        from _sha256 import sha256  # Python 3.11: C, no OpenSSL load
    except ImportError:
        try:
            from _sha2 import sha256  # type: ignore[no-redef]  # Python 3.12+
        except ImportError:
            from hashlib import sha256  # type: ignore[no-redef]
    return sha256


def _canonical(seccomp: dict[str, Any]) -> bytes:
    import _json

    encode = _json.make_encoder(None, None, _json.encode_basestring_ascii, None, ":", ",",
                                True, False, True)
    try:
        return "".join(encode(seccomp, 0)).encode()
    except (TypeError, ValueError) as err:
        raise SeccompError(f"{_FIELD}: not plain JSON data ({err})") from None


def cache_key(seccomp: dict[str, Any]) -> str:
    """sha256 of the canonical profile, the cache format, the machine and kernel."""
    u = os.uname()
    head = f"{_CACHE_FORMAT}\0{u.machine}\0{u.release}\0".encode()
    return _sha256()(head + _canonical(seccomp)).hexdigest()


def load_cached(seccomp: dict[str, Any], cache_dir: str) -> bytes:
    """:func:`compile_filter`, memoised in ``cache_dir`` (libseccomp untouched on a hit).

    A cache file holds a magic, a sha256 over the rest, the identity of the
    libseccomp that compiled it (path, size, mtime, inode: checked with one
    ``stat`` so an upgrade recompiles) and the program.  Anything damaged,
    foreign-owned or group/world-writable is ignored and rewritten.  Writes are
    atomic (temporary file + rename); a cache that cannot be written is not an
    error.
    """
    path = os.path.join(cache_dir, cache_key(seccomp) + ".bpf")
    program = _read_cache(path)
    if program is not None:
        return program
    program = compile_filter(seccomp)
    _write_cache(cache_dir, path, program)
    return program


def _read_cache(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022 or st.st_size > 1 << 20:
            return None
        data = os.read(fd, st.st_size + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(data) <= _HEAD or not data.startswith(_MAGIC):
        return None
    body = data[len(_MAGIC) + 32:]
    if _sha256()(body).digest() != data[len(_MAGIC):len(_MAGIC) + 32]:
        return None
    ident_len = int.from_bytes(body[:2], "little")
    ident = body[2:2 + ident_len]
    program = body[2 + ident_len:]
    if not program or len(program) % 8 or len(program) // 8 > BPF_MAXINSNS:
        return None
    if ident and ident != _lib_identity(ident.split(b"\0", 1)[0]):
        return None  # libseccomp changed since this was compiled
    return program


def _lib_identity(path: bytes) -> bytes:
    try:
        st = os.stat(path)
    except OSError:
        return b""
    return b"%s\0%d\0%d\0%d" % (path, st.st_size, st.st_mtime_ns, st.st_ino)


def _write_cache(cache_dir: str, path: str, program: bytes) -> None:
    from flatstack.runtime import _libseccomp as ls

    ident = _lib_identity(os.fsencode(ls.loaded_path()))
    body = len(ident).to_bytes(2, "little") + ident + program
    data = _MAGIC + _sha256()(body).digest() + body
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                     0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


# --------------------------------------------------------------------------- install


def install_filter(bpf: bytes, flags: int = 0) -> int:
    """Load ``bpf`` for the calling thread with ``seccomp(SECCOMP_SET_MODE_FILTER)``.

    Returns the notify listener fd when ``SECCOMP_FILTER_FLAG_NEW_LISTENER`` is
    in ``flags``, else 0.  Needs no_new_privs or CAP_SYS_ADMIN in the caller's
    user namespace.
    """
    count = len(bpf) // 8
    if not bpf or len(bpf) % 8 or count > BPF_MAXINSNS:
        raise SeccompError(f"{_FIELD}: not a BPF program ({len(bpf)} bytes)")
    try:
        result = _sys.seccomp_filter(flags, bpf)
    except OSError as err:
        raise SeccompError(f"{_FIELD}: loading the filter: "
                           f"{_install_reason(err.errno or 0, flags)}") from None
    if flags & FLAG_NEW_LISTENER:
        return result
    if result:
        raise SeccompError(f"{_FIELD}: loading the filter: thread {result} could not be "
                           "synchronised (SECCOMP_FILTER_FLAG_TSYNC)")
    return 0


def _install_reason(errno: int, flags: int) -> str:
    reason = os.strerror(errno).lower()
    if errno == 13:  # EACCES
        return f"{reason} (no_new_privs is not set and CAP_SYS_ADMIN is missing)"
    if errno == 16:  # EBUSY
        return f"{reason} (a filter with a notify listener is already installed)"
    if errno == 22:  # EINVAL
        return f"{reason} (flags {flags:#x} or the program were refused by this kernel)"
    return reason


def relay_listener(pid: int, remote_fd: int, listener_path: str, state: dict[str, Any],
                   metadata: str) -> None:
    """Take the notify fd ``remote_fd`` out of process ``pid`` (pidfd_getfd) and hand it
    to the agent at ``listener_path``, resolved in the runtime's (host) mount namespace."""
    from flatstack import _fastjson

    try:
        pidfd = syscall("pidfd_open", pid, 0, detail=str(pid))
    except KernelError as err:
        raise SeccompError(f"{_FIELD}.listenerPath: cannot reach the container process: "
                           f"{os.strerror(err.errno).lower()}") from None
    try:
        try:
            fd = syscall("pidfd_getfd", pidfd, remote_fd, 0, detail=str(pid))
        except KernelError as err:
            raise SeccompError(f"{_FIELD}.listenerPath: cannot take the listener from the "
                               f"container: {os.strerror(err.errno).lower()}") from None
    finally:
        os.close(pidfd)
    try:
        send_listener(fd, listener_path, _fastjson.dumps(state).encode(), metadata)
    finally:
        os.close(fd)


def send_listener(fd: int, listener_path: str, state_json: bytes, metadata: str) -> None:
    """Hand the notify fd to the agent at ``listener_path`` (runtime-spec "seccomp notify").

    ``state_json`` is the container's state (``id``, ``status``, ``pid``,
    ``bundle``, ``annotations``...).  The agent receives one message: the
    container process state ``{"ociVersion", "fds": ["seccompFd"], "pid",
    "metadata", "state"}`` as JSON with the fd attached as SCM_RIGHTS.  A
    document that already has ``fds`` and ``state`` is sent as it is.  The path
    is resolved in the caller's mount namespace: call this from the runtime
    (host side), not from the container after pivot_root.
    """
    import socket

    from flatstack import _fastjson

    try:
        state = _fastjson.loads(state_json)
    except ValueError as err:
        raise SeccompError(f"{_FIELD}: container state is not JSON: {err}") from None
    if isinstance(state, dict) and "fds" in state and "state" in state:
        doc = state
    else:
        doc = {"ociVersion": state.get("ociVersion", "1.2.0"), "fds": ["seccompFd"],
               "pid": state.get("pid"), "state": state}
        if metadata:
            doc["metadata"] = metadata
    payload = _fastjson.dumps(doc, compact=True).encode()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(10)
        sock.connect(listener_path)
        sent = socket.send_fds(sock, [payload], [fd])
        if sent < len(payload):
            sock.sendall(payload[sent:])
    except OSError as err:
        why = os.strerror(err.errno).lower() if err.errno else str(err)
        raise SeccompError(f"{_FIELD}.listenerPath: {listener_path}: {why}") from None
    finally:
        sock.close()
