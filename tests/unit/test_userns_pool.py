"""The host id range allocator, on a real registry file with real locking."""

from __future__ import annotations

from pathlib import Path

import pytest

from flatstack.errors import FlatstackError
from flatstack.runtime import userns_pool as pool


def test_ranges_are_disjoint_and_reused(tmp_path: Path) -> None:
    registry = str(tmp_path / "ranges")
    live = tmp_path / "live"
    live.mkdir()
    ranges = [(1000, 3000)]
    a = pool.allocate("a", str(live), 1000, registry=registry, pool=ranges)
    b = pool.allocate("b", str(live), 1000, registry=registry, pool=ranges)
    assert (a, b) == (1000, 2000)
    pool.release("a", registry=registry)
    assert pool.allocate("c", str(live), 500, registry=registry, pool=ranges) == 1000
    assert pool.allocate("d", str(live), 1000, registry=registry, pool=ranges) == 3000
    with pytest.raises(FlatstackError, match="no free range of 1000 host ids"):
        pool.allocate("e", str(live), 1000, registry=registry, pool=ranges)


def test_ranges_of_vanished_containers_are_reclaimed(tmp_path: Path) -> None:
    registry = str(tmp_path / "ranges")
    gone = tmp_path / "gone"
    gone.mkdir()
    assert pool.allocate("x", str(gone), 100, registry=registry, pool=[(0, 100)]) == 0
    gone.rmdir()  # the state directory vanished without a delete
    assert pool.allocate("y", str(tmp_path), 100, registry=registry, pool=[(0, 100)]) == 0


def test_pool_from_subuid(tmp_path: Path) -> None:
    subuid = tmp_path / "subuid"
    subuid.write_text("alice:100000:65536\nflatstack:500000:131072\nbad line\n")
    assert pool.pool_ranges(str(subuid)) == [(500000, 131072)]
    assert pool.pool_ranges(str(tmp_path / "missing")) == [pool.DEFAULT_POOL]


@pytest.mark.parametrize("value", ["auto:size=", "auto:size=-1", "yes", "auto:size=99999999"])
def test_bad_sizes(value: str) -> None:
    with pytest.raises(FlatstackError, match=r'annotations\["org.flatstack.userns"\]'):
        pool.requested_size({"annotations": {"org.flatstack.userns": value}})
    assert pool.requested_size({"annotations": {"org.flatstack.userns": "auto:size=4096"}}) \
        == 4096
