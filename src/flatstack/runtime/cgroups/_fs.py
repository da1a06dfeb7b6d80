"""The filesystem layer of the cgroup managers: control files, directories, mounts.

Every read and write of cgroupfs goes through here, so the unit tests can point a
manager at a temporary directory tree and check what would be written.
"""

from __future__ import annotations

import errno
import posix
import time

from flatstack import _fastos
from flatstack.errors import CgroupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

_WRITE_FLAGS = posix.O_WRONLY | posix.O_TRUNC | posix.O_CLOEXEC
#: What a write to a cgroup the caller was not delegated fails with (rootless: skip it).
DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)


def why(err: OSError) -> str:
    """An errno as a lowercase reason."""
    return posix.strerror(err.errno or 0).lower()


def add_proc(directory: str, pid: bytes) -> None:
    """Move the process ``pid`` (its number as ASCII) into the cgroup ``directory``.

    Raises OSError: the callers know which hierarchy failed and word the error.
    """
    fd = posix.open(f"{directory}/cgroup.procs", posix.O_WRONLY | posix.O_CLOEXEC)
    try:
        posix.write(fd, pid)
    finally:
        posix.close(fd)


def open_tasks(directory: str) -> int:
    """An fd of the v1 cgroup ``directory``'s ``tasks`` file, open for writing.

    The kernel checks a ``tasks`` write against the credentials of whoever opened the
    file, so a child that inherits this fd can join the cgroup even from inside a new
    user namespace (``join_self``).  Raises CgroupError."""
    try:
        return posix.open(f"{directory}/tasks", posix.O_WRONLY | posix.O_CLOEXEC)
    except OSError as err:
        raise CgroupError(f"cannot join cgroup {directory}: {why(err)}") from None


def join_self(tasks_fd: int, directory: str) -> None:
    """Move the calling thread (the whole process, when it has one thread) into the v1
    cgroup ``directory`` by writing ``0`` to its ``tasks`` file (``open_tasks``), then
    close the fd.  Raises CgroupError."""
    try:
        posix.write(tasks_fd, b"0")
    except OSError as err:
        raise CgroupError(f"cannot join cgroup {directory}: {why(err)}") from None
    finally:
        posix.close(tasks_fd)


def write(directory: str, name: str, value: str | int, field: str) -> None:
    """Write one control file; a failure names the config field and the file."""
    path = f"{directory}/{name}"
    try:
        fd = posix.open(path, _WRITE_FLAGS)
    except OSError as err:
        raise WriteError(field, path, value, err) from None
    try:
        posix.write(fd, str(value).encode())
    except OSError as err:
        raise WriteError(field, path, value, err) from None
    finally:
        posix.close(fd)


class WriteError(CgroupError):
    """A control file could not be written; keeps the errno for callers that care."""

    def __init__(self, field: str, path: str, value: str | int, err: OSError) -> None:
        if err.errno == errno.ENOENT:
            detail = f"{path} does not exist (controller not available here?)"
        else:
            detail = f"writing {str(value)!r} to {path}: {why(err)}"
        super().__init__(f"{field}: {detail}" if field else detail)
        self.errno = err.errno or 0
        self.path = path


def read(directory: str, name: str) -> str | None:
    """A control file's content without the trailing newline, or None if unreadable."""
    try:
        with open(f"{directory}/{name}", "rb") as f:
            return f.read().decode().strip()
    except OSError:
        return None


def read_int(directory: str, name: str, maximum: int = 0) -> int:
    """A single number; ``max`` reads as ``maximum``, anything unreadable as 0."""
    text = read(directory, name)
    if not text:
        return 0
    if text == "max":
        return maximum
    try:
        return int(text)
    except ValueError:
        return 0


def read_keyed(directory: str, name: str) -> dict[str, int]:
    """A flat keyed file (``key value`` per line) such as memory.stat or cpu.stat."""
    result: dict[str, int] = {}
    for line in (read(directory, name) or "").splitlines():
        key, _, value = line.partition(" ")
        try:
            result[key] = int(value)
        except ValueError:
            continue
    return result


def exists(directory: str, name: str = "") -> bool:
    return _fastos.exists(f"{directory}/{name}" if name else directory)


def procs(directory: str, recursive: bool = True) -> list[int]:
    """The pids in ``cgroup.procs`` of a cgroup (and of its descendants)."""
    pids: list[int] = []
    dirs = [directory]
    while dirs:
        current = dirs.pop()
        text = read(current, "cgroup.procs")
        if text is None:
            continue
        pids.extend(int(p) for p in text.split())
        if recursive:
            try:
                with posix.scandir(current) as it:
                    dirs.extend(e.path for e in it if e.is_dir(follow_symlinks=False))
            except OSError:
                pass
    return pids


def mkdir_p(path: str, created: list[str]) -> None:
    """``mkdir -p``; appends (top-down) the directories this call created."""
    missing = []
    probe = path
    while not _fastos.is_dir(probe):
        missing.append(probe)
        parent = _fastos.dirname(probe)
        if parent == probe:
            break
        probe = parent
    for directory in reversed(missing):
        try:
            posix.mkdir(directory, 0o755)
        except FileExistsError:
            continue
        except OSError as err:
            raise MkdirError(directory, err) from None
        created.append(directory)


class MkdirError(CgroupError):
    """A cgroup directory could not be created."""

    def __init__(self, path: str, err: OSError) -> None:
        super().__init__(f"linux.cgroupsPath: cannot create {path}: {why(err)}")
        self.errno = err.errno or 0


def subdirs_bottom_up(path: str) -> list[str]:
    """Every directory below ``path``, deepest first (child cgroups a container made)."""
    found: list[str] = []
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            with posix.scandir(current) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        found.append(entry.path)
                        stack.append(entry.path)
        except OSError:
            continue
    found.sort(key=lambda p: p.count("/"), reverse=True)
    return found


def remove_parents(created: list[str], leaves: list[str]) -> None:
    """Remove the parent directories a manager created above its leaves, deepest
    first; one still shared with another container (or not empty) is kept."""
    for directory in sorted(set(created) - set(leaves), key=len, reverse=True):
        rmdir(directory)


def rmdir(path: str) -> int:
    """rmdir, returning 0 or the errno (ENOENT counts as success)."""
    try:
        posix.rmdir(path)
    except FileNotFoundError:
        return 0
    except OSError as err:
        return err.errno or errno.EIO
    return 0


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` with a short, growing sleep; False on timeout."""
    if predicate():
        return True
    deadline = time.monotonic() + timeout
    delay = 0.0002
    while True:
        time.sleep(delay)
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        delay = min(delay * 2, 0.01)


def cgroup_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[tuple[str, str, str, str]]:
    """(mount point, root in the hierarchy, fstype, super options) of cgroup mounts,
    first mount of each hierarchy only."""
    result = []
    seen = set()
    with open(mountinfo, "rb") as f:
        lines = f.read().decode("utf-8", "surrogateescape").splitlines()
    for line in lines:
        if " - cgroup" not in line:
            continue
        pre, _, post = line.partition(" - ")
        fields = pre.split()
        fstype, _source, options = [*post.split(), "", "", ""][:3]
        if fstype not in ("cgroup", "cgroup2") or fields[2] in seen:
            continue
        seen.add(fields[2])
        result.append((_fastos.unescape_mountinfo(fields[4]),
                       _fastos.unescape_mountinfo(fields[3]), fstype, options))
    return result


def own_cgroups(path: str = "/proc/self/cgroup") -> dict[str, str]:
    """This process's cgroup per hierarchy, keyed by each controller (``name=x`` for
    named hierarchies, ``""`` for cgroup2)."""
    result: dict[str, str] = {}
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return result
    for line in lines:
        _hid, controllers, cgpath = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            result[name] = cgpath
    return result


def hugepage_sizes(sysfs: str = "/sys/kernel/mm/hugepages") -> list[str]:
    """The huge page sizes this kernel supports, spelled as in cgroup file names."""
    sizes = []
    try:
        names = posix.listdir(sysfs)
    except OSError:
        return sizes
    for name in names:
        if name.startswith("hugepages-") and name.endswith("kB"):
            sizes.append(hugepage_name(int(name[10:-2]) * 1024))
    return sizes


def hugepage_name(size: int) -> str:
    """A size in bytes as the kernel names it: 2MB, 1GB, 64KB."""
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size}B"
