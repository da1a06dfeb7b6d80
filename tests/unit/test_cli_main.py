"""The flatstack command line assembles its groups and prints its version."""

from __future__ import annotations

import subprocess

from tests.conftest import REPO


def test_version_and_help() -> None:
    exe = str(REPO / ".venv" / "bin" / "flatstack")
    out = subprocess.run([exe, "version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "flatstack 0.1.0"
    bad = subprocess.run([exe, "no-such-command"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "No such command" in bad.stderr
