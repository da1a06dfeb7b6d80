"""Shared pieces of the runtime CVE tests: the probe binary and host-side checks."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from tests.security._harness import bind_ro, compile_static

PROBE_SRC = Path(__file__).with_name("cve_probe.c")
PROBE = "/home/cve_probe"


def compile_probe(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A directory (mode 755) holding the statically linked ``cve_probe``."""
    return compile_static(PROBE_SRC, tmp_path_factory)


def fd_entries(seen: set[str]) -> list[str]:
    """``N:target:open-RESULT`` entries from the probe's ``fds_above_2=`` lines."""
    entries = []
    for line in seen:
        if line.startswith("fds_above_2="):
            entries += line.split("=", 1)[1].strip("[] ").split()
    return entries


def bind_probe(config: dict[str, Any], directory: str) -> None:
    """Bind the probe's directory read-only at /home (where ``PROBE`` points)."""
    bind_ro(config, directory, "/home")


def mounts_mentioning(fragment: str) -> list[str]:
    """Host mount table lines (this mount namespace) whose text contains ``fragment``."""
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if fragment in line]


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def tree(path: Path) -> list[str]:
    """Every entry under ``path`` (relative), to show nothing was created there."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def drop_dev_tmpfs(config: dict[str, Any]) -> None:
    """Use the image's own /dev (no tmpfs): what the image plants there is what is used."""
    config["mounts"] = [mnt for mnt in config["mounts"] if mnt["destination"] != "/dev"]
