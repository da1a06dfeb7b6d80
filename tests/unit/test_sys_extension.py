"""flatstack.kernel._sys: the runtime's raw system calls (a C extension)."""

from __future__ import annotations

import os
import platform
import resource

import pytest

from flatstack.errors import KernelError
from flatstack.kernel import _sys, libc

PR_GET_DUMPABLE, PR_SET_NAME, PR_GET_NAME = 3, 15, 16


def test_numbers_come_from_the_headers() -> None:
    assert libc.SYS is _sys.NUMBERS
    if platform.machine() == "x86_64":
        assert (_sys.NUMBERS["mount"], _sys.NUMBERS["pivot_root"], _sys.NUMBERS["setns"],
                _sys.NUMBERS["capset"]) == (165, 155, 308, 126)
    # From 424 on the numbers are the same on every architecture.
    assert (_sys.NUMBERS["clone3"], _sys.NUMBERS["mount_setattr"]) == (435, 442)


def test_ints_none_and_buffers() -> None:
    assert _sys.syscall(_sys.NUMBERS["prctl"], PR_GET_DUMPABLE, 0, 0, 0, 0) == 1
    name = bytearray(16)
    _sys.syscall(_sys.NUMBERS["prctl"], PR_GET_NAME, name)  # written through the address
    with open("/proc/self/comm", "rb") as f:
        assert bytes(name).rstrip(b"\0") == f.read().strip()
    old = bytearray(16)
    _sys.syscall(_sys.NUMBERS["prlimit64"], 0, 7, None, old)  # None is NULL
    soft = int.from_bytes(old[:8], "little")
    assert soft == resource.getrlimit(7)[0]


def test_negative_ints_are_twos_complement() -> None:
    # openat(AT_FDCWD = -100, "/", O_RDONLY): the directory fd of the root.
    fd = _sys.syscall(257 if platform.machine() == "x86_64" else 56, -100, b"/", os.O_RDONLY)
    try:
        assert os.path.samestat(os.fstat(fd), os.stat("/"))
    finally:
        os.close(fd)


def test_failure_raises_oserror_with_errno() -> None:
    with pytest.raises(OSError) as info:
        _sys.syscall(_sys.NUMBERS["umount2"], b"/nonexistent-flatstack", 0)
    assert info.value.errno == 2
    with pytest.raises(KernelError, match=r"umount2\(/x\): No such file"):
        libc.syscall("umount2", b"/nonexistent-flatstack", 0, detail="/x")
    assert libc.try_syscall("umount2", b"/nonexistent-flatstack", 0) == -2
    assert libc.try_syscall("no_such_call") == -38  # ENOSYS from the kernel


def test_bad_arguments_are_type_errors() -> None:
    with pytest.raises(TypeError, match="int, None or a buffer"):
        _sys.syscall(_sys.NUMBERS["umount2"], "/str-is-not-encoded", 0)
    with pytest.raises(TypeError):
        _sys.syscall(_sys.NUMBERS["prctl"], 1, 2, 3, 4, 5, 6, 7)
    with pytest.raises(OverflowError):
        _sys.syscall(_sys.NUMBERS["prctl"], 1 << 70)


def test_clone3_into_a_non_cgroup_fd_is_refused() -> None:
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError) as info:
            _sys.clone3(0, fd)  # no child is made
    finally:
        os.close(fd)
    assert info.value.errno in (9, 22)  # EBADF (not cgroup2), EINVAL


def test_seccomp_filter_checks_the_program() -> None:
    with pytest.raises(ValueError, match="not a BPF program"):
        _sys.seccomp_filter(0, b"\0" * 7)
    with pytest.raises(ValueError, match="not a BPF program"):
        _sys.seccomp_filter(0, b"")
