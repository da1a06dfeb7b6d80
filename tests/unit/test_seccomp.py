"""runtime/seccomp.py without loading a filter: validation, flags, compiling, the cache."""

from __future__ import annotations

import copy
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flatstack.errors import SeccompError
from flatstack.oci.seccomp_profile import default_profile
from flatstack.runtime import seccomp

REPO = Path(__file__).resolve().parents[2]


def base(**extra: Any) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [{"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"}],
    }
    profile.update(extra)
    return profile


def rules(*items: dict[str, Any]) -> dict[str, Any]:
    return base(syscalls=list(items))


def insns(program: bytes) -> list[tuple[int, int, int, int]]:
    return [struct.unpack_from("<HBBI", program, i) for i in range(0, len(program), 8)]


@pytest.fixture(scope="module")
def default_bpf() -> bytes:
    return seccomp.compile_filter(default_profile())


# --------------------------------------------------------------------------- validate

ALLOW = {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}


@pytest.mark.parametrize(("profile", "message"), [
    ([], "linux.seccomp: expected an object"),
    ({}, "linux.seccomp.defaultAction: required"),
    ({"defaultAction": "SCMP_ACT_FOO"},
     'linux.seccomp.defaultAction: unknown action "SCMP_ACT_FOO"'),
    ({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/x"},
     "linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be the default action"),
    (rules(ALLOW, ALLOW, ALLOW, {"names": ["getpid"], "action": "SCMP_ACT_FOO"}),
     'linux.seccomp.syscalls[3].action: unknown action "SCMP_ACT_FOO"'),
    (rules({"names": ["getpid"]}), "linux.seccomp.syscalls[0].action: required"),
    (base(architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_PDP11"]),
     'linux.seccomp.architectures[1]: unknown architecture "SCMP_ARCH_PDP11"'),
    (base(architectures="SCMP_ARCH_X86_64"), "linux.seccomp.architectures: expected an array"),
    (base(flags=["SECCOMP_FILTER_FLAG_BOGUS"]),
     'linux.seccomp.flags[0]: unknown flag "SECCOMP_FILTER_FLAG_BOGUS"'),
    (base(flags=["SECCOMP_FILTER_FLAG_NEW_LISTENER"]),
     'linux.seccomp.flags[0]: unknown flag "SECCOMP_FILTER_FLAG_NEW_LISTENER"'),
    (rules({"names": [], "action": "SCMP_ACT_ALLOW"}), "linux.seccomp.syscalls[0].names: required"),
    (rules({"names": ["read", 7], "action": "SCMP_ACT_ALLOW"}),
     "linux.seccomp.syscalls[0].names[1]: expected a syscall name, got 7"),
    (rules("read"), "linux.seccomp.syscalls[0]: expected an object"),
    (rules({"names": ["read"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ALMOST"}]}),
     'linux.seccomp.syscalls[0].args[0].op: unknown operator "SCMP_CMP_ALMOST"'),
    (rules({"names": ["read"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 1}]}),
     "linux.seccomp.syscalls[0].args[0].op: required"),
    (rules({"names": ["read"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}),
     "linux.seccomp.syscalls[0].args[0].index: expected an integer from 0 to 5, got 6"),
    (rules({"names": ["read"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}]}),
     "linux.seccomp.syscalls[0].args[0].value: expected an unsigned 64-bit integer"),
    (rules({"names": ["read"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "valueTwo": True, "op": "SCMP_CMP_EQ"}]}),
     "linux.seccomp.syscalls[0].args[0].valueTwo: expected an unsigned 64-bit integer"),
    (rules({"names": ["read"], "action": "SCMP_ACT_ALLOW", "errnoRet": 1}),
     "linux.seccomp.syscalls[0].errnoRet: not supported by action SCMP_ACT_ALLOW"),
    (rules({"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": 70000}),
     "linux.seccomp.syscalls[0].errnoRet: expected an integer from 0 to 65535"),
    (base(defaultAction="SCMP_ACT_KILL", defaultErrnoRet=1),
     "linux.seccomp.defaultErrnoRet: not supported by action SCMP_ACT_KILL"),
    (rules({"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}),
     "linux.seccomp.listenerPath: required when a rule uses SCMP_ACT_NOTIFY"),
    (dict(rules({"names": ["mkdir", "write"], "action": "SCMP_ACT_NOTIFY"}), listenerPath="/s"),
     "linux.seccomp.syscalls[0].names[1]: SCMP_ACT_NOTIFY cannot be used for write"),
    (base(listenerPath="/" + "x" * 120), "linux.seccomp.listenerPath: longer than"),
    (base(listenerMetadata="m"), "linux.seccomp.listenerMetadata: set without listenerPath"),
    (base(flags=["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]),
     "linux.seccomp.flags: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs a rule"),
])
def test_invalid_profiles_name_the_field(profile: Any, message: str) -> None:
    with pytest.raises(SeccompError) as err:
        seccomp.validate(profile)
    assert str(err.value).startswith(message)
    with pytest.raises(SeccompError):  # compile_filter validates first
        seccomp.compile_filter(profile)


def test_valid_profiles_pass() -> None:
    seccomp.validate(default_profile())
    seccomp.validate(default_profile("aarch64"))
    notify = rules({"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"})
    seccomp.validate(dict(notify, listenerPath="/run/agent.sock", listenerMetadata="x",
                          flags=list(seccomp.FLAGS)))


# --------------------------------------------------------------------------- flags


def test_filter_flags() -> None:
    assert seccomp.filter_flags(base()) == 0
    assert seccomp.filter_flags(base(flags=["SECCOMP_FILTER_FLAG_LOG",
                                            "SECCOMP_FILTER_FLAG_SPEC_ALLOW"])) == 2 | 4
    notify = dict(rules({"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}), listenerPath="/s")
    assert seccomp.filter_flags(notify) == seccomp.FLAG_NEW_LISTENER
    # TSYNC with a listener needs TSYNC_ESRCH, or the kernel refuses the pair.
    assert seccomp.filter_flags(dict(notify, flags=["SECCOMP_FILTER_FLAG_TSYNC"])) == 1 | 8 | 16
    assert seccomp.filter_flags(dict(notify, flags=["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"])
                                ) == 8 | 32


# --------------------------------------------------------------------------- compile


def test_default_profile_compiles(default_bpf: bytes) -> None:
    assert len(default_bpf) % 8 == 0
    assert 100 < len(default_bpf) // 8 <= seccomp.BPF_MAXINSNS
    # The ENOSYS stub comes first: load the arch, compare with the native arch.
    code, _, _, k = insns(default_bpf)[0]
    assert (code, k) == (0x20, 4)
    assert seccomp.ACTIONS["SCMP_ACT_ERRNO"] | 38 in {i[3] for i in insns(default_bpf)}


def test_default_profile_for_aarch64_compiles() -> None:
    program = seccomp.compile_filter(default_profile("aarch64"))
    assert len(program) % 8 == 0


def test_unknown_syscall_names_are_skipped() -> None:
    known = seccomp.compile_filter(rules({"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}))
    more = seccomp.compile_filter(rules({"names": ["getpid", "no_such_syscall", "frobnicate"],
                                         "action": "SCMP_ACT_ALLOW"}))
    assert known == more


def test_rule_with_the_default_action_is_skipped() -> None:
    plain = {"defaultAction": "SCMP_ACT_ALLOW",
             "syscalls": [{"names": ["keyctl"], "action": "SCMP_ACT_ERRNO"}]}
    redundant = copy.deepcopy(plain)
    redundant["syscalls"].append({"names": ["getpid", "read"], "action": "SCMP_ACT_ALLOW"})
    assert seccomp.compile_filter(redundant) == seccomp.compile_filter(plain)
    # The same errno as the default is the same action; another errno is not.
    errno_default = base()
    same = copy.deepcopy(errno_default)
    same["syscalls"].append({"names": ["close"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1})
    assert seccomp.compile_filter(same) == seccomp.compile_filter(errno_default)
    other = copy.deepcopy(errno_default)
    other["syscalls"].append({"names": ["close"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38})
    assert seccomp.compile_filter(other) != seccomp.compile_filter(errno_default)


def test_same_index_conditions_become_separate_rules() -> None:
    profile = rules({"names": ["getpgid"], "action": "SCMP_ACT_ALLOW",
                     "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                              {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]})
    assert len(seccomp.compile_filter(profile)) % 8 == 0


def test_no_enosys_stub_for_permissive_defaults() -> None:
    for default in ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG"):
        program = seccomp.compile_filter(
            {"defaultAction": default, "syscalls": [{"names": ["keyctl"],
                                                     "action": "SCMP_ACT_ERRNO"}]})
        assert seccomp.ACTIONS["SCMP_ACT_ERRNO"] | 38 not in {i[3] for i in insns(program)}


def test_cross_endian_arch_is_an_error() -> None:
    assert os.uname().machine == "x86_64", "the audit arch and numbers below are x86_64's"
    with pytest.raises(SeccompError, match=r"architectures\[1\]: cannot add SCMP_ARCH_S390X"):
        seccomp.compile_filter(base(architectures=["SCMP_ARCH_X86", "SCMP_ARCH_S390X"]))


def test_install_rejects_garbage() -> None:
    with pytest.raises(SeccompError, match="not a BPF program"):
        seccomp.install_filter(b"\0" * 12)
    with pytest.raises(SeccompError, match="not a BPF program"):
        seccomp.install_filter(b"")


# --------------------------------------------------------------------------- cache


def test_cache_key_is_canonical() -> None:
    a = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "A"}]}
    b = {"syscalls": [{"action": "A", "names": ["x"]}], "defaultAction": "SCMP_ACT_ALLOW"}
    assert seccomp.cache_key(a) == seccomp.cache_key(b)
    assert seccomp.cache_key(a) != seccomp.cache_key(dict(a, defaultErrnoRet=1))


def test_cache_roundtrip_does_not_recompile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            default_bpf: bytes) -> None:
    cache = str(tmp_path / "cache")
    profile = default_profile()
    assert seccomp.load_cached(profile, cache) == default_bpf
    files = os.listdir(cache)
    assert files == [seccomp.cache_key(profile) + ".bpf"]
    assert os.stat(cache).st_mode & 0o777 == 0o700

    def boom(_: Any) -> bytes:
        raise AssertionError("compiled on a cache hit")

    monkeypatch.setattr(seccomp, "compile_filter", boom)
    assert seccomp.load_cached(copy.deepcopy(profile), cache) == default_bpf


@pytest.mark.parametrize("damage", ["truncate_odd", "flip_program", "flip_digest", "magic",
                                    "empty", "world_writable", "libseccomp_changed"])
def test_damaged_cache_is_recompiled(tmp_path: Path, default_bpf: bytes, damage: str) -> None:
    cache = str(tmp_path)
    profile = default_profile()
    seccomp.load_cached(profile, cache)
    path = tmp_path / (seccomp.cache_key(profile) + ".bpf")
    data = bytearray(path.read_bytes())
    if damage == "truncate_odd":
        data = data[:-3]  # program length no longer a multiple of 8
    elif damage == "flip_program":
        data[-5] ^= 0xFF
    elif damage == "flip_digest":
        data[10] ^= 0x01
    elif damage == "magic":
        data[:8] = b"NOTBPF!!"
    elif damage == "empty":
        data = bytearray()
    elif damage == "libseccomp_changed":
        # Rewrite a valid file whose recorded libseccomp identity no longer matches.
        ident_at = 8 + 32 + 2
        n = int.from_bytes(data[40:42], "little")
        ident = bytes(data[ident_at:ident_at + n]).replace(b"\0", b"\0" + b"9", 1)
        body = len(ident).to_bytes(2, "little") + ident + bytes(data[ident_at + n:])
        data = bytearray(seccomp._MAGIC + seccomp._sha256()(body).digest() + body)
    path.write_bytes(bytes(data))
    if damage == "world_writable":
        path.chmod(0o666)
    calls = []
    real = seccomp.compile_filter

    def counting(p: dict[str, Any]) -> bytes:
        calls.append(1)
        return real(p)

    seccomp.compile_filter = counting  # type: ignore[assignment]
    try:
        assert seccomp.load_cached(profile, cache) == default_bpf
    finally:
        seccomp.compile_filter = real  # type: ignore[assignment]
    assert calls == [1]
    assert seccomp._read_cache(str(path)) == default_bpf  # rewritten, healthy again
    assert path.stat().st_mode & 0o777 == 0o600


def test_unwritable_cache_still_compiles(tmp_path: Path, default_bpf: bytes) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert seccomp.load_cached(default_profile(), str(blocker / "cache")) == default_bpf


def test_cache_hit_never_loads_libseccomp(tmp_path: Path) -> None:
    """A fresh interpreter on a warm cache maps no libseccomp and imports no binding."""
    cache = str(tmp_path)
    seccomp.load_cached(default_profile(), cache)
    script = f"""
import json, sys, time
t0 = time.perf_counter()
from flatstack.runtime import seccomp
t1 = time.perf_counter()
from flatstack.oci.seccomp_profile import default_profile
profile = default_profile()
t2 = time.perf_counter()
bpf = seccomp.load_cached(profile, {cache!r})
t3 = time.perf_counter()
maps = open("/proc/self/maps").read()
print(json.dumps({{"libseccomp": "libseccomp" in maps,
                  "binding": "flatstack.runtime._libseccomp" in sys.modules,
                  "insns": len(bpf) // 8, "import_ms": (t1 - t0) * 1e3,
                  "load_ms": (t3 - t2) * 1e3}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, cwd=REPO)
    result = json.loads(out.stdout)
    assert result["libseccomp"] is False
    assert result["binding"] is False
    assert result["insns"] > 100
    assert result["load_ms"] < 20, result


def test_cache_miss_loads_libseccomp(tmp_path: Path) -> None:
    script = f"""
from flatstack.runtime import seccomp
from flatstack.oci.seccomp_profile import default_profile
seccomp.load_cached(default_profile(), {str(tmp_path)!r})
print("libseccomp" in open("/proc/self/maps").read())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.strip() == "True"


# --------------------------------------------------------------------------- BPF emulation

AUDIT_I386, AUDIT_X86_64, AUDIT_AARCH64 = 0x40000003, 0xC000003E, 0xC00000B7
X32 = 0x40000000
RET_ALLOW, RET_EPERM, RET_ENOSYS = 0x7FFF0000, 0x00050001, 0x00050026


def run_bpf(program: bytes, arch: int, nr: int, *args: int) -> int:
    """Evaluate a seccomp classic-BPF program for one syscall (the opcodes libseccomp emits)."""
    data = struct.pack("<IIQ6Q", nr, arch, 0, *(list(args) + [0] * (6 - len(args))))
    code = insns(program)
    acc = x = pc = 0
    mem = [0] * 16
    while True:
        op, jt, jf, k = code[pc]
        pc += 1
        if op == 0x20:  # ld [k]
            acc = struct.unpack_from("<I", data, k)[0]
        elif op == 0x60:  # ld M[k]
            acc = mem[k]
        elif op == 0x02:  # st M[k]
            mem[k] = acc
        elif op == 0x61:  # ldx M[k]
            x = mem[k]
        elif op == 0x07:  # tax
            x = acc
        elif op == 0x87:  # txa
            acc = x
        elif op == 0x54:  # and #k
            acc &= k
        elif op == 0x05:  # ja
            pc += k
        elif op in (0x15, 0x25, 0x35, 0x45):  # jeq/jgt/jge/jset #k
            hit = {0x15: acc == k, 0x25: acc > k, 0x35: acc >= k, 0x45: bool(acc & k)}[op]
            pc += jt if hit else jf
        elif op == 0x06:  # ret #k
            return k
        elif op == 0x16:  # ret a
            return acc
        else:
            raise AssertionError(f"opcode {op:#x} not emulated")


def test_compiled_default_profile_per_arch(default_bpf: bytes) -> None:
    assert os.uname().machine == "x86_64", "the audit arch and numbers below are x86_64's"
    cases = [
        (AUDIT_X86_64, 0, (), RET_ALLOW),  # read
        (AUDIT_X86_64, 250, (), RET_EPERM),  # keyctl
        (AUDIT_X86_64, 435, (), RET_ENOSYS),  # clone3: explicit rule
        (AUDIT_X86_64, 1000, (), RET_ENOSYS),  # beyond the profile: stub
        (AUDIT_X86_64, 0xFFFFFFFF, (), RET_ENOSYS),  # syscall(-1)
        (AUDIT_X86_64, 56, (0x11,), RET_ALLOW),  # clone(SIGCHLD)
        (AUDIT_X86_64, 56, (0x10000011,), RET_EPERM),  # clone(CLONE_NEWUSER|SIGCHLD)
        (AUDIT_X86_64, 41, (2,), RET_ALLOW),  # socket(AF_INET)
        (AUDIT_X86_64, 41, (40,), RET_EPERM),  # socket(AF_VSOCK)
        (AUDIT_X86_64, 135, (0xFFFFFFFF,), RET_ALLOW),  # personality(query)
        (AUDIT_X86_64, 135, (0x40000,), RET_EPERM),  # personality(ADDR_NO_RANDOMIZE)
        (AUDIT_X86_64, X32 | 0, (), RET_ALLOW),  # x32 read
        (AUDIT_X86_64, X32 | 250, (), RET_EPERM),  # x32 keyctl
        (AUDIT_X86_64, X32 | 1000, (), RET_ENOSYS),  # x32 beyond the profile
        (AUDIT_I386, 3, (), RET_ALLOW),  # i386 read
        (AUDIT_I386, 288, (), RET_EPERM),  # i386 keyctl
        (AUDIT_I386, 102, (), RET_ALLOW),  # i386 socketcall
        (AUDIT_I386, 120, (0x11,), RET_ALLOW),  # i386 clone(SIGCHLD)
        (AUDIT_I386, 120, (0x20000011,), RET_EPERM),  # i386 clone(CLONE_NEWPID|SIGCHLD)
        (AUDIT_I386, 1000, (), RET_ENOSYS),
    ]
    for arch, nr, args, expected in cases:
        assert run_bpf(default_bpf, arch, nr, *args) == expected, (hex(arch), nr, args)
    # An architecture the filter does not cover: libseccomp's bad-arch action (kill).
    assert run_bpf(default_bpf, AUDIT_AARCH64, 63) == 0


def test_64_bit_argument_comparisons() -> None:
    program = seccomp.compile_filter({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getpgid"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 1, "value": 0x1_0000_0000, "op": "SCMP_CMP_GT"}]}]})
    native = AUDIT_X86_64 if os.uname().machine == "x86_64" else AUDIT_AARCH64
    nr = 121 if native == AUDIT_X86_64 else 155
    assert run_bpf(program, native, nr, 0, 0x1_0000_0001) == RET_EPERM
    assert run_bpf(program, native, nr, 0, 0xFFFF_FFFF) == RET_ALLOW
