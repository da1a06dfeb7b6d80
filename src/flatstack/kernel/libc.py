"""Raw system calls by name, with errors as :class:`KernelError`.

The calls go through :mod:`flatstack.kernel._sys`, a small C extension built by
``make install`` (scripts/install-launcher.sh): ``import ctypes`` would cost a
tenth of a ``flatrun create``.  Its syscall numbers come from the headers of the
machine it was built on.
"""

from __future__ import annotations

import os

from flatstack.errors import FlatstackError, KernelError

try:
    from flatstack.kernel import _sys
except ImportError as err:  # pragma: no cover - a checkout without make install
    raise FlatstackError(f"flatstack.kernel._sys is not built ({err}): run make install"
                         ) from None

#: System call numbers by name (``_sys.NUMBERS``).
SYS: dict[str, int] = _sys.NUMBERS
# A call the build machine's headers did not know: the kernel answers ENOSYS.
_NO_SUCH_CALL = -1


def syscall(name: str, *args: int | bytes | bytearray | None, detail: str = "") -> int:
    """Invoke a system call by name: ints, None (NULL) or buffers (passed by address,
    a bytearray writable).  Raises KernelError naming the call and ``detail``."""
    try:
        return _sys.syscall(SYS.get(name, _NO_SUCH_CALL), *args)
    except OSError as err:
        raise KernelError(name, err.errno or 0, detail) from None


def try_syscall(name: str, *args: int | bytes | bytearray | None) -> int:
    """Like :func:`syscall`, but returns ``-errno`` instead of raising."""
    try:
        return _sys.syscall(SYS.get(name, _NO_SUCH_CALL), *args)
    except OSError as err:
        return -(err.errno or 0)


def errno_of(exc: BaseException) -> int:
    """The errno carried by an exception, or 0."""
    if isinstance(exc, KernelError):
        return exc.errno
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    return 0


def fsencode(path: str | bytes | None) -> bytes | None:
    """Encode a path for C (bytes objects end in a NUL), passing None through as NULL."""
    return None if path is None else os.fsencode(path)
