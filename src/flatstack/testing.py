"""A harness shared by the test suite and the benchmarks (neither imports the other).

:class:`PrivateDaemon` runs a real ``flatstack daemon`` the way a user would, but on
directories of its own (state, run, runtime root) with its own bridge and subnet, so it
never touches a host's ``/var/lib/flatstack``; :func:`http_get` and :func:`free_port`
probe what containers serve; :data:`HTTPD_APP` is the busybox httpd that plays an
app instance (``/``, ``/alive``, ``/ready`` and a CGI that turns slow on demand).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

#: ``/cgi-bin/work`` answers "ok", after 0.3 s while ``/tmp/slow`` exists.
_WORK = ("#!/bin/sh\\n[ -f /tmp/slow ] && sleep 0.3\\necho Content-Type: text/plain\\n"
         "echo\\necho ok\\n")
#: A shell command: busybox httpd on 8080 serving the hostname at / and the probe files
#: /alive and /ready (remove one to fail that probe), plus ``/cgi-bin/work``.
HTTPD_APP = ("mkdir -p /tmp/www/cgi-bin && hostname > /tmp/www/index.html && touch "
             f"/tmp/www/alive /tmp/www/ready && printf '{_WORK}' > /tmp/www/cgi-bin/work && "
             "chmod +x /tmp/www/cgi-bin/work && exec httpd -f -p 8080 -h /tmp/www")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(host: str, port: int, path: str = "/", timeout: float = 2.0) -> tuple[int, str]:
    """One HTTP/1.0 GET on a new connection: (status, body); (0, error) when it fails."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
            chunks = []
            while data := sock.recv(4096):
                chunks.append(data)
    except OSError as err:
        return 0, str(err)
    text = b"".join(chunks).decode(errors="replace")
    head, _, body = text.replace("\r\n", "\n").partition("\n\n")
    parts = head.split()
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0), body.strip()


class PrivateDaemon:
    """``flatstack daemon`` on ``work/{state,run,runtime}`` with a private bridge and
    subnet; ``close`` removes its containers, stops it and its supervisor and drops the
    bridge. ``env`` is the environment a user's CLI would have (``FLATSTACK_SOCKET``)."""

    def __init__(self, work: Path, bridge_prefix: str = "fst", subnet_octet: int = 93,
                 executable: Path | None = None) -> None:
        self.work = work
        self.state = work / "state"
        self.run_dir = work / "run"
        self.socket = self.run_dir / "api.sock"
        self.runtime = work / "runtime"
        self.log = work / "daemon.log"
        self.bridge = f"{bridge_prefix}{uuid.uuid4().hex[:6]}"
        self.subnet = f"10.{subnet_octet}.{random.randint(2, 250)}.0/24"
        self.executable = executable or Path(sys.executable).with_name("flatstack")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLATSTACK_")}
        self.env = {**env, "FLATSTACK_SOCKET": str(self.socket)}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60, extra: tuple[str, ...] = (),
              preexec_fn: Callable[[], None] | None = None) -> PrivateDaemon:
        """Start the daemon and return once its API answers."""
        from flatstack.api.client import Client, path

        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.executable), "daemon", "--state-dir", str(self.state), "--socket",
                 str(self.socket), "--runtime-root", str(self.runtime), "--bridge",
                 self.bridge, "--subnet", self.subnet, *extra], stdin=subprocess.DEVNULL,
                stdout=log, stderr=log, env=self.env, start_new_session=True,
                preexec_fn=preexec_fn)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"flatstack daemon exited {self.proc.returncode}: "
                                   f"{self.log.read_text()[-4000:]}")
            try:
                Client(str(self.socket), timeout=5).call("GET", path("version"))
                return self
            except Exception:  # not listening yet
                if time.monotonic() > deadline:
                    raise RuntimeError("flatstack daemon did not answer: "
                                       f"{self.log.read_text()[-4000:]}") from None
                time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Signal the daemon and wait for it; its exit status."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self.proc = None
        return code

    def remove_containers(self) -> None:
        """Remove every container through the API (one gone meanwhile is fine)."""
        from flatstack.api.client import ApiError, Client, path

        api = Client(str(self.socket), timeout=120)
        for c in api.call("GET", path("containers"), params={"all": True}):
            try:
                api.call("DELETE", path("containers", c["id"]), params={"force": True})
            except ApiError as err:
                if err.status != 404:  # 404: removed meanwhile (an app's instance)
                    raise

    def close(self) -> None:
        """Containers, daemon, supervisor and bridge go; errors are reported, not raised."""
        from flatstack.engine.client import SupervisorClient
        from flatstack.errors import FlatstackError
        from flatstack.network import netns, rules

        try:
            if self.proc is None:
                self.start()  # a stopped daemon: bring it back to remove what it made
            self.remove_containers()
            self.stop()
        except Exception as err:  # cleanup goes on
            print(f"flatstack cleanup: {err}", file=sys.stderr)
            if self.proc is not None:
                self.proc.kill()
                self.proc.wait()
                self.proc = None
        try:
            SupervisorClient(str(self.run_dir / "supervisor.sock"), timeout=5).call("shutdown")
        except FlatstackError:
            pass
        rules.remove_bridge(self.bridge)
        netns.release_dir(str(self.run_dir))
