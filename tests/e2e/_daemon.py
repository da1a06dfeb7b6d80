"""A real ``flatstack daemon`` on private directories, driven by the real CLI and httpx."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import REPO

FLATSTACK = REPO / ".venv" / "bin" / "flatstack"
IMAGE = "localhost/busybox:latest"
APP_IMAGE = "localhost/app:1"


class Daemon:
    """One daemon: state, run and runtime directories under ``tmp``, its own bridge."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.state = tmp / "state"
        self.run_dir = tmp / "run"
        self.socket = self.run_dir / "api.sock"
        self.runtime = tmp / "runtime"
        self.bridge = f"fse2e{uuid.uuid4().hex[:6]}"
        self.subnet = f"10.91.{random.randint(2, 250)}.0/24"
        self.log = tmp / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLATSTACK_")}
        self.env = {**env, "FLATSTACK_SOCKET": str(self.socket)}

    # -- the daemon process -------------------------------------------------------------
    def start(self, timeout: float = 30) -> Daemon:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(FLATSTACK), "daemon", "--state-dir", str(self.state), "--socket",
                 str(self.socket), "--runtime-root", str(self.runtime), "--bridge",
                 self.bridge, "--subnet", self.subnet], stdin=subprocess.DEVNULL, stdout=log,
                stderr=log, env=self.env, start_new_session=True,
                preexec_fn=_as_background_job)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}: "
                                     f"{self.log.read_text()}")
            try:
                with self.api() as api:
                    if api.get("/v1/version").status_code == 200:
                        return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"daemon did not answer: {self.log.read_text()}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        self.proc = None
        return code

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

    def close(self) -> None:
        """Remove every container, stop the daemon and the supervisor, drop the bridge."""
        from flatstack.engine.client import SupervisorClient
        from flatstack.errors import FlatstackError
        from flatstack.network import netns

        try:
            if self.proc is None:
                self.start()
            with self.api() as api:
                for c in api.get("/v1/containers", params={"all": True}).json():
                    api.delete(f"/v1/containers/{c['id']}", params={"force": True})
            self.stop()
        except (AssertionError, httpx.HTTPError, OSError):
            if self.proc is not None:
                self.proc.kill()
                self.proc.wait()
        try:
            SupervisorClient(str(self.run_dir / "supervisor.sock"), timeout=5).call("shutdown")
        except FlatstackError:
            pass
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
        netns.release_dir(str(self.run_dir))


def _as_background_job() -> None:
    """What ``flatstack daemon &`` in a script gets: SIGINT and SIGQUIT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)


def empty(leftovers: dict[str, Any]) -> bool:
    return all(not v for v in leftovers.values())
