"""User namespaces by default: per-container host id ranges, idmapped mounts, r* attrs."""

from __future__ import annotations

import itertools
import marshal
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from flatstack.oci.defaults import USERNS_ANNOTATIONS
from flatstack.runtime.userns_pool import REGISTRY
from tests.conftest import Bundles, Flatrun
from tests.integration.test_bad_input import assert_no_leftovers


def _userns(config: dict[str, Any]) -> None:
    config["linux"]["namespaces"].append({"type": "user"})
    config["annotations"] = dict(USERNS_ANNOTATIONS)


def _host_uid_map(pid: int) -> list[int]:
    return [int(x) for x in Path(f"/proc/{pid}/uid_map").read_text().split()]


def _registry() -> dict[str, tuple[int, int, str]]:
    try:
        return marshal.loads(Path(REGISTRY).read_bytes())
    except (OSError, EOFError, ValueError):
        return {}


def test_auto_ranges_do_not_overlap_and_are_released(flatrun: Flatrun,
                                                     make_bundle: Bundles) -> None:
    bundle = make_bundle(["sleep", "30"], edit=_userns)
    ids = [flatrun.new_id() for _ in range(3)]
    ranges = []
    for cid in ids:
        flatrun("create", "--bundle", bundle, cid)
        inside, host, size = _host_uid_map(flatrun.state(cid)["pid"])
        assert (inside, size) == (0, 65536)
        assert host >= 65536, "container root must not be a host system id"
        ranges.append((host, host + size))
    ranges.sort()
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(ranges)), ranges
    owners = {os.path.abspath(os.path.join(flatrun.root, cid)) for cid in ids}
    assert owners <= set(_registry())
    for cid in ids:
        flatrun("delete", "--force", cid)
    assert not owners & set(_registry()), "delete must give the range back"


def test_idmapped_rootfs_owned_by_container_root(flatrun: Flatrun, make_bundle: Bundles) -> None:
    script = ("stat -c '%u:%g' /bin/busybox; echo data > /written; stat -c '%u' /written;"
              " grep '^Uid:' /proc/self/status")
    bundle = make_bundle(["sh", "-c", script], own_rootfs=True, edit=_userns)
    result = flatrun("run", "--bundle", bundle, flatrun.new_id())
    lines = result.stdout.split("\n")
    assert lines[0] == "0:0", "the image's root-owned files must look root-owned inside"
    assert lines[1] == "0"
    assert lines[2].split()[1] == "0"
    written = Path(bundle) / "rootfs" / "written"
    assert written.read_text() == "data\n"
    assert written.stat().st_uid == 0, "on disk the file keeps the image's ownership"


def test_without_idmap_rootfs_is_unmapped(flatrun: Flatrun, make_bundle: Bundles) -> None:
    def edit(config: dict[str, Any]) -> None:
        _userns(config)
        del config["annotations"]["org.flatstack.rootfs.idmap"]

    bundle = make_bundle(["stat", "-c", "%u", "/bin/busybox"], edit=edit)
    result = flatrun("run", "--bundle", bundle, flatrun.new_id())
    assert result.stdout.strip() == "65534", "host root's files are nobody's without idmap"


def test_idmap_bind_mount(flatrun: Flatrun, make_bundle: Bundles, tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "file").write_text("x")

    def edit(config: dict[str, Any], option: str) -> None:
        _userns(config)
        config["mounts"].append({"destination": "/vol", "type": "bind", "source": str(volume),
                                 "options": ["rbind", option]})

    plain = make_bundle(["stat", "-c", "%u", "/vol/file"], edit=lambda c: edit(c, "rw"))
    mapped = make_bundle(["sh", "-c", "stat -c %u /vol/file; echo y > /vol/new"],
                         edit=lambda c: edit(c, "idmap"))
    assert flatrun("run", "--bundle", plain, flatrun.new_id()).stdout.strip() == "65534"
    assert flatrun("run", "--bundle", mapped, flatrun.new_id()).stdout.strip() == "0"
    assert (volume / "new").stat().st_uid == 0


def test_recursive_read_only(flatrun: Flatrun, make_bundle: Bundles, tmp_path: Path) -> None:
    source = tmp_path / "tree"
    (source / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(source / "sub")], check=True)
    try:
        def edit(config: dict[str, Any], options: list[str]) -> None:
            config["mounts"].append({"destination": "/tree", "type": "bind",
                                     "source": str(source), "options": options})

        probe = ["sh", "-c", "touch /tree/sub/f 2>&1 && echo writable"]
        ro = make_bundle(probe, edit=lambda c: edit(c, ["rbind", "ro"]))
        rro = make_bundle(probe, edit=lambda c: edit(c, ["rbind", "rro"]))
        # "ro" makes only the top mount read-only; "rro" reaches the submount too.
        assert "writable" in flatrun("run", "--bundle", ro, flatrun.new_id()).stdout
        out = flatrun("run", "--bundle", rro, flatrun.new_id(), check=False).stdout
        assert "Read-only file system" in out and "writable" not in out
    finally:
        subprocess.run(["umount", str(source / "sub")], check=True)


@pytest.mark.parametrize(("annotations", "message"), [
    ({"org.flatstack.userns": "sometimes"},
     'annotations["org.flatstack.userns"]: expected "auto" or "auto:size=N"'),
    ({"org.flatstack.userns": "auto:size=0"},
     'annotations["org.flatstack.userns"]: expected "auto" or "auto:size=N"'),
    ({"org.flatstack.userns": "auto", "org.flatstack.rootfs.idmap": "maybe"},
     'annotations["org.flatstack.rootfs.idmap"]: must be "true" or "false"'),
])
def test_bad_annotations(flatrun: Flatrun, make_bundle: Bundles, annotations: dict[str, str],
                         message: str) -> None:
    def edit(config: dict[str, Any]) -> None:
        config["linux"]["namespaces"].append({"type": "user"})
        config["annotations"] = annotations

    before = _registry()
    cid = flatrun.new_id()
    result = flatrun("create", "--bundle", make_bundle(["true"], edit=edit), cid, check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert_no_leftovers(flatrun, cid)
    assert _registry().keys() <= before.keys() | set(), "no range may stay allocated"


def test_auto_conflicts_with_explicit_maps(flatrun: Flatrun, make_bundle: Bundles) -> None:
    def edit(config: dict[str, Any]) -> None:
        _userns(config)
        mapping = [{"containerID": 0, "hostID": 200000, "size": 65536}]
        config["linux"]["uidMappings"] = mapping
        config["linux"]["gidMappings"] = mapping

    cid = flatrun.new_id()
    result = flatrun("create", "--bundle", make_bundle(["true"], edit=edit), cid, check=False)
    assert result.returncode != 0
    assert "conflicts with explicit linux.uidMappings" in result.stderr
    assert_no_leftovers(flatrun, cid)
