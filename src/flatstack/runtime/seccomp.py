"""Seccomp: compile linux.seccomp with libseccomp, cache the BPF, install it.

libseccomp is loaded with ctypes by soname (``ctypes.util.find_library``
spawns ldconfig, about 50 ms).  The compiled program is cached under the
runtime root, keyed by the profile, the libseccomp version and the machine, so
a cache hit never loads libseccomp at all: the hot path reads a file and makes
one ``seccomp(2)`` call.
"""

from __future__ import annotations

import ctypes
import os

from flatstack import _fastjson
from flatstack.errors import SeccompError
from flatstack.kernel.libc import syscall

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

ACTIONS: dict[str, int] = {
    "SCMP_ACT_KILL": 0x00000000, "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000, "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000, "SCMP_ACT_TRACE": 0x7FF00000, "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000, "SCMP_ACT_NOTIFY": 0x7FC00000,
}
OPERATORS: dict[str, int] = {
    "SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7,
}
ARCHES: dict[str, str] = {
    "SCMP_ARCH_X86": "x86", "SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_X32": "x32",
    "SCMP_ARCH_ARM": "arm", "SCMP_ARCH_AARCH64": "aarch64", "SCMP_ARCH_MIPS": "mips",
    "SCMP_ARCH_MIPS64": "mips64", "SCMP_ARCH_MIPS64N32": "mips64n32",
    "SCMP_ARCH_MIPSEL": "mipsel", "SCMP_ARCH_MIPSEL64": "mipsel64",
    "SCMP_ARCH_MIPSEL64N32": "mipsel64n32", "SCMP_ARCH_PPC": "ppc", "SCMP_ARCH_PPC64": "ppc64",
    "SCMP_ARCH_PPC64LE": "ppc64le", "SCMP_ARCH_S390": "s390", "SCMP_ARCH_S390X": "s390x",
    "SCMP_ARCH_RISCV64": "riscv64",
}
FLAGS: dict[str, int] = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1, "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4, "SECCOMP_FILTER_FLAG_NEW_LISTENER": 8,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 32,
}
SECCOMP_SET_MODE_FILTER = 1
_ERRNO_EPERM = 1
_CACHE_MAGIC = b"FLATBPF1"


def validate(seccomp: dict[str, Any]) -> None:
    """Check the profile's shape; SeccompError names the field."""
    f = "linux.seccomp"
    if seccomp.get("defaultAction") not in ACTIONS:
        raise SeccompError(f"{f}.defaultAction: unknown action {seccomp.get('defaultAction')!r}")
    for i, arch in enumerate(seccomp.get("architectures") or []):
        if arch not in ARCHES:
            raise SeccompError(f"{f}.architectures[{i}]: unknown architecture {arch!r}")
    for i, flag in enumerate(seccomp.get("flags") or []):
        if flag not in FLAGS:
            raise SeccompError(f"{f}.flags[{i}]: unknown flag {flag!r}")
    notify = seccomp.get("defaultAction") == "SCMP_ACT_NOTIFY"
    syscalls = seccomp.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise SeccompError(f"{f}.syscalls: expected array")
    for i, rule in enumerate(syscalls):
        rf = f"{f}.syscalls[{i}]"
        if not isinstance(rule, dict):
            raise SeccompError(f"{rf}: expected object")
        names = rule.get("names")
        if not isinstance(names, list) or not names:
            raise SeccompError(f"{rf}.names: required, a non-empty array of syscall names")
        for j, name in enumerate(names):
            if not isinstance(name, str):
                raise SeccompError(f"{rf}.names[{j}]: expected string")
        if rule.get("action") not in ACTIONS:
            raise SeccompError(f"{rf}.action: unknown action {rule.get('action')!r}")
        notify = notify or rule["action"] == "SCMP_ACT_NOTIFY"
        for j, arg in enumerate(rule.get("args") or []):
            af = f"{rf}.args[{j}]"
            if not isinstance(arg, dict):
                raise SeccompError(f"{af}: expected object")
            if arg.get("op") not in OPERATORS:
                raise SeccompError(f"{af}.op: unknown operator {arg.get('op')!r}")
            index = arg.get("index")
            if not isinstance(index, int) or not 0 <= index <= 5:
                raise SeccompError(f"{af}.index: must be an integer from 0 to 5")
            for key in ("value", "valueTwo"):
                if arg.get(key) is not None and not isinstance(arg[key], int):
                    raise SeccompError(f"{af}.{key}: expected integer")
    if notify and not seccomp.get("listenerPath"):
        raise SeccompError(f"{f}.listenerPath: required when an action is SCMP_ACT_NOTIFY")


def filter_flags(seccomp: dict[str, Any]) -> int:
    """seccomp(2) flags for linux.seccomp.flags (plus NEW_LISTENER for notify)."""
    flags = 0
    for name in seccomp.get("flags") or []:
        flags |= FLAGS.get(name, 0)
    if seccomp.get("defaultAction") == "SCMP_ACT_NOTIFY" or any(
            rule.get("action") == "SCMP_ACT_NOTIFY" for rule in seccomp.get("syscalls") or []):
        flags |= FLAGS["SECCOMP_FILTER_FLAG_NEW_LISTENER"]
    return flags


def _action(name: str, errno_ret: int | None) -> int:
    value = ACTIONS[name]
    if name in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):
        value |= (_ERRNO_EPERM if errno_ret is None else errno_ret) & 0xFFFF
    return value


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


_lib: Any = None


def _libseccomp() -> Any:
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except OSError:
            raise SeccompError("linux.seccomp: libseccomp.so.2 is not installed "
                               "(Debian package libseccomp2)") from None
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
        lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_arch_native.restype = ctypes.c_uint32
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                               ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
        lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
        lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.seccomp_version.restype = ctypes.c_void_p
        _lib = lib
    return _lib


def libseccomp_version() -> str:
    class _Version(ctypes.Structure):
        _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]

    ptr = _libseccomp().seccomp_version()
    v = ctypes.cast(ptr, ctypes.POINTER(_Version)).contents
    return f"{v.major}.{v.minor}.{v.micro}"


def compile_filter(seccomp: dict[str, Any]) -> bytes:
    """Compile a linux.seccomp object to a classic BPF program (sock_filter array)."""
    validate(seccomp)
    lib = _libseccomp()
    default = _action(seccomp["defaultAction"], seccomp.get("defaultErrnoRet"))
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise SeccompError("linux.seccomp: seccomp_init failed")
    try:
        lib.seccomp_attr_set(ctx, 3, 0)  # SCMP_FLTATR_CTL_NNP: flatrun sets no_new_privs
        lib.seccomp_attr_set(ctx, 7, 1)  # SCMP_FLTATR_CTL_OPTIMIZE: 1 = priority/no tree
        for i, arch in enumerate(seccomp.get("architectures") or []):
            token = lib.seccomp_arch_resolve_name(ARCHES[arch].encode())
            if token == 0:
                raise SeccompError(f"linux.seccomp.architectures[{i}]: {arch} is not "
                                   "supported by this libseccomp")
            rc = lib.seccomp_arch_add(ctx, token)
            if rc not in (0, -17):  # -EEXIST: the native arch is already there
                raise SeccompError(f"linux.seccomp.architectures[{i}]: cannot add {arch}: "
                                   f"{os.strerror(-rc)}")
        for i, rule in enumerate(seccomp.get("syscalls") or []):
            _add_rule(lib, ctx, rule, default, i)
        fd = os.memfd_create("flatrun-seccomp", os.MFD_CLOEXEC)
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
            if rc < 0:
                raise SeccompError(f"linux.seccomp: exporting the filter failed: "
                                   f"{os.strerror(-rc)}")
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)


def _add_rule(lib: Any, ctx: int, rule: dict[str, Any], default: int, index: int) -> None:
    action = _action(rule["action"], rule.get("errnoRet"))
    if action == default:
        return  # runc skips rules that repeat the default action
    args = rule.get("args") or []
    cmps = [(a["index"], OPERATORS[a["op"]], int(a.get("value") or 0) & 0xFFFFFFFFFFFFFFFF,
             int(a.get("valueTwo") or 0) & 0xFFFFFFFFFFFFFFFF) for a in args]
    # libseccomp takes one comparison per argument index in a rule; with repeated
    # indexes the comparisons become separate rules (any of them matches), as runc does.
    groups = [cmps] if len({c[0] for c in cmps}) == len(cmps) else [[c] for c in cmps]
    for name in rule["names"]:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr == -1:
            continue  # unknown to this libseccomp: skipped, like runc
        for group in groups:
            array = (_ArgCmp * max(1, len(group)))(*[_ArgCmp(*c) for c in group])
            rc = lib.seccomp_rule_add_array(ctx, action, nr, len(group), array)
            if rc < 0:
                raise SeccompError(f"linux.seccomp.syscalls[{index}]: adding a rule for "
                                   f"{name}: {os.strerror(-rc)}")


def _cache_key(seccomp: dict[str, Any]) -> str:
    try:
        from _sha256 import sha256  # C, no OpenSSL load
    except ImportError:  # Python 3.12+
        from hashlib import sha256
    canonical = _canonical(seccomp)
    return sha256(f"{os.uname().machine}\0{canonical}".encode()).hexdigest()


def _canonical(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(f"{_fastjson.dumps(k)}:{_canonical(value[k])}"
                              for k in sorted(value)) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_canonical(v) for v in value) + "]"
    return _fastjson.dumps(value)


def load_cached(seccomp: dict[str, Any], cache_dir: str) -> bytes:
    """The compiled program, from the cache when possible (no libseccomp then)."""
    key = _cache_key(seccomp)
    path = os.path.join(cache_dir, key)
    try:
        with open(path, "rb") as f:
            data = f.read()
        bpf = _check_cache(data)
        if bpf is not None:
            return bpf
    except OSError:
        pass
    bpf = compile_filter(seccomp)
    try:
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(_CACHE_MAGIC + _digest(bpf) + bpf)
        os.rename(tmp, path)
    except OSError:
        pass  # a read-only or full cache is not an error; we compiled anyway
    return bpf


def _digest(data: bytes) -> bytes:
    try:
        from _sha256 import sha256
    except ImportError:
        from hashlib import sha256
    return sha256(data).digest()


def _check_cache(data: bytes) -> bytes | None:
    """The program inside a cache file, or None if it is damaged."""
    head = len(_CACHE_MAGIC) + 32
    if len(data) <= head or not data.startswith(_CACHE_MAGIC):
        return None
    bpf = data[head:]
    if len(bpf) % 8 or _digest(bpf) != data[len(_CACHE_MAGIC):head]:
        return None
    return bpf


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_filter(bpf: bytes, flags: int = 0) -> int:
    """Load the program for the calling thread; returns a listener fd or 0."""
    buf = ctypes.create_string_buffer(bpf, len(bpf))
    prog = _SockFprog(len(bpf) // 8, ctypes.addressof(buf))
    result = syscall("seccomp", SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(prog),
                     detail="SECCOMP_SET_MODE_FILTER")
    return result if flags & FLAGS["SECCOMP_FILTER_FLAG_NEW_LISTENER"] else 0


def send_listener(fd: int, listener_path: str, state: bytes, metadata: str) -> None:
    """Send the notify fd to listenerPath with the container state (runtime-spec)."""
    import socket

    payload = state
    if metadata:
        doc = _fastjson.loads(state)
        doc["metadata"] = metadata
        payload = _fastjson.dumps(doc).encode()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(listener_path)
        socket.send_fds(sock, [payload], [fd])
    except OSError as err:
        raise SeccompError(f"linux.seccomp.listenerPath: {listener_path}: "
                           f"{os.strerror(err.errno or 0).lower()}") from None
    finally:
        sock.close()
