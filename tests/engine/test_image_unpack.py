"""Layer unpacking: metadata, whiteouts for overlayfs, and refusal of malicious layers."""

from __future__ import annotations

import gzip
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from flatstack.image import ImageError
from flatstack.image.archive import import_image
from flatstack.image.store import Store
from flatstack.image.unpack import flatten, layer_dir, unpack_image
from tests.engine._image_support import flatstack, layer_tar, member, oci_layout, sha

D, R, S, L = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE


def _store_with(tmp_path: Path, layers: list[bytes], **kw: object) -> tuple[Store, str]:
    store = Store(str(tmp_path / "state"))
    layout = oci_layout(tmp_path / "layout", layers, **kw)  # type: ignore[arg-type]
    [name] = import_image(store, str(layout))
    return store, name


def test_metadata_links_devices_and_xattrs(tmp_path: Path) -> None:
    layer = layer_tar([
        member("./", D, mode=0o755),
        member("d/", D, mode=0o750, uid=1000, gid=1001, mtime=1_600_000_000),
        member("d/f", data=b"payload", mode=0o4755, uid=1000, gid=1001,
               xattrs={"user.bin": b"\xff\x00\x01", "trusted.overlay.opaque": b"y"}),
        member("d/hl", L, link="d/f"),
        member("d/sym", S, link="f", uid=7, gid=8),
        member("abs", S, link="/bin/busybox"),
        member("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
        member("dev/sda", tarfile.BLKTYPE, mode=0o660, dev=(8, 0), gid=6),
        member("fifo", tarfile.FIFOTYPE, mode=0o620),
        member("tmp/", D, mode=0o1777),
        member("x/y/z", data=b"implicit parents"),
        member("forged/", D, xattrs={"trusted.overlay.opaque": b"y"}),
    ])
    store, name = _store_with(tmp_path, [layer])
    [root_s] = unpack_image(store, name)
    root = Path(root_s)
    assert root == Path(layer_dir(store, sha(layer)))
    f = os.stat(root / "d" / "f")
    assert (root / "d" / "f").read_bytes() == b"payload"
    assert stat.S_IMODE(f.st_mode) == 0o4755, "setuid survives the chown"
    assert (f.st_uid, f.st_gid, f.st_nlink) == (1000, 1001, 2)
    assert f.st_mtime == 1_700_000_000
    assert os.stat(root / "d" / "hl").st_ino == f.st_ino, "hard link shares the inode"
    assert os.getxattr(root / "d" / "f", "user.bin") == b"\xff\x00\x01"
    with pytest.raises(OSError):
        os.getxattr(root / "d" / "f", "trusted.overlay.opaque")
    with pytest.raises(OSError):
        os.getxattr(root / "forged", "trusted.overlay.opaque")  # a layer cannot forge it
    d = os.stat(root / "d")
    assert (stat.S_IMODE(d.st_mode), d.st_uid, d.st_gid, d.st_mtime) == \
        (0o750, 1000, 1001, 1_600_000_000), "directory metadata is applied after children"
    sym = os.lstat(root / "d" / "sym")
    assert os.readlink(root / "d" / "sym") == "f" and (sym.st_uid, sym.st_gid) == (7, 8)
    assert os.readlink(root / "abs") == "/bin/busybox", "absolute targets are kept"
    null = os.lstat(root / "dev" / "null")
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1 \
        and os.minor(null.st_rdev) == 3 and stat.S_IMODE(null.st_mode) == 0o666
    sda = os.lstat(root / "dev" / "sda")
    assert stat.S_ISBLK(sda.st_mode) and sda.st_rdev == os.makedev(8, 0) and sda.st_gid == 6
    assert stat.S_ISFIFO(os.lstat(root / "fifo").st_mode)
    assert stat.S_IMODE(os.stat(root / "tmp").st_mode) == 0o1777
    assert (root / "x" / "y" / "z").read_bytes() == b"implicit parents"
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o755
    assert os.listdir(store.tmp) == []
    # Unpacked once: a second call returns the same directory without rewriting it.
    marker = root / "d" / "f"
    before = os.stat(marker).st_ctime_ns
    assert unpack_image(store, name) == [root_s]
    assert os.stat(marker).st_ctime_ns == before


@pytest.fixture
def two_layers(tmp_path: Path) -> tuple[Store, str, bytes, bytes]:
    base = layer_tar([
        member("etc/", D, mode=0o755), member("etc/motd", data=b"base\n"),
        member("etc/keep", data=b"keep\n"),
        member("data/", D, mode=0o755), member("data/old", data=b"old\n"),
    ])
    top = gzip.compress(layer_tar([
        member("etc/.wh.motd"),
        member("data/", D, mode=0o755), member("data/.wh..wh..opq"),
        member("data/new", data=b"new\n"),
        member("again", data=b"same layer\n"), member(".wh.again"),
        member("hello", data=b"top\n"),
    ]))
    store, name = _store_with(tmp_path, [base, top])
    return store, name, base, top


def test_whiteouts_become_overlay_whiteouts(two_layers: tuple[Store, str, bytes, bytes],
                                           tmp_path: Path) -> None:
    store, name, _, _ = two_layers
    base_dir, top_dir = unpack_image(store, name)
    wh = os.lstat(Path(top_dir) / "etc" / "motd")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == os.makedev(0, 0)
    assert os.getxattr(Path(top_dir) / "data", "trusted.overlay.opaque") == b"y"
    assert (Path(top_dir) / "again").read_bytes() == b"same layer\n", \
        "a whiteout hides lower layers only, not its own layer's entry"
    merged = tmp_path / "merged"
    merged.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"ro,lowerdir={top_dir}:{base_dir}", str(merged)], check=True)
    try:
        assert not (merged / "etc" / "motd").exists()
        assert (merged / "etc" / "keep").read_text() == "keep\n"
        assert sorted(os.listdir(merged / "data")) == ["new"]
        assert (merged / "hello").read_text() == "top\n"
    finally:
        subprocess.run(["umount", str(merged)], check=True)


def test_flatten_applies_whiteouts(two_layers: tuple[Store, str, bytes, bytes],
                                   tmp_path: Path) -> None:
    store, name, _, _ = two_layers
    dest = tmp_path / "flat"
    flatten(store, name, str(dest))
    assert not (dest / "etc" / "motd").exists()
    assert (dest / "etc" / "keep").exists()
    assert sorted(os.listdir(dest / "data")) == ["new"]
    assert (dest / "again").read_text() == "same layer\n"


def _outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    out.mkdir(exist_ok=True)
    (out / "secret").write_text("host secret\n")
    return out


MALICIOUS = {
    # CVE-2007-4559 (tarfile path traversal): '..' and absolute member names.
    "dotdot": (lambda o: [member("../outside/pwned", data=b"x")], "'..' component"),
    "nested-dotdot": (lambda o: [member("a/../../outside/pwned", data=b"x")], "'..' component"),
    "absolute": (lambda o: [member(f"{o}/pwned", data=b"x")], "absolute path"),
    # CVE-2021-32760 (containerd): writing through a symlink planted earlier in the layer.
    "write-through-absolute-symlink": (
        lambda o: [member("lnk", S, link=str(o)), member("lnk/pwned", data=b"x")],
        "parent lnk is a symlink"),
    "dir-replaced-by-symlink": (
        lambda o: [member("d/", D), member("d", S, link=str(o)), member("d/pwned", data=b"x")],
        "parent d is a symlink"),
    "relative-symlink-escape": (
        lambda o: [member("a/b/up", S, link="../../../outside")], "escapes the layer root"),
    # CVE-2014-6407 (docker): hard links to host files from an image layer.
    "hardlink-etc-passwd": (lambda o: [member("passwd", L, link="/etc/passwd")],
                            "escapes the layer root"),
    "hardlink-dotdot": (lambda o: [member("s", L, link="../outside/secret")],
                        "escapes the layer root"),
    "hardlink-through-symlink": (
        lambda o: [member("s", S, link=str(o)), member("h", L, link="s/secret")],
        "parent s is a symlink"),
    "hardlink-not-in-layer": (lambda o: [member("h", L, link="etc/passwd")],
                              "does not exist in the layer"),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_layer_refused(case: str, tmp_path: Path) -> None:
    """CVE-2007-4559 / CVE-2021-32760 / CVE-2014-6407: a layer cannot write outside its root."""
    outside = _outside(tmp_path)
    build, reason = MALICIOUS[case]
    members = build(outside)
    store, name = _store_with(tmp_path, [layer_tar(members)])
    with pytest.raises(ImageError) as err:
        unpack_image(store, name)
    text = str(err.value)
    assert reason in text, text
    assert repr(members[-1][0].name) in text, f"the error names the member: {text}"
    assert sorted(os.listdir(outside)) == ["secret"], "nothing written outside"
    assert (outside / "secret").read_text() == "host secret\n"
    assert os.stat(outside / "secret").st_nlink == 1
    assert os.listdir(store.layers) == [] and os.listdir(store.tmp) == [], \
        "no half-unpacked layer is left"


def test_malicious_layer_cli_error(tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    layout = oci_layout(tmp_path / "layout", [layer_tar(
        [member("lnk", S, link=str(outside)), member("lnk/pwned", data=b"x")])])
    state = tmp_path / "state"
    flatstack(state, "import", str(layout))
    proc = flatstack(state, "unpack", "localhost/crafted", check=False)
    assert proc.returncode != 0
    assert proc.stderr.startswith("flatstack: layer sha256:")
    assert "member 'lnk/pwned': parent lnk is a symlink" in proc.stderr
    assert not (outside / "pwned").exists()


def test_diff_id_mismatch_and_corrupt_layers(tmp_path: Path) -> None:
    good = layer_tar([member("f", data=b"x")])
    store, name = _store_with(tmp_path / "a", [good], diff_ids=[sha(b"something else")])
    with pytest.raises(ImageError, match="does not match diff_id"):
        unpack_image(store, name)
    assert os.listdir(store.layers) == [] and os.listdir(store.tmp) == []

    truncated = gzip.compress(layer_tar([member("f", data=os.urandom(50_000))]))[:-2000]
    store, name = _store_with(tmp_path / "b", [truncated], diff_ids=[sha(b"unknown")])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        unpack_image(store, name)
    assert os.listdir(store.layers) == [] and os.listdir(store.tmp) == []

    zstd_frame = b"\x28\xb5\x2f\xfd" + b"\x00" * 32
    store, name = _store_with(tmp_path / "c", [zstd_frame], diff_ids=[sha(b"unknown")])
    with pytest.raises(ImageError, match="zstd-compressed layers need"):
        unpack_image(store, name)
