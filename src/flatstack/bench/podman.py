"""podman with crun (through the hybrid-cgroup wrapper), private storage and netavark."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

from flatstack.bench.platforms import (
    Env,
    Platform,
    Served,
    free_port,
    run_logged,
    tool_version,
)

IMAGE = "localhost/flatstack-bench:latest"
CRUN_WRAPPER = """#!/bin/sh
exec unshare -m --propagation private sh -c \
 'umount /sys/fs/cgroup/unified 2>/dev/null; exec crun "$@"' crun "$@"
"""
ULIMITS = 'default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]\n'


class Podman(Platform):
    """podman with crun (hybrid-cgroup wrapper), private storage, netavark networking."""

    name = "podman"
    label = "podman (crun)"

    def missing(self) -> str | None:
        if shutil.which("podman") is None:
            return "podman is not installed"
        if shutil.which("crun") is None:
            return "crun (podman's runtime here) is not installed"
        return None

    def prepare(self, env: Env) -> None:
        super().prepare(env)
        base = env.work / "podman"
        base.mkdir(exist_ok=True)
        packaged = Path("/usr/share/containers/containers.conf")
        text = packaged.read_text() if packaged.exists() else "[containers]\n"
        conf = base / "containers.conf"
        conf.write_text(text.replace("[containers]\n", "[containers]\n" + ULIMITS, 1))
        wrapper = base / "crun-wrapper"
        wrapper.write_text(CRUN_WRAPPER)
        wrapper.chmod(0o755)
        self.penv = dict(os.environ, CONTAINERS_CONF=str(conf))
        self.argv = ["podman", "--root", str(base / "storage"), "--runroot",
                     str(base / "run"), "--cgroup-manager", "cgroupfs", "--events-backend",
                     "file", "--tmpdir", str(base / "tmp"), "--runtime", str(wrapper)]
        tar = base / "rootfs.tar"
        subprocess.run(["tar", "-C", str(env.rootfs), "-cf", str(tar), "."], check=True)
        self.pm("import", str(tar), IMAGE)
        tar.unlink()

    def pm(self, *args: str, timeout: float = 120) -> str:
        return run_logged([*self.argv, *args], self.env.work, timeout, env=self.penv)[0]

    def versions(self) -> dict[str, str]:
        return {"podman": tool_version(["podman", "--version"]),
                "crun": tool_version(["crun", "--version"])}

    def run(self, argv: list[str], *, volume: Path | None, timeout: float) -> str:
        vol = ["-v", f"{volume}:/vol"] if volume is not None else []
        return self.pm("run", "--rm", "--network", "none", *vol, IMAGE, *argv,
                       timeout=timeout)

    def serve(self, argv: list[str], mode: str, port: int) -> Served:
        name = f"fsb-{uuid.uuid4().hex[:8]}"
        host_port = free_port()
        net = {"host": ["--network", "host"], "bridge": ["--network", "bridge"],
               "port": ["--network", "bridge", "-p", f"127.0.0.1:{host_port}:{port}"]}[mode]
        self.pm("run", "-d", "--name", name, *net, IMAGE, *argv)

        def stop() -> None:
            subprocess.run([*self.argv, "rm", "-f", "-t", "0", name], env=self.penv,
                           capture_output=True, check=False)
        try:
            if mode == "bridge":
                ip = self.pm("inspect", "-f", "{{.NetworkSettings.IPAddress}}", name).strip()
                return Served(ip, port, stop)
            return Served("127.0.0.1", host_port if mode == "port" else port, stop)
        except BaseException:
            stop()
            raise

    def startup(self) -> float:
        return run_logged([*self.argv, "run", "--rm", "--network", "none", IMAGE, "true"],
                          self.env.work, 60, env=self.penv)[1]

    @contextlib.contextmanager
    def idle(self, n: int) -> Iterator[None]:
        names = []
        try:
            for _ in range(n):
                name = f"fsb-idle-{uuid.uuid4().hex[:8]}"
                names.append(name)
                self.pm("run", "-d", "--name", name, "--network", "none", IMAGE,
                        "sleep", "3600")
            yield
        finally:
            if names:
                subprocess.run([*self.argv, "rm", "-f", "-t", "0", *names], env=self.penv,
                               capture_output=True, check=False)

    def close(self) -> None:
        if hasattr(self, "argv"):
            subprocess.run([*self.argv, "rm", "--all", "--force"], env=self.penv,
                           capture_output=True, check=False)
            subprocess.run([*self.argv, "system", "reset", "--force"], env=self.penv,
                           capture_output=True, check=False)
