"""What every cgroup manager offers, and the helpers they share."""

from __future__ import annotations

import errno
import os
import time

from flatstack.errors import CgroupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_CGROUP2_MAGIC = 0x63677270
_mode: str | None = None


def detect_mode(root: str = "/sys/fs/cgroup") -> str:
    """``unified`` (pure v2), ``hybrid`` (v1 plus a cgroup2 mount) or ``v1``."""
    global _mode
    if _mode is None:
        if os.path.exists(os.path.join(root, "cgroup.controllers")):
            _mode = "unified"
        elif os.path.exists(os.path.join(root, "unified", "cgroup.controllers")):
            _mode = "hybrid"
        else:
            _mode = "v1"
    return _mode


def write_file(directory: str, name: str, value: str | int, field: str) -> None:
    """Write one control file; CgroupError names the config field and the file."""
    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as err:
        raise CgroupError(f"{field}: cannot open {path}: "
                          f"{os.strerror(err.errno or 0).lower()}") from None
    try:
        os.write(fd, str(value).encode())
    except OSError as err:
        raise CgroupError(f"{field}: writing {value!r} to {path}: "
                          f"{os.strerror(err.errno or 0).lower()}") from None
    finally:
        os.close(fd)


def read_file(directory: str, name: str, default: str = "") -> str:
    try:
        with open(os.path.join(directory, name)) as f:
            return f.read().strip()
    except OSError:
        return default


def read_int(directory: str, name: str, default: int = 0) -> int:
    text = read_file(directory, name)
    if text == "max":
        return 0
    try:
        return int(text)
    except ValueError:
        return default


def read_pids(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return [int(line) for line in f if line.strip()]
    except OSError:
        return []


def remove_dir(path: str, timeout: float = 2.0) -> None:
    """rmdir a cgroup, killing stragglers and retrying while it drains."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as err:
            if err.errno not in (errno.EBUSY, errno.ENOTEMPTY) or time.monotonic() > deadline:
                raise CgroupError(f"cannot remove cgroup {path}: "
                                  f"{os.strerror(err.errno or 0).lower()}") from None
        for pid in read_pids(path):
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def remove_tree(leaves: set[str], created: list[str]) -> None:
    """Remove the leaf cgroups, then the parents we created if nobody else uses them."""
    for path in sorted(leaves, key=len, reverse=True):
        remove_dir(path)
    for path in sorted(set(created) - leaves, key=len, reverse=True):
        try:
            os.rmdir(path)
        except OSError:
            pass  # shared with another container, or already gone


def mkdir_p(path: str, created: list[str]) -> None:
    """mkdir -p, recording (top-down) the directories that did not exist."""
    missing = []
    probe = path
    while not os.path.isdir(probe):
        missing.append(probe)
        probe = os.path.dirname(probe)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o755)
            created.append(directory)
        except FileExistsError:
            pass
        except OSError as err:
            raise CgroupError(f"linux.cgroupsPath: cannot create {directory}: "
                              f"{os.strerror(err.errno or 0).lower()}") from None


class CgroupManager:
    """Interface of a container's cgroup (implemented by V1Manager and V2Manager)."""

    path: str
    paths: dict[str, str]

    def writable(self) -> bool: ...
    def create(self) -> None: ...
    def apply(self, resources: dict[str, Any]) -> None: ...
    def update(self, resources: dict[str, Any]) -> None: ...
    def add_pid(self, pid: int) -> None: ...
    def pids(self) -> list[int]: ...
    def freeze(self) -> None: ...
    def thaw(self) -> None: ...
    def is_frozen(self) -> bool: ...
    def kill_all(self, signal: int) -> None: ...
    def destroy(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def oom_kill_count(self) -> int: ...
    def exists(self) -> bool: ...
    def to_state(self) -> dict[str, Any]: ...


def parse_memory_stat(text: str) -> dict[str, int]:
    stats = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            stats[key] = int(value)
    return stats


def wait_until(predicate: Any, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
    return True


def hugepage_name(page_size: str) -> str:
    """runtime-spec pageSize ("2MB", "1GB") as the kernel spells it in file names."""
    return page_size
