"""Mount-path escapes of runc/crun, replayed against flatrun with malicious rootfs/bundles.

Each test plants symlinks or fake files in a private copy of the busybox rootfs
(``make_bundle(own_rootfs=True)``) or adds hostile mounts to config.json, then
asserts flatrun refuses for the stated reason (message text) or keeps the mount
inside the root, and that nothing appeared on the host: no files under the host
paths the links point at, no mounts left in the host's mount table.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Bundles, Flatrun
from tests.security._cve_support import drop_dev_tmpfs, mounts_mentioning, tree

CORE_PATTERN = "/proc/sys/kernel/core_pattern"


def _rootfs(bundle: str) -> Path:
    return Path(bundle) / "rootfs"


def _plant(path: Path, target: str) -> None:
    """Replace ``path`` (file or directory) with a symlink to ``target``."""
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    elif path.exists() or path.is_symlink():
        path.unlink()
    path.symlink_to(target)


def _refused(flatrun: Flatrun, bundle: str, tmp_path: Path, *, console: str | None = None
             ) -> str:
    """Create must fail, leave no state, no host mounts: return flatrun's stderr."""
    before = mounts_mentioning(str(tmp_path))
    cid = flatrun.new_id()
    args = ["create", "--bundle", bundle]
    if console is not None:
        args += ["--console-socket", console]
    result = flatrun(*args, cid, check=False)
    assert result.returncode != 0, result.stdout
    assert not (Path(flatrun.root) / cid).exists(), "a refused create leaves no state"
    assert mounts_mentioning(str(tmp_path)) == before
    return result.stderr


def _cover(config: dict[str, Any], destination: str, kind: str, fake: Path) -> None:
    """Mount the host directory ``fake`` (``kind`` "bind") or a tmpfs over ``destination``."""
    if kind == "bind":
        config["mounts"].append({"destination": destination, "type": "bind",
                                 "source": str(fake), "options": ["rbind"]})
    else:
        config["mounts"].append({"destination": destination, "type": "tmpfs",
                                 "source": "tmpfs", "options": []})


@pytest.mark.parametrize("link", ["absolute", "relative"])
def test_cve_2019_19921_and_2023_27561_proc_symlink_in_rootfs(
        flatrun: Flatrun, make_bundle: Bundles, tmp_path: Path, link: str) -> None:
    """CVE-2019-19921 / CVE-2023-27561: the image's /proc is a symlink to a host path.

    runc followed rootfs/proc and mounted procfs wherever it pointed (and later
    wrote to that fake "proc").  flatrun resolves /proc with RESOLVE_NO_SYMLINKS
    and refuses: "mounts[0].destination: /proc is a symlink; refusing to mount
    proc there".  The host directory the link names stays absent.
    """
    host = tmp_path / f"hostproc-{uuid.uuid4().hex[:6]}"
    bundle = make_bundle(["true"], own_rootfs=True)
    target = str(host) if link == "absolute" else "../" * 12 + str(host).lstrip("/")
    _plant(_rootfs(bundle) / "proc", target)
    stderr = _refused(flatrun, bundle, tmp_path)
    assert "mounts[0].destination: /proc is a symlink; refusing to mount proc there" in stderr
    assert not host.exists()
    assert not (_rootfs(bundle) / str(host).lstrip("/")).exists()


@pytest.mark.parametrize("kind", ["bind", "tmpfs"])
def test_cve_2019_16884_fake_proc_mount_refused(flatrun: Flatrun, make_bundle: Bundles,
                                                tmp_path: Path, kind: str) -> None:
    """CVE-2019-16884: a volume mounted over /proc gives the runtime a fake procfs.

    runc wrote its AppArmor label to the fake /proc/self/attr/exec (so the
    profile was never applied).  flatrun accepts only a proc filesystem at
    /proc: "/proc must be a proc filesystem, not a bind mount" (or "not tmpfs").
    The fake directory on the host is left as it was.
    """
    fake = tmp_path / "fakeproc"
    (fake / "self" / "attr").mkdir(parents=True)
    (fake / "self" / "attr" / "exec").write_text("unconfined")
    bundle = make_bundle(["true"], edit=lambda c: _cover(c, "/proc", kind, fake))
    stderr = _refused(flatrun, bundle, tmp_path)
    index = len(make_bundle.spec["mounts"])
    why = "a bind mount" if kind == "bind" else "tmpfs"
    assert f"mounts[{index}].destination: /proc must be a proc filesystem, not {why}" in stderr
    assert (fake / "self" / "attr" / "exec").read_text() == "unconfined"
    assert tree(fake) == ["self", "self/attr", "self/attr/exec"]


@pytest.mark.parametrize("kind", ["bind", "tmpfs"])
def test_cve_2025_52881_sysctl_write_redirected_by_mount_over_proc_sys(
        flatrun: Flatrun, make_bundle: Bundles, tmp_path: Path, kind: str) -> None:
    """CVE-2025-52881: a mount over /proc/sys redirects the runtime's sysctl writes.

    With a host directory bound (or a tmpfs mounted) over /proc/sys, a runtime
    that opens "/proc/sys/net/core/somaxconn" by path writes into the host file
    (or an attacker's file) instead of the kernel.  flatrun opens sysctl files
    beneath a verified procfs /proc with RESOLVE_NO_XDEV | RESOLVE_NO_SYMLINKS and
    checks fstatfs() is PROC_SUPER_MAGIC, so it refuses: "is not on the
    container's procfs ... refusing to write to it".  The host file keeps its value.
    """
    fake = tmp_path / "fakesys"
    (fake / "net" / "core").mkdir(parents=True)
    (fake / "net" / "core" / "somaxconn").write_text("4242\n")

    def edit(config: dict[str, Any]) -> None:
        config["linux"]["sysctl"] = {"net.core.somaxconn": "1234"}
        _cover(config, "/proc/sys", kind, fake)

    stderr = _refused(flatrun, make_bundle(["true"], edit=edit), tmp_path)
    assert ("linux.sysctl.net.core.somaxconn: /proc/sys/net/core/somaxconn is not on the "
            "container's procfs") in stderr, stderr
    assert "refusing to write to it" in stderr
    assert (fake / "net" / "core" / "somaxconn").read_text() == "4242\n"
    assert tree(fake) == ["net", "net/core", "net/core/somaxconn"]


def test_cve_2025_52881_oom_score_adj_write_redirected_by_mount_over_proc_pid(
        flatrun: Flatrun, make_bundle: Bundles, tmp_path: Path) -> None:
    """CVE-2025-52881: a mount over /proc/1/oom_score_adj redirects the init's write.

    The container's init is PID 1 of its PID namespace; a host file is bound
    over /proc/1/oom_score_adj.  flatrun writes process.oomScoreAdj
    through the same verified-procfs path as sysctls and refuses:
    "process.oomScoreAdj: /proc/1/oom_score_adj is not on the container's procfs".
    The fake file keeps its content.
    """
    fake = tmp_path / "fake_oom_score_adj"
    fake.write_text("0\n")

    def edit(config: dict[str, Any]) -> None:
        config["process"]["oomScoreAdj"] = 500
        config["mounts"].append({"destination": "/proc/1/oom_score_adj", "type": "bind",
                                 "source": str(fake), "options": ["bind"]})

    stderr = _refused(flatrun, make_bundle(["true"], edit=edit), tmp_path)
    assert ("process.oomScoreAdj: /proc/1/oom_score_adj is not on the container's procfs"
            in stderr), stderr
    assert fake.read_text() == "0\n"


def test_cve_2025_52881_sysctl_reaches_the_real_procfs(flatrun: Flatrun,
                                                       make_bundle: Bundles) -> None:
    """Control for CVE-2025-52881: with the real procfs, sysctl and oomScoreAdj apply."""

    def edit(config: dict[str, Any]) -> None:
        config["linux"]["sysctl"] = {"net.core.somaxconn": "1234"}
        config["process"]["oomScoreAdj"] = 500

    bundle = make_bundle(["cat", "/proc/sys/net/core/somaxconn", "/proc/self/oom_score_adj"],
                         edit=edit)
    assert flatrun("run", "--bundle", bundle, flatrun.new_id()).stdout.split() == ["1234",
                                                                                  "500"]


def _volume(config: dict[str, Any], source: Path, destination: str) -> None:
    config["mounts"].append({"destination": destination, "type": "bind",
                             "source": str(source), "options": ["rbind"]})


@pytest.mark.parametrize("link", ["absolute", "relative"])
def test_cve_2021_30465_symlink_bind_destination_stays_in_root(
        flatrun: Flatrun, make_bundle: Bundles, tmp_path: Path, link: str) -> None:
    """CVE-2021-30465: a bind mount whose destination is a symlink to a host path.

    runc resolved the destination in the host's view (a swapped-in symlink
    pointed it outside the rootfs).  flatrun resolves destinations with
    openat2(RESOLVE_IN_ROOT) and mounts through the fd: the link is followed as
    if the rootfs were "/", so the volume lands at rootfs/<host path> and the
    container sees it at /victim; the host directory stays empty.
    """
    host = tmp_path / "hostdir"
    host.mkdir()
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "marker").write_text("from-the-volume\n")
    target = str(host) if link == "absolute" else "../" * 12 + str(host).lstrip("/")
    bundle = make_bundle(["cat", "/victim/marker"], own_rootfs=True,
                         edit=lambda c: _volume(c, volume, "/victim"))
    (_rootfs(bundle) / str(host).lstrip("/")).parent.mkdir(parents=True)
    (_rootfs(bundle) / str(host).lstrip("/")).mkdir()
    _plant(_rootfs(bundle) / "victim", target)
    before = mounts_mentioning(str(tmp_path))
    result = flatrun("run", "--bundle", bundle, flatrun.new_id())
    assert result.stdout == "from-the-volume\n"
    assert tree(host) == [], "nothing may be mounted or created at the host path"
    assert mounts_mentioning(str(tmp_path)) == before


@pytest.mark.parametrize("inside", ["missing", "present"])
def test_cve_2024_45310_volume_path_through_symlink_creates_nothing_on_host(
        flatrun: Flatrun, make_bundle: Bundles, tmp_path: Path, inside: str) -> None:
    """CVE-2024-45310: mkdir/creat for volume destinations through a planted symlink.

    runc created the missing directories (and empty files, for file volumes) of
    a destination like /link/a/b on the host when /link pointed outside.
    flatrun resolves with RESOLVE_IN_ROOT and creates each missing component
    itself, reopening it with RESOLVE_NO_SYMLINKS.  If the link's target does
    not exist inside the root ("missing") the create is refused with ELOOP on
    the link ("Too many levels of symbolic links", naming the mount); if it does
    ("present") the directories and the file are created under
    rootfs/<host path>/ and the volumes work.  Either way the host directory
    stays empty.
    """
    host = tmp_path / "hostdir"
    host.mkdir()
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "marker").write_text("dir-volume\n")
    single = tmp_path / "single-file"
    single.write_text("file-volume\n")

    def edit(config: dict[str, Any]) -> None:
        _volume(config, volume, "/link/a/b")
        _volume(config, single, "/link/c/file")

    bundle = make_bundle(["cat", "/link/a/b/marker", "/link/c/file"], own_rootfs=True,
                         edit=edit)
    _plant(_rootfs(bundle) / "link", str(host))
    in_root = _rootfs(bundle) / str(host).lstrip("/")
    if inside == "present":
        in_root.mkdir(parents=True)
        before = mounts_mentioning(str(tmp_path))
        result = flatrun("run", "--bundle", bundle, flatrun.new_id())
        assert result.stdout == "dir-volume\nfile-volume\n"
        assert (in_root / "a" / "b").is_dir() and (in_root / "c" / "file").is_file()
        assert mounts_mentioning(str(tmp_path)) == before
    else:
        stderr = _refused(flatrun, bundle, tmp_path)
        index = len(make_bundle.spec["mounts"])
        assert (f"mounts[{index}].destination: mounting {volume} on /link/a/b: "
                "Too many levels of symbolic links") in stderr, stderr
        assert not in_root.exists()
    assert tree(host) == [], "no directory or file may be created on the host"


@pytest.mark.parametrize("plant", ["symlink", "regular-file"])
def test_cve_2025_31133_masking_with_a_fake_dev_null(flatrun: Flatrun, make_bundle: Bundles,
                                                     tmp_path: Path, plant: str) -> None:
    """CVE-2025-31133: /dev/null replaced before maskedPaths are applied.

    runc bind-mounted the container's /dev/null over each masked file; with
    /dev/null a symlink to /proc/sys/kernel/core_pattern that made the host's
    core_pattern writable (or a plain file left the masked file readable).  The
    image's own /dev is used here (no tmpfs), so the planted node is what
    masking sees.  flatrun checks /dev/null is the 1:3 character device:
    "/dev/null in the container is not the null device; refusing to use it".
    """
    core_before = Path(CORE_PATTERN).read_text()
    bundle = make_bundle(["true"], own_rootfs=True, edit=drop_dev_tmpfs)
    null = _rootfs(bundle) / "dev" / "null"
    if plant == "symlink":
        _plant(null, CORE_PATTERN)
    else:
        null.write_text("not a device\n")
    stderr = _refused(flatrun, bundle, tmp_path)
    assert ("/dev/null in the container is not the null device; refusing to use it to "
            "mask paths") in stderr, stderr
    assert Path(CORE_PATTERN).read_text() == core_before


def _console_socket(tmp_path: Path) -> socket.socket:
    """A listening console socket (create fails before anything is sent on it)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(tmp_path / "console.sock"))
    sock.listen(1)
    return sock


@pytest.mark.parametrize("node", ["console", "ptmx"])
def test_cve_2025_52565_console_nodes_planted_as_symlinks(
        flatrun: Flatrun, make_bundle: Bundles, tmp_path: Path, node: str) -> None:
    """CVE-2025-52565: /dev/console (or /dev/ptmx) planted as a symlink to a proc file.

    With process.terminal, runc bind-mounted the pty over /dev/console after
    following a planted symlink, exposing e.g. /proc/sys/kernel/core_pattern as
    a writable terminal.  flatrun opens /dev/console with RESOLVE_NO_SYMLINKS
    ("/dev/console is a symlink; refusing to mount the console over it") and
    checks that what /dev/ptmx opened is the 5:2 multiplexer ("/dev/ptmx is not
    the pty multiplexer").  The host's core_pattern is unchanged.
    """
    core_before = Path(CORE_PATTERN).read_text()

    def edit(config: dict[str, Any]) -> None:
        drop_dev_tmpfs(config)
        config["process"]["terminal"] = True

    bundle = make_bundle(["true"], own_rootfs=True, edit=edit)
    dev = _rootfs(bundle) / "dev"
    os.mknod(dev / "null", 0o666 | 0o020000, os.makedev(1, 3))  # masking needs it
    if node == "console":
        (dev / "ptmx").symlink_to("pts/ptmx")
        (dev / "console").symlink_to(CORE_PATTERN)
        expected = "/dev/console is a symlink; refusing to mount the console over it"
    else:
        (dev / "ptmx").symlink_to(CORE_PATTERN)
        expected = "/dev/ptmx is not the pty multiplexer (5:2); refusing to use it"
    with _console_socket(tmp_path) as sock:
        stderr = _refused(flatrun, bundle, tmp_path, console=sock.getsockname())
    assert expected in stderr, stderr
    assert Path(CORE_PATTERN).read_text() == core_before
