"""ctypes binding to libseccomp 2.5, loaded by soname on first use.

Only the compile path touches this module: a seccomp cache hit never imports
it, so ``libseccomp.so.2`` is never mapped into a container start that finds
its program on disk.  ``ctypes.util.find_library`` is avoided on purpose (it
spawns ``ldconfig``, about 50 ms); ``dlopen("libseccomp.so.2")`` takes 0.2 ms.
"""

from __future__ import annotations

import ctypes

from flatstack.errors import SeccompError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SONAME = "libseccomp.so.2"

# enum scmp_filter_attr (seccomp.h, libseccomp 2.5)
ATTR_ACT_DEFAULT = 1
ATTR_ACT_BADARCH = 2
ATTR_CTL_NNP = 3
ATTR_CTL_TSYNC = 4
ATTR_API_TSKIP = 5
ATTR_CTL_LOG = 6
ATTR_CTL_SSB = 7
ATTR_CTL_OPTIMIZE = 8
ATTR_API_SYSRAWRC = 9

#: SCMP_FLTATR_CTL_OPTIMIZE values: 1 = rule priority (linear), 2 = binary tree.
OPTIMIZE_BINARY_TREE = 2

#: __NR_SCMP_ERROR: a name libseccomp does not know.  Other negative numbers
#: are libseccomp's pseudo-syscalls (a name that exists on another arch).
NR_ERROR = -1


class ArgCmp(ctypes.Structure):
    """struct scmp_arg_cmp."""

    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


_lib: Any = None


def lib() -> Any:
    """The loaded library with argument and result types declared."""
    global _lib
    if _lib is not None:
        return _lib
    try:
        handle = ctypes.CDLL(SONAME, use_errno=True)
    except OSError:
        raise SeccompError(f"linux.seccomp: cannot load {SONAME} "
                           "(install the libseccomp2 package)") from None
    c_ctx = ctypes.c_void_p
    sig = {
        "seccomp_init": (c_ctx, [ctypes.c_uint32]),
        "seccomp_release": (None, [c_ctx]),
        "seccomp_arch_add": (ctypes.c_int, [c_ctx, ctypes.c_uint32]),
        "seccomp_arch_native": (ctypes.c_uint32, []),
        "seccomp_arch_resolve_name": (ctypes.c_uint32, [ctypes.c_char_p]),
        "seccomp_syscall_resolve_name": (ctypes.c_int, [ctypes.c_char_p]),
        "seccomp_syscall_resolve_name_arch": (ctypes.c_int, [ctypes.c_uint32, ctypes.c_char_p]),
        "seccomp_rule_add_array": (ctypes.c_int, [c_ctx, ctypes.c_uint32, ctypes.c_int,
                                                  ctypes.c_uint, ctypes.POINTER(ArgCmp)]),
        "seccomp_attr_set": (ctypes.c_int, [c_ctx, ctypes.c_int, ctypes.c_uint32]),
        "seccomp_export_bpf": (ctypes.c_int, [c_ctx, ctypes.c_int]),
        "seccomp_version": (ctypes.POINTER(_Version), []),
        "seccomp_api_get": (ctypes.c_uint, []),
    }
    for name, (restype, argtypes) in sig.items():
        fn = getattr(handle, name)
        fn.restype = restype
        fn.argtypes = argtypes
    _lib = handle
    return handle


def version() -> str:
    """libseccomp's version, e.g. ``2.5.4``."""
    v = lib().seccomp_version().contents
    return f"{v.major}.{v.minor}.{v.micro}"


def loaded_path() -> str:
    """The file the dynamic loader mapped for libseccomp ('' if not found)."""
    lib()
    with open("/proc/self/maps", "rb") as maps:
        for line in maps:
            if b"/libseccomp.so" in line:
                return line.split(None, 5)[5].strip().decode(errors="surrogateescape")
    return ""
