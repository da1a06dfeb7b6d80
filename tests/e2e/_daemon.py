"""A real ``flatstack daemon`` on private directories, driven by the real CLI and httpx."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from flatstack.testing import PrivateDaemon
from tests.conftest import REPO

FLATSTACK = REPO / ".venv" / "bin" / "flatstack"
IMAGE = "localhost/busybox:latest"
APP_IMAGE = "localhost/app:1"


def _as_background_job() -> None:
    """What ``flatstack daemon &`` in a script gets: SIGINT and SIGQUIT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)


class Daemon(PrivateDaemon):
    """One daemon: state, run and runtime directories under ``tmp``, its own bridge."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, bridge_prefix="fse2e", subnet_octet=91, executable=FLATSTACK)
        self.tmp = tmp

    def start(self, timeout: float = 30, extra: tuple[str, ...] = (),
              preexec_fn: Callable[[], None] | None = _as_background_job) -> Daemon:
        """As a script's ``flatstack daemon &`` (SIGINT and SIGQUIT ignored)."""
        super().start(timeout, extra, preexec_fn)
        return self

    # -- clients ---------------------------------------------------------------------
    def api(self, timeout: float = 60) -> httpx.Client:
        transport = httpx.HTTPTransport(uds=str(self.socket))
        return httpx.Client(transport=transport, base_url="http://flatstack", timeout=timeout)

    def cli(self, *args: str, check: bool = True, timeout: float = 60,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """The real CLI, as a user runs it (FLATSTACK_SOCKET set, no state dir)."""
        proc = subprocess.run([str(FLATSTACK), *args], capture_output=True, text=True,
                              env=self.env, timeout=timeout, input=stdin, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"flatstack {' '.join(args)} exited {proc.returncode}: "
                                 f"{proc.stderr}")
        return proc

    def import_images(self, layouts: dict[str, Path]) -> None:
        for layout in layouts.values():
            self.cli("image", "import", str(layout))

    # -- what a container can leave behind ----------------------------------------------
    def leftovers(self) -> dict[str, Any]:
        from flatstack.network import netns

        def listing(path: Path) -> list[str]:
            return sorted(os.listdir(path)) if path.is_dir() else []

        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text()
                  .splitlines() if line.split()[4].startswith(str(self.state))]
        return {"containers": listing(self.state / "containers"),
                "names": listing(self.state / "names"),
                "supervisor": listing(self.state / "supervisor" / "containers"),
                "runtime": [n for n in listing(self.runtime) if not n.startswith(".")],
                "netns": netns.list_names(str(self.run_dir)),
                "attachments": listing(self.state / "networks" / "attachments"),
                "holds": listing(self.state / "images" / "holds"),
                "mounts": mounts}

def empty(leftovers: dict[str, Any]) -> bool:
    return all(not v for v in leftovers.values())
