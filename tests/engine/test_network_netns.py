"""Named network namespaces: pinned, listed, removed, idempotent, safe when half-made."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from flatstack.network import netns


def _ns_inode(path: str) -> int:
    return os.stat(path).st_ino


def test_create_pins_a_new_namespace_with_lo_up(tmp_path: Path) -> None:
    run = str(tmp_path / "run")
    before = os.readlink("/proc/self/ns/net")
    path = netns.create("alpha", run)
    try:
        assert path == str(tmp_path / "run" / "netns" / "alpha")
        assert netns.is_mounted(path)
        # A different namespace from ours, with only lo, and lo is up.
        assert _ns_inode(path) != os.stat("/proc/self/ns/net").st_ino
        out = subprocess.run(["nsenter", f"--net={path}", "ip", "-o", "link"],
                             capture_output=True, text=True, check=True).stdout
        assert [line.split(":")[1].strip() for line in out.splitlines()] == ["lo"]
        assert "UP" in out.split("<", 1)[1].split(">", 1)[0].split(",")
        # The caller's own namespace was not changed by creating one.
        assert os.readlink("/proc/self/ns/net") == before
        assert netns.list_names(run) == ["alpha"]
        # Idempotent: the same namespace comes back.
        inode = _ns_inode(path)
        assert netns.create("alpha", run) == path and _ns_inode(path) == inode
    finally:
        netns.delete("alpha", run)
    assert not os.path.exists(path)
    assert netns.list_names(run) == []
    netns.delete("alpha", run)  # deleting again is fine
    assert netns.release_dir(run)
    assert not (tmp_path / "run" / "netns").exists()


def test_half_created_namespace_is_completed_or_removed(tmp_path: Path) -> None:
    run = str(tmp_path / "run")
    netns.create("keep", run)
    try:
        # A crash between creating the file and the bind mount leaves a plain file.
        half = Path(netns.path_of("half", run))
        half.touch()
        assert netns.list_names(run) == ["keep"]
        netns.delete("half", run)
        assert not half.exists()
        half.touch()
        path = netns.create("half", run)
        assert netns.is_mounted(path) and netns.list_names(run) == ["half", "keep"]
        assert not netns.release_dir(run), "must refuse while namespaces are pinned"
        netns.delete("half", run)
    finally:
        netns.delete("keep", run)
    assert netns.release_dir(run)


def test_namespace_is_really_gone_after_delete(tmp_path: Path) -> None:
    run = str(tmp_path / "run")
    path = netns.create("gone", run)
    fd = os.open(path, os.O_RDONLY)
    try:
        netns.delete("gone", run)
        # Only our fd keeps it alive now: nothing is mounted on the name any more.
        assert not netns.is_mounted(path) and not os.path.exists(path)
        # ... and it is still a network namespace one can join (setns would fail otherwise).
        subprocess.run(["nsenter", f"--net=/proc/{os.getpid()}/fd/{fd}", "true"], check=True)
    finally:
        os.close(fd)
    assert netns.release_dir(run)


@pytest.mark.parametrize("name", ["", "a/b", "..", "."])
def test_bad_names_are_rejected(tmp_path: Path, name: str) -> None:
    with pytest.raises(netns.NetnsError, match="plain file name"):
        netns.create(name, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
