"""OCI runtimes driven through their command line: flatrun, runc, crun and gVisor's runsc.

They share one ``config.json`` (runc's default spec), a fresh overlay root per container
over the bench rootfs and flatstack's CNI network (bridge + portmap), so only the runtime
differs.  crun runs in a private mount namespace without this host's cgroup2 mount.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from flatstack.bench.platforms import (
    BENCH_NETWORK,
    Env,
    Platform,
    PlatformError,
    Served,
    free_port,
    run_logged,
    tool_version,
)


def _crun_namespace() -> None:
    """preexec_fn for crun: a private mount namespace without the cgroup2 mount."""
    from flatstack.errors import KernelError
    from flatstack.kernel import mount, ns

    ns.unshare(ns.CLONE_NEWNS)
    mount.mount(None, "/", None, mount.MS_REC | mount.MS_PRIVATE)
    with contextlib.suppress(KernelError):  # pure v2 or v1 hosts have no such mount
        mount.umount("/sys/fs/cgroup/unified", mount.MNT_DETACH)


class OCIRuntime(Platform):
    """A runc-compatible runtime driven through its command line."""

    binary = ""
    global_args: tuple[str, ...] = ()
    preexec: Callable[[], None] | None = None

    def __init__(self) -> None:
        self.count = 0

    def argv0(self) -> str:
        return shutil.which(self.binary) or self.binary

    def missing(self) -> str | None:
        if not (os.path.exists(self.binary) or shutil.which(self.binary)):
            return f"{self.binary} is not installed"
        return None

    def prepare(self, env: Env) -> None:
        super().prepare(env)
        self.state = env.work / f"state-{self.name}"
        self.base = env.work / f"ctr-{self.name}"
        self.base.mkdir(exist_ok=True)

    def versions(self) -> dict[str, str]:
        return {self.name: tool_version([self.argv0(), "--version"])}

    def cli(self, mode: str = "none") -> list[str]:
        return [self.argv0(), "--root", str(self.state), *self.global_args]

    # bundles
    def bundle(self, argv: list[str], *, volume: Path | None = None, netns: str | None = "",
               overlay: bool = True) -> tuple[str, Path, Callable[[], None]]:
        """A bundle over a fresh overlay root: (id, bundle dir, cleanup)."""
        self.count += 1
        cid = f"fsb-{self.name}-{self.count}-{uuid.uuid4().hex[:6]}"
        bundle = self.base / cid
        bundle.mkdir()
        config = copy.deepcopy(self.env.spec)
        mounted = False
        if overlay:
            for d in ("upper", "overlay-work", "rootfs"):
                (bundle / d).mkdir()
            opts = (f"lowerdir={self.env.rootfs},upperdir={bundle / 'upper'},"
                    f"workdir={bundle / 'overlay-work'}")
            subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts,
                            str(bundle / "rootfs")], check=True, capture_output=True)
            mounted = True
            config["root"] = {"path": str(bundle / "rootfs"), "readonly": False}
        else:
            config["root"] = {"path": str(self.env.rootfs), "readonly": True}
        proc = config["process"]
        proc.update(args=argv, terminal=False, cwd="/")
        if volume is not None:
            config["mounts"].append({"destination": "/vol", "type": "bind",
                                     "source": str(volume), "options": ["rbind", "rw"]})
        namespaces = [n for n in config["linux"]["namespaces"] if n["type"] != "network"]
        if netns is not None:  # None: the host's network namespace
            namespaces.append({"type": "network", **({"path": netns} if netns else {})})
        config["linux"]["namespaces"] = namespaces
        (bundle / "config.json").write_text(json.dumps(config))

        def cleanup() -> None:
            subprocess.run([*self.cli(), "delete", "--force", cid], capture_output=True,
                           preexec_fn=self.preexec, check=False)
            if mounted:
                subprocess.run(["umount", "-l", str(bundle / "rootfs")], capture_output=True,
                               check=False)
            shutil.rmtree(bundle, ignore_errors=True)
        return cid, bundle, cleanup

    def run(self, argv: list[str], *, volume: Path | None, timeout: float) -> str:
        cid, bundle, cleanup = self.bundle(argv, volume=volume)
        try:
            return run_logged([*self.cli(), "run", "--bundle", str(bundle), cid],
                              self.env.work, timeout, preexec=self.preexec)[0]
        finally:
            cleanup()

    def _start(self, cid: str, bundle: Path) -> None:
        """create + start a detached container (stdio in a log file)."""
        log = bundle / "container.log"
        with open(log, "w") as f:
            proc = subprocess.run([*self.cli(), "create", "--bundle", str(bundle), cid],
                                  stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                                  preexec_fn=self.preexec, timeout=60, check=False)
        if proc.returncode != 0:
            raise PlatformError(f"{self.name} create failed: "
                                f"{log.read_text(errors='replace').strip()[-400:]}")
        run_logged([*self.cli(), "start", cid], self.env.work, 60, preexec=self.preexec)

    def _kill(self, cid: str) -> None:
        subprocess.run([*self.cli(), "kill", cid, "KILL"], capture_output=True,
                       preexec_fn=self.preexec, check=False, timeout=30)

    def serve(self, argv: list[str], mode: str, port: int) -> Served:
        networks = self.env.net()
        cid_hint = f"fsbn-{self.name}-{uuid.uuid4().hex[:6]}"
        host_port = free_port()
        info = None
        if mode == "host":
            netns: str | None = None
        else:
            ports = [f"{host_port}:{port}"] if mode == "port" else []
            info = networks.attach(cid_hint, network=BENCH_NETWORK, ports=ports)
            netns = info.netns_path
        try:
            cid, bundle, cleanup = self.bundle(argv, netns=netns)
        except BaseException:
            networks.detach(cid_hint)
            raise

        def stop() -> None:
            self._kill(cid)
            cleanup()
            if info is not None:
                networks.detach(cid_hint)
        try:
            self._start(cid, bundle)
        except BaseException:
            stop()
            raise
        if mode == "host":
            return Served("127.0.0.1", port, stop)
        if mode == "port":
            return Served("127.0.0.1", host_port, stop)
        return Served(info.ip, port, stop)

    def startup(self) -> float:
        cid, bundle, cleanup = self.bundle(["/bin/true"], overlay=False)
        try:
            return run_logged([*self.cli(), "run", "--bundle", str(bundle), cid],
                              self.env.work, 60, preexec=self.preexec)[1]
        finally:
            cleanup()

    @contextlib.contextmanager
    def idle(self, n: int) -> Iterator[None]:
        cleanups = []
        try:
            for _ in range(n):
                cid, bundle, cleanup = self.bundle(["sleep", "3600"], overlay=False)
                cleanups.append((cid, cleanup))
                self._start(cid, bundle)
            yield
        finally:
            for cid, _ in cleanups:
                self._kill(cid)
            time.sleep(0.2)
            for _, cleanup in cleanups:
                cleanup()


class Flatrun(OCIRuntime):
    name = "flatrun"
    label = "flatstack (flatrun)"

    def __init__(self, binary: str) -> None:
        super().__init__()
        self.binary = binary


class Runc(OCIRuntime):
    name = "runc"
    label = "runc"
    binary = "runc"


class Crun(OCIRuntime):
    name = "crun"
    label = "crun"
    binary = "crun"
    preexec = staticmethod(_crun_namespace)


class Gvisor(OCIRuntime):
    """gVisor's runsc on its ptrace platform (KVM is not usable here)."""

    name = "gvisor"
    label = "gVisor (runsc, ptrace)"
    binary = "runsc"

    def versions(self) -> dict[str, str]:
        return {self.name: tool_version([self.argv0(), "--version"])}

    def cli(self, mode: str = "none") -> list[str]:
        return [self.argv0(), "--root", str(self.state), "--platform=ptrace",
                "--ignore-cgroups", f"--network={mode}"]

    def serve(self, argv: list[str], mode: str, port: int) -> Served:
        self._mode = "host" if mode == "host" else "sandbox"
        try:
            return super().serve(argv, mode, port)
        finally:
            self._mode = "none"

    def _start(self, cid: str, bundle: Path) -> None:
        # runsc takes the network mode as a global flag; ``start`` is where it applies it.
        mode = getattr(self, "_mode", "none")
        log = bundle / "container.log"
        with open(log, "w") as f:
            proc = subprocess.run([*self.cli(mode), "create", "--bundle", str(bundle), cid],
                                  stdin=subprocess.DEVNULL, stdout=f, stderr=f, timeout=60,
                                  check=False)
        if proc.returncode != 0:
            raise PlatformError(f"runsc create failed: "
                                f"{log.read_text(errors='replace').strip()[-400:]}")
        # ``start`` sets up the sandbox's network.  runsc 20221219 fails here with the CNI
        # namespace ("cannot run with network enabled in root network namespace"): its
        # sandbox stays in the caller's namespace; started inside the namespace instead, its
        # abstract control socket is out of ``start``'s reach.  Reported as a failure.
        run_logged([*self.cli(mode), "start", cid], self.env.work, 60)
