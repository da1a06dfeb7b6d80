"""Shared pieces of the engine benchmarks (``run_latency.py``, ``density.py``).

A busybox image built here (an OCI layout for flatstack, a rootfs tarball for podman),
a real ``flatstack daemon`` on private directories with its own bridge and subnet, and
podman on private storage with the settings this machine needs (MACHINE-NOTES: private
``--root/--runroot``, cgroupfs, file events, ``default_ulimits``, crun through a wrapper
that hides the hybrid cgroup2 mount).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from flatstack.api import frames  # noqa: E402
from flatstack.api.client import Client, path  # noqa: E402
from flatstack.testing import PrivateDaemon  # noqa: E402
from flatstack.tools.busybox import build_image, build_rootfs  # noqa: E402

IMAGE = "localhost/bench-busybox:latest"
FLATSTACK = REPO / ".venv" / "bin" / "flatstack"
CRUN_WRAPPER = """#!/bin/sh
exec unshare -m --propagation private sh -c \
 'umount /sys/fs/cgroup/unified 2>/dev/null; exec crun "$@"' crun "$@"
"""
SYSTEM_CONTAINERS_CONF = "/usr/share/containers/containers.conf"
ULIMITS = 'default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]\n'


def busybox_image(work: Path) -> tuple[Path, Path]:
    """An OCI layout (flatstack) and a rootfs tarball (``podman import``) of busybox."""
    layout = Path(build_image(str(work / "layout"), lambda _root: None,
                              ["--config.cmd", "sh"]))
    rootfs = build_rootfs(str(work / "rootfs"))
    tar = work / "busybox.tar"
    subprocess.run(["tar", "-C", rootfs, "-cf", str(tar), "."], check=True)
    return layout, tar


class FlatstackDaemon(PrivateDaemon):
    """``flatstack daemon`` on directories under ``work`` with a private bridge/subnet."""

    name = "flatstack"

    def __init__(self, work: Path) -> None:
        super().__init__(work, bridge_prefix="fsbn", subnet_octet=93, executable=FLATSTACK)

    def start(self, timeout: float = 60, extra: tuple[str, ...] = ("--log-level", "warning"),
              preexec_fn: Any = None) -> FlatstackDaemon:
        super().start(timeout, extra, preexec_fn)
        return self

    def api(self, timeout: float | None = 300.0) -> Client:
        return Client(str(self.socket), timeout=timeout)

    def import_image(self, layout: Path) -> None:
        self.api().call("POST", path("images", "import"),
                        body={"path": str(layout), "name": IMAGE})

    def run_rm(self, network: str, command: list[str] | None = None) -> float:
        """One foreground ``run --rm`` request (what the CLI sends); its wall time."""
        body = {"image": IMAGE, "command": command or ["true"], "network": network,
                "remove": True}
        t0 = time.perf_counter()
        resp = self.api(timeout=None).open("POST", path("containers"), body=body,
                                           params={"attach": True, "pull": "never"})
        status: dict[str, Any] = {}
        for stream, payload in frames.read(resp):  # type: ignore[arg-type]
            if stream == frames.STATUS:
                import json

                status = json.loads(payload)
        resp.close()
        elapsed = time.perf_counter() - t0
        if status.get("exit_code") != 0:
            raise RuntimeError(f"flatstack API run --rm: {status}")
        return elapsed

    def cli_run_rm(self, network: str) -> float:
        """``flatstack run --rm IMAGE true`` as a subprocess; its wall time."""
        t0 = time.perf_counter()
        proc = subprocess.run([str(FLATSTACK), "run", "--rm", "--network", network, IMAGE,
                               "true"], env=self.env, capture_output=True, text=True,
                              check=False)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"flatstack run --rm exited {proc.returncode}: {proc.stderr}")
        return elapsed

    def run_detached(self, network: str, command: list[str]) -> dict[str, Any]:
        body = {"image": IMAGE, "command": command, "network": network}
        return self.api().call("POST", path("containers"), body=body,  # type: ignore[no-any-return]
                               params={"pull": "never"})

    def containers(self) -> list[dict[str, Any]]:
        return self.api().call("GET", path("containers"),  # type: ignore[no-any-return]
                               params={"all": True})

    def remove(self, cid: str) -> None:
        self.api().call("DELETE", path("containers", cid), params={"force": True})

    def close(self) -> None:
        """Containers, daemon, supervisor and bridge go (only if it was started)."""
        if self.proc is not None:
            super().close()

    def engine_pids(self) -> list[int]:
        """The daemon and the supervisor: the processes flatstack adds to the host."""
        from flatstack.engine.client import SupervisorClient

        pids = [self.proc.pid] if self.proc else []
        sup = SupervisorClient(str(self.run_dir / "supervisor.sock"), timeout=5)
        pids.append(int(sup.call("ping")["pid"]))
        return pids


class Podman:
    """podman with private storage and the given OCI runtime (crun or runc)."""

    def __init__(self, work: Path, runtime: str, tar: Path) -> None:
        base = work / f"podman-{runtime}"
        base.mkdir()
        packaged = Path(SYSTEM_CONTAINERS_CONF)
        text = packaged.read_text() if packaged.exists() else "[containers]\n"
        if "[containers]\n" not in text:
            text += "\n[containers]\n"
        conf = base / "containers.conf"
        conf.write_text(text.replace("[containers]\n", "[containers]\n" + ULIMITS, 1))
        self.env = dict(os.environ, CONTAINERS_CONF=str(conf))
        self.root = base
        runtime_path = runtime
        if runtime == "crun":
            wrapper = base / "crun-wrapper"
            wrapper.write_text(CRUN_WRAPPER)
            wrapper.chmod(0o755)
            runtime_path = str(wrapper)
        self.name = f"podman+{runtime}"
        self.argv = ["podman", "--root", str(base / "storage"), "--runroot", str(base / "run"),
                     "--cgroup-manager", "cgroupfs", "--events-backend", "file",
                     "--tmpdir", str(base / "tmp"), "--runtime", runtime_path]
        self.podman(["import", str(tar), IMAGE])

    def podman(self, args: list[str]) -> str:
        proc = subprocess.run([*self.argv, *args], env=self.env, capture_output=True,
                              text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{self.name} {args[0]}: {proc.stderr.strip()}")
        return proc.stdout

    def run_rm(self, network: str) -> float:
        net = "none" if network == "none" else "bridge"
        t0 = time.perf_counter()
        self.podman(["run", "--rm", "--network", net, IMAGE, "true"])
        return time.perf_counter() - t0

    def run_detached(self, network: str, command: list[str]) -> str:
        net = "none" if network == "none" else "bridge"
        return self.podman(["run", "-d", "--network", net, IMAGE, *command]).strip()

    def pid(self, cid: str) -> int:
        return int(self.podman(["inspect", "--format", "{{.State.Pid}}", cid]).strip())

    def close(self) -> None:
        for args in (["rm", "--all", "--force", "--time", "0"], ["system", "reset", "--force"]):
            subprocess.run([*self.argv, *args], env=self.env, capture_output=True,
                           check=False)


def summary(samples: list[float]) -> dict[str, float]:
    """median, p90, min, max in ms and the sample count."""
    ms = sorted(s * 1000 for s in samples)
    p90 = ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
    return {"median_ms": round(statistics.median(ms), 1), "p90_ms": round(p90, 1),
            "min_ms": round(ms[0], 1), "max_ms": round(ms[-1], 1), "n": len(ms)}


def machine() -> dict[str, Any]:
    """What the numbers were measured on, including the load (the machine is shared)."""
    return {"kernel": os.uname().release, "cpus": os.cpu_count(),
            "loadavg": [round(x, 2) for x in os.getloadavg()]}
