"""e2e fixtures: busybox images and a running daemon on private directories."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e._daemon import Daemon
from tests.engine._engine_support import make_layouts


@pytest.fixture(scope="session")
def layouts(tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: str) -> dict[str, Path]:
    """OCI layouts: localhost/busybox:latest and localhost/app:1 (a full image config)."""
    return make_layouts(tmp_path_factory.mktemp("e2e-images"), busybox_rootfs)


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    """A started daemon (short paths: unix socket names are limited to 108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="fse2e-", ignore_cleanup_errors=True) as tmp:
        made = Daemon(Path(tmp))
        made.start()
        try:
            yield made
        finally:
            made.close()
