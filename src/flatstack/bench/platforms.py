"""Where workloads run: the platform interface, shared helpers and bare metal.

Each platform runs an argv to completion with the volume bind-mounted at ``/vol``,
serves a network server in a mode (``host``, ``bridge``, ``port``), times a start-up
and keeps N idle containers alive.  The OCI runtimes share one ``config.json``
(runc's default spec), one overlay root per container over the benchmark rootfs and
flatstack's own CNI network (bridge + portmap), so only the runtime differs.
OCI runtimes live in :mod:`flatstack.bench.oci`, podman in :mod:`flatstack.bench.podman`,
the VM in :mod:`flatstack.bench.vm`.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flatstack.bench.workloads import Case

BENCH_NETWORK = "fsbench"
BENCH_SUBNET = "10.89.77.0/24"
BENCH_BRIDGE = "fsbench0"


class PlatformError(RuntimeError):
    """A platform could not run a workload."""


@dataclass
class Env:
    """What every platform shares: the work directory, the rootfs and the OCI spec."""

    work: Path
    rootfs: Path
    spec: dict[str, Any] = field(default_factory=dict)
    vm_cases: tuple[str, ...] | None = None  # the profile's VM subset
    networks: Any = None  # flatstack.network.attach.Networks, made on first use

    def net(self) -> Any:
        if self.networks is None:
            from flatstack.network.attach import Networks

            self.networks = Networks(state_dir=str(self.work / "net"),
                                     run_dir=str(self.work / "netns"))
            self.networks.store.create(BENCH_NETWORK, BENCH_SUBNET, bridge=BENCH_BRIDGE)
        return self.networks


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _files(work: Path) -> tuple[Path, Path]:
    tag = uuid.uuid4().hex[:8]
    return work / f"out-{tag}", work / f"err-{tag}"


def run_logged(argv: list[str], work: Path, timeout: float, *,
               env: dict[str, str] | None = None,
               preexec: Callable[[], None] | None = None) -> tuple[str, float]:
    """Run ``argv`` with stdio in files (a container inherits them): (stdout, seconds)."""
    out, err = _files(work)
    try:
        with open(out, "w") as o, open(err, "w") as e:
            started = time.perf_counter()
            try:
                proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=o, stderr=e,
                                      timeout=timeout, env=env, preexec_fn=preexec,
                                      check=False)
            except subprocess.TimeoutExpired as exc:
                raise PlatformError(f"{argv[0]} timed out after {timeout:.0f} s") from exc
            seconds = time.perf_counter() - started
        text = out.read_text(errors="replace")
        if proc.returncode != 0:
            why = err.read_text(errors="replace").strip() or text.strip()
            raise PlatformError(f"{Path(argv[0]).name} {' '.join(argv[1:4])}... exited "
                                f"{proc.returncode}: {why[-500:]}")
        return text, seconds
    finally:
        out.unlink(missing_ok=True)
        err.unlink(missing_ok=True)


@dataclass
class Served:
    """A running server: where the host's client connects, and how to stop it."""

    host: str
    port: int
    stop: Callable[[], None]


class Platform:
    """Base class: a name, an availability check and the four operations."""

    name = ""
    label = ""
    repeats_attr = "repeats"  # which Profile field gives this platform's sample count

    def missing(self) -> str | None:
        """Why this platform cannot run here, or None."""
        return None

    def prepare(self, env: Env) -> None:
        self.env = env

    def unsupported(self, case: Case) -> str | None:
        """Why this platform does not measure ``case``, or None."""
        return None

    def run(self, argv: list[str], *, volume: Path | None, timeout: float) -> str:
        raise NotImplementedError

    def serve(self, argv: list[str], mode: str, port: int) -> Served:
        raise NotImplementedError

    def startup(self) -> float:
        raise NotImplementedError

    @contextlib.contextmanager
    def idle(self, n: int) -> Iterator[None]:
        raise NotImplementedError
        yield

    def versions(self) -> dict[str, str]:
        return {}

    def close(self) -> None:
        """Remove whatever :meth:`prepare` left."""


def tool_version(argv: list[str]) -> str:
    """First line of a ``--version`` output, or why it failed."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unknown ({err})"
    text = (proc.stdout or proc.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def _wait_stopped(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# -- bare metal ---------------------------------------------------------------------
class Bare(Platform):
    """The host itself: the same binaries, run directly; the loopback for every network."""

    name = "bare"
    label = "bare metal"

    def prepare(self, env: Env) -> None:
        super().prepare(env)
        self.scratch = env.work / "bare-scratch"
        self.scratch.mkdir(exist_ok=True)
        self.data = env.work / "bare-data"
        self.data.mkdir(exist_ok=True)
        shutil.copy2(env.rootfs / "data" / "lower.dat", self.data / "lower.dat")

    def _host_argv(self, argv: list[str], volume: Path | None) -> list[str]:
        mapping = {"/scratch": str(self.scratch), "/data": str(self.data)}
        if volume is not None:
            mapping["/vol"] = str(volume)
        out = []
        for arg in argv:
            key, eq, value = arg.rpartition("=") if "=" in arg else ("", "", arg)
            for prefix, host in mapping.items():
                if value == prefix or value.startswith(prefix + "/"):
                    value = host + value[len(prefix):]
                    break
            out.append(f"{key}{eq}{value}")
        first = out[0]
        out[0] = str(self.env.rootfs / first.lstrip("/")) if first.startswith("/") else (
            shutil.which(first) or first)
        return out

    def run(self, argv: list[str], *, volume: Path | None, timeout: float) -> str:
        return run_logged(self._host_argv(argv, volume), self.env.work, timeout)[0]

    def serve(self, argv: list[str], mode: str, port: int) -> Served:
        log = open(self.env.work / f"serve-{uuid.uuid4().hex[:6]}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(self._host_argv(argv, None), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return Served("127.0.0.1", port, lambda: _wait_stopped([proc]))

    def startup(self) -> float:
        return run_logged(["/bin/true"], self.env.work, 30)[1]

    @contextlib.contextmanager
    def idle(self, n: int) -> Iterator[None]:
        procs = [subprocess.Popen([str(self.env.rootfs / "bin" / "busybox"), "sleep", "3600"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for _ in range(n)]
        try:
            yield
        finally:
            _wait_stopped(procs)
