"""Foreground ``run`` with process.terminal and no --console-socket (runc's behaviour)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import Bundles, Flatrun


def _terminal(config: dict[str, Any]) -> None:
    config["process"]["terminal"] = True


def _run(flatrun: Flatrun, bundle: str, stdin: bytes, tmp_path: Path,
         wrap: list[str] | None = None) -> tuple[int, str]:
    out = tmp_path / "out"
    argv = [flatrun.binary, "--root", flatrun.root, "run", "--bundle", bundle, flatrun.new_id()]
    if wrap:
        argv = [*wrap, " ".join(argv), "/dev/null"]
    with open(out, "wb") as f:
        proc = subprocess.run(argv, input=stdin, stdout=f, stderr=subprocess.STDOUT,
                              timeout=30, check=False)
    return proc.returncode, out.read_text(errors="replace")


def test_shell_on_a_pty_reads_stdin(flatrun: Flatrun, make_bundle: Bundles,
                                    tmp_path: Path) -> None:
    bundle = make_bundle(["sh"], edit=_terminal)
    code, out = _run(flatrun, bundle, b"tty; echo $((6*7)); exit 3\n", tmp_path)
    assert code == 3
    assert "/dev/pts/0" in out, "the process's stdio is the container's own pty"
    assert "42" in out


def test_under_a_host_terminal(flatrun: Flatrun, make_bundle: Bundles, tmp_path: Path) -> None:
    # script(1) gives flatrun a real terminal: raw mode, window size copied.
    bundle = make_bundle(["sh", "-c", "stty size; test -t 0 && echo on-a-tty"], edit=_terminal)
    code, out = _run(flatrun, bundle, b"", tmp_path, wrap=["script", "-qec"])
    assert code == 0, out
    assert "on-a-tty" in out


def test_detached_terminal_still_needs_console_socket(flatrun: Flatrun,
                                                      make_bundle: Bundles) -> None:
    cid = flatrun.new_id()
    result = flatrun("run", "--detach", "--bundle", make_bundle(["true"], edit=_terminal), cid,
                     check=False)
    assert result.returncode != 0
    assert "process.terminal: a terminal needs --console-socket" in result.stderr
    assert not (Path(flatrun.root) / cid).exists()
