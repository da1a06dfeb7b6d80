"""Overlay root filesystems over shared layers, mounted for real and used by flatrun."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from flatstack.engine.overlay import mount_rootfs, unmount_rootfs
from flatstack.errors import FlatstackError
from tests.conftest import Bundles, Flatrun


def _mounted(path: str) -> bool:
    return any(line.split()[4] == path for line in Path("/proc/self/mountinfo").read_text()
               .splitlines())


@pytest.fixture
def layers(tmp_path: Path, busybox_rootfs: str) -> list[str]:
    """Top layer first: a whiteout for /etc/motd, an opaque /data, a new file."""
    base = tmp_path / "layer-base"
    shutil.copytree(busybox_rootfs, base, symlinks=True)
    (base / "etc" / "motd").write_text("base\n")
    (base / "data").mkdir()
    (base / "data" / "old").write_text("old\n")
    top = tmp_path / "layer-top"
    (top / "etc").mkdir(parents=True)
    os.mknod(top / "etc" / "motd", 0o600 | 0o020000, os.makedev(0, 0))  # whiteout
    (top / "data").mkdir()
    os.setxattr(top / "data", "trusted.overlay.opaque", b"y")
    (top / "data" / "new").write_text("new\n")
    (top / "hello").write_text("from the top layer\n")
    return [str(top), str(base)]


def test_layers_whiteouts_and_private_upper(layers: list[str], tmp_path: Path) -> None:
    container = tmp_path / "c1"
    merged = mount_rootfs(layers, str(container))
    try:
        assert _mounted(merged)
        root = Path(merged)
        assert (root / "hello").read_text() == "from the top layer\n"
        assert not (root / "etc" / "motd").exists(), "the whiteout hides the base file"
        assert sorted(os.listdir(root / "data")) == ["new"], "opaque dir hides the base"
        (root / "written").write_text("x")
        (root / "bin" / "busybox").unlink()
        assert (container / "diff" / "upper" / "written").read_text() == "x"
        assert os.path.exists(Path(layers[1]) / "bin" / "busybox"), "lowers never change"
        whiteout = os.stat(container / "diff" / "upper" / "bin" / "busybox", follow_symlinks=False)
        assert os.major(whiteout.st_rdev) == 0 and os.minor(whiteout.st_rdev) == 0
    finally:
        unmount_rootfs(str(container))
    assert not _mounted(merged)
    assert not (container / "diff" / "upper").exists() and not (container / "merged").exists()
    unmount_rootfs(str(container))  # idempotent


def test_two_containers_share_lowers(layers: list[str], tmp_path: Path, flatrun: Flatrun,
                                     make_bundle: Bundles) -> None:
    merged = [mount_rootfs(layers, str(tmp_path / f"c{i}")) for i in range(2)]
    try:
        for i, root in enumerate(merged):
            def edit(config: dict[str, Any], root: str = root) -> None:
                config["root"] = {"path": root, "readonly": False}

            bundle = make_bundle(["sh", "-c", f"echo {i} > /mine; cat /hello; ls /data"],
                                 edit=edit)
            out = flatrun("run", "--bundle", bundle, flatrun.new_id()).stdout
            assert out.split("\n")[:2] == ["from the top layer", "new"]
        assert [(tmp_path / f"c{i}" / "diff" / "upper" / "mine").read_text() for i in range(2)] \
            == ["0\n", "1\n"]
        assert not (Path(layers[0]) / "mine").exists()
    finally:
        for i in range(2):
            unmount_rootfs(str(tmp_path / f"c{i}"))


def test_idmapped_layers(layers: list[str], tmp_path: Path, flatrun: Flatrun,
                         make_bundle: Bundles) -> None:
    """The engine's default: a user namespace per container over idmapped layers
    (overlayfs takes idmapped layers, not an idmapped overlay); what the container's
    root writes is stored under its own host id in the private upper directory."""
    maps = [{"containerID": 0, "hostID": 2_000_000_000, "size": 65536}]
    merged = mount_rootfs(layers, str(tmp_path / "c"), id_maps=(maps, maps))
    try:
        def edit(config: dict[str, Any]) -> None:
            config["root"] = {"path": merged, "readonly": False}
            config["linux"]["namespaces"].append({"type": "user"})
            config["linux"]["uidMappings"] = maps
            config["linux"]["gidMappings"] = maps

        bundle = make_bundle(["sh", "-c", "stat -c %u /hello; touch /made; id -u"], edit=edit)
        result = flatrun("run", "--bundle", bundle, flatrun.new_id())
        assert result.stdout.split() == ["0", "0"], result.stderr
        assert (tmp_path / "c" / "diff" / "upper" / "made").stat().st_uid == 2_000_000_000
    finally:
        unmount_rootfs(str(tmp_path / "c"))
    assert not (tmp_path / "c" / "mapped").exists()


def test_idmapped_overlay_mount_is_refused_clearly(layers: list[str], tmp_path: Path,
                                                  flatrun: Flatrun,
                                                  make_bundle: Bundles) -> None:
    merged = mount_rootfs(layers, str(tmp_path / "c"))
    try:
        def edit(config: dict[str, Any]) -> None:
            config["root"] = {"path": merged, "readonly": False}
            config["linux"]["namespaces"].append({"type": "user"})
            config["annotations"] = {"org.flatstack.userns": "auto",
                                     "org.flatstack.rootfs.idmap": "true"}

        cid = flatrun.new_id()
        result = flatrun("run", "--bundle", make_bundle(["true"], edit=edit), cid, check=False)
        assert result.returncode != 0
        assert "the filesystem does not support idmapped mounts" in result.stderr
        assert not (Path(flatrun.root) / cid).exists()
    finally:
        unmount_rootfs(str(tmp_path / "c"))


def test_bad_layers(tmp_path: Path) -> None:
    with pytest.raises(FlatstackError, match="at least one layer"):
        mount_rootfs([], str(tmp_path / "x"))
    with pytest.raises(FlatstackError, match="is not a directory"):
        mount_rootfs([str(tmp_path / "missing")], str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_mapping_namespaces_are_reused_per_mapping() -> None:
    """The daemon keeps one mapping namespace per id range: same maps, same namespace
    (no placeholder fork); other maps, another; the oldest goes when the cache is full."""
    from flatstack.runtime.idmapped import UsernsCache

    def maps(host: int) -> list[dict[str, int]]:
        return [{"containerID": 0, "hostID": host, "size": 65536}]

    def ns_of(fd: int) -> tuple[int, str]:
        try:
            return os.fstat(fd).st_ino, Path(f"/proc/self/fd/{fd}").readlink().name
        finally:
            os.close(fd)

    cache = UsernsCache(size=2)
    held = cache.get(maps(300000), maps(300000), "t")  # kept open: its inode stays taken
    try:
        first = os.fstat(held).st_ino
        assert ns_of(cache.get(maps(300000), maps(300000), "t"))[0] == first
        second = ns_of(cache.get(maps(400000), maps(400000), "t"))
        assert second[0] != first and second[1].startswith("user:[")
        ns_of(cache.get(maps(500000), maps(500000), "t"))  # evicts 300000
        assert ns_of(cache.get(maps(300000), maps(300000), "t"))[0] != first
        assert Path(f"/proc/self/fd/{held}").readlink().name == f"user:[{first}]"
    finally:
        os.close(held)
        cache.close()
