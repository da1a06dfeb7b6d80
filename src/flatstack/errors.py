"""One exception hierarchy for the whole project.

Every error a user can cause or meet derives from :class:`FlatstackError`; the
command-line front ends print ``<prog>: <message>`` and exit non-zero.
"""

from __future__ import annotations


class FlatstackError(Exception):
    """Base of every error flatstack reports to a user."""

    exit_code = 1


class ConfigError(FlatstackError):
    """A malformed or unsupported field in a configuration document."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


class ContainerNotFound(FlatstackError):
    """No container with that id exists under the state root."""

    def __init__(self, container_id: str) -> None:
        super().__init__(f"container {container_id!r} does not exist")
        self.container_id = container_id


class ContainerExists(FlatstackError):
    """A container with that id already exists."""

    def __init__(self, container_id: str) -> None:
        super().__init__(f"container {container_id!r} already exists")
        self.container_id = container_id


class InvalidState(FlatstackError):
    """The operation is not allowed in the container's current state."""


class KernelError(FlatstackError):
    """A system call failed; carries errno and the call that failed."""

    def __init__(self, call: str, errno: int, detail: str = "") -> None:
        import posix

        what = f"{call}({detail})" if detail else call
        super().__init__(f"{what}: {posix.strerror(errno)}")
        self.call = call
        self.errno = errno


class CgroupError(FlatstackError):
    """Creating, configuring or removing a control group failed."""


class SeccompError(FlatstackError):
    """A seccomp profile could not be compiled or loaded."""


class HookError(FlatstackError):
    """A lifecycle hook failed or timed out."""
