"""Helpers for the escape tests: run an attack script in a hardened container.

``attack`` runs ``sh -c SCRIPT`` (stderr joined to stdout) under ``flatrun
run`` with ``default_spec()`` (or its ``userns``/``rootless`` variants) on the
shared busybox rootfs and returns what the container printed.  ``probe_dir`` compiles
``escape_probe.c`` (static) once per session; a bundle made with
``probe=...`` binds it read-only at ``/home`` so ``/home/escape_probe`` can
make the raw syscalls busybox has no applet for and print their errno names.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flatstack.oci.defaults import default_spec
from tests.conftest import Bundles, Flatrun

PROBE_SRC = Path(__file__).with_name("escape_probe.c")
PROBE = "/home/escape_probe"
#: Busybox's messages for the errnos the attacks must hit.
EPERM_MSG = "Operation not permitted"
EROFS_MSG = "Read-only file system"
BUSYBOX_EPERM_MOUNT = "permission denied (are you root?)"  # mount/ping on EPERM/EACCES


def compile_static(source: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A directory (mode 755) holding ``source`` compiled statically, named by its stem."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc not found: `make install` installs gcc and libc6-dev for the probe")
    directory = tmp_path_factory.mktemp(source.stem)
    os.chmod(directory, 0o755)
    subprocess.run([gcc, "-static", "-O2", "-Wall", "-o", str(directory / source.stem),
                    str(source)], check=True)
    return str(directory)


@pytest.fixture(scope="session")
def probe_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A directory (mode 755) holding the statically linked escape probe."""
    return compile_static(PROBE_SRC, tmp_path_factory)


def bind_ro(config: dict[str, Any], source: str, destination: str = "/home") -> None:
    """Bind ``source`` read-only over a directory the busybox rootfs already has."""
    config["mounts"].append({"destination": destination, "type": "bind", "source": source,
                             "options": ["rbind", "ro", "nosuid", "nodev"]})


@dataclass
class Result:
    rc: int
    out: str  # what the container printed (its stderr goes to stdout), then flatrun's stderr

    def probe(self) -> dict[str, str]:
        """``label=RESULT`` lines the probe printed, as a dict."""
        found = {}
        for line in self.out.splitlines():
            label, sep, value = line.rpartition("=")
            if sep and (value == "OK" or value.startswith("E") or value == "OTHER"):
                found[label] = value
        return found


def spec_for(variant: str) -> dict[str, Any]:
    """default_spec() for "default", "userns" or "rootless"."""
    if variant == "default":
        return default_spec()
    if variant == "userns":
        return default_spec(userns=True)
    if variant == "rootless":
        return default_spec(rootless=True)
    raise ValueError(variant)


def attack(flatrun: Flatrun, make_bundle: Bundles, script: str, *, variant: str = "default",
           probe: str | None = None, edit: Callable[[dict[str, Any]], None] | None = None,
           timeout: float = 30) -> Result:
    """Run ``script`` in a fresh container; its exit status and output."""

    def build(config: dict[str, Any]) -> None:
        if variant != "default":
            fresh = spec_for(variant)
            fresh["root"] = config["root"]
            fresh["process"]["args"] = config["process"]["args"]
            fresh["process"]["terminal"] = False
            config.clear()
            config.update(fresh)
        if probe is not None:
            bind_ro(config, probe)
        if edit is not None:
            edit(config)

    bundle = make_bundle(["sh", "-c", "exec 2>&1\n" + script], edit=build)
    result = flatrun("run", "--bundle", bundle, flatrun.new_id(), check=False, timeout=timeout)
    return Result(result.returncode, result.stdout + result.stderr)


def set_caps(config: dict[str, Any], caps: list[str]) -> None:
    for kind in ("bounding", "effective", "permitted"):
        config["process"]["capabilities"][kind] = list(caps)


def status_fields(text: str) -> dict[str, str]:
    """``Key:\\tvalue`` lines of /proc/PID/status."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key[:1].isupper() and " " not in key:
            fields[key] = value.strip()
    return fields
