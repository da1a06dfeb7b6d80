"""The exec trampoline: flatrun's Python never execs the container's program itself.

CVE-2019-5736 (the ``#!/proc/self/exe`` variant): when a process execs a script whose
interpreter line is ``/proc/self/exe``, the kernel takes the interpreter from the
exec'ing process, which for a runtime is the runtime's own host binary — here the
host's Python interpreter. It would then run inside the container, where a process
can open its ``/proc/<pid>/exe`` and, once it has exited, reopen the file for
writing. With a user namespace the container's root cannot write it; without one
(how podman and containerd call runtimes by default) it could.

So the init (and ``exec``'s process) execs a tiny static program (``trampoline.c``,
no libc, built by ``make install``) from a sealed memfd, which execs the real
program. At that moment ``/proc/self/exe`` is the memfd: a private, sealed copy that
belongs to nothing on the host. Capabilities, no_new_privs, seccomp and Landlock
see two ordinary execve calls of unprivileged files, so the result is the same as one.
"""

from __future__ import annotations

import errno
import os

from flatstack.errors import FlatstackError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

BINARY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_trampoline")
MARKER = "flatrun-exec"  # argv[0]; anything else (e.g. use as an interpreter) is refused
_MFD_EXEC = 0x10  # Linux 6.3+: executable memfd even under vm.memfd_noexec=1
_SEALS = 0x0001 | 0x0002 | 0x0004 | 0x0008  # F_SEAL_SEAL | SHRINK | GROW | WRITE


def sealed_copy(min_fd: int = 3) -> int:
    """A close-on-exec memfd (numbered ``min_fd`` or above, clear of preserved fds)
    holding the trampoline, sealed against any change."""
    import fcntl

    try:
        with open(BINARY, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FlatstackError(f"the exec trampoline {BINARY} is missing; run `make install`"
                             ) from None
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    try:
        fd = os.memfd_create(MARKER, flags | _MFD_EXEC)
    except OSError as err:
        if err.errno != errno.EINVAL:  # a kernel older than MFD_EXEC
            raise
        fd = os.memfd_create(MARKER, flags)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
        if fd < min_fd:
            high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, min_fd)
            os.close(fd)
            fd = high
    except BaseException:
        os.close(fd)
        raise
    return fd


def exec_program(trampoline_fd: int, path: str, args: list[str],
                 env: dict[str, str]) -> NoReturn:
    """Replace this process with ``path`` (argv ``args``) by way of the trampoline.

    execveat(fd) first; a seccomp profile that refuses execveat still allows the
    same file through ``/proc/self/fd`` with plain execve. Raises OSError only if
    neither works.
    """
    argv = [MARKER, path, *args]
    try:
        os.execve(trampoline_fd, argv, env)
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOSYS, errno.EACCES):
            raise
    os.execve(f"/proc/self/fd/{trampoline_fd}", argv, env)
