"""Named, persistent network namespaces under a flatstack-owned directory.

Like ``ip netns add``: a fresh network namespace is pinned by bind-mounting its
``/proc/thread-self/ns/net`` onto ``<run dir>/netns/<name>``.  The namespace is made
in a short-lived thread, so the calling thread (and process) never changes namespace.
The directory is a shared mount point so that unmounting a namespace file also
unmounts the copies that later mount namespaces inherited.
"""

from __future__ import annotations

import os
import threading

from flatstack.errors import FlatstackError
from flatstack.kernel import mount as km
from flatstack.kernel import ns as kns
from flatstack.kernel.libc import errno_of

DEFAULT_RUN_DIR = "/run/flatstack"


class NetnsError(FlatstackError):
    """Creating or removing a network namespace failed."""


def netns_dir(run_dir: str = DEFAULT_RUN_DIR) -> str:
    """The directory holding the namespace files."""
    return os.path.join(run_dir, "netns")


def path_of(name: str, run_dir: str = DEFAULT_RUN_DIR) -> str:
    """Where the namespace called ``name`` is (or would be) pinned."""
    if not name or "/" in name or name in (".", ".."):
        raise NetnsError(f"netns name {name!r}: must be a plain file name")
    return os.path.join(netns_dir(run_dir), name)


def _mount_points() -> set[str]:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        return {line.split()[4].replace("\\040", " ") for line in f}


def is_mounted(path: str) -> bool:
    """True when ``path`` is a mount point (a pinned namespace)."""
    return os.path.realpath(path) in _mount_points()


def _prepare_dir(directory: str) -> None:
    """Make ``directory`` exist and be a shared mount point of its own."""
    os.makedirs(directory, mode=0o755, exist_ok=True)
    if not is_mounted(directory):
        km.mount(directory, directory, None, km.MS_BIND | km.MS_REC)
    try:
        km.mount("none", directory, None, km.MS_SHARED | km.MS_REC)
    except FlatstackError:
        pass  # propagation is a nicety; a private mount still works


def create(name: str, run_dir: str = DEFAULT_RUN_DIR, *, loopback_up: bool = True) -> str:
    """Create (or reuse) the pinned namespace ``name``; returns its path.

    Idempotent: an existing pinned namespace is returned as is; a half-made one
    (a file that is not a mount point) is completed.
    """
    path = path_of(name, run_dir)
    _prepare_dir(netns_dir(run_dir))
    if is_mounted(path):
        return path
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o444)
    os.close(fd)
    failure: list[BaseException] = []

    def pin() -> None:
        # Runs in its own OS thread, which ends in the new namespace: nothing to restore.
        try:
            kns.unshare(kns.CLONE_NEWNET)
            if loopback_up:
                kns.loopback_up()
            km.mount(f"/proc/self/task/{threading.get_native_id()}/ns/net", path, None,
                     km.MS_BIND)
        except BaseException as exc:  # reported by the caller
            failure.append(exc)

    worker = threading.Thread(target=pin, name=f"netns-{name}")
    worker.start()
    worker.join()
    if failure:
        _unlink(path)
        raise NetnsError(f"netns {name}: {failure[0]}") from failure[0]
    return path


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def delete(name: str, run_dir: str = DEFAULT_RUN_DIR) -> None:
    """Unpin and remove ``name``; a missing or half-made namespace is not an error."""
    path = path_of(name, run_dir)
    while is_mounted(path):
        try:
            km.umount(path, km.MNT_DETACH)
        except FlatstackError as exc:
            if errno_of(exc) in (22, 2):  # EINVAL/ENOENT: not mounted any more
                break
            raise NetnsError(f"netns {name}: {exc}") from exc
    _unlink(path)


def list_names(run_dir: str = DEFAULT_RUN_DIR) -> list[str]:
    """Names of the pinned namespaces."""
    directory = netns_dir(run_dir)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if is_mounted(os.path.join(directory, n)))


def release_dir(run_dir: str = DEFAULT_RUN_DIR) -> bool:
    """Unmount and remove the namespace directory when no namespace is pinned in it.

    Returns False (and leaves it alone) while namespaces remain.
    """
    directory = netns_dir(run_dir)
    if list_names(run_dir):
        return False
    while is_mounted(directory):
        km.umount(directory, km.MNT_DETACH)
    try:
        for name in os.listdir(directory):
            _unlink(os.path.join(directory, name))  # half-made files
        os.rmdir(directory)
    except FileNotFoundError:
        pass
    return True
