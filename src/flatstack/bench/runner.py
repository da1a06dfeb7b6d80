"""Run the benchmark: set up platforms, interleave them per case, collect every sample.

Order: for each case, ``repeats`` rounds; in each round every platform runs once and
the platform order rotates from round to round, so slow drift of the (shared) machine
spreads over all platforms instead of landing on one.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform as pyplatform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flatstack.bench import oci
from flatstack.bench import platforms as P
from flatstack.bench import rootfs as R
from flatstack.bench import workloads as W
from flatstack.bench.podman import Podman
from flatstack.bench.vm import VM
from flatstack.network import rules

ALL_PLATFORMS = ("bare", "flatrun", "runc", "crun", "podman", "gvisor", "vm")
REPO = Path(__file__).resolve().parents[3]
LOCK = "/run/lock/flatstack-bench.lock"


def flatrun_binary() -> str:
    """The project's flatrun launcher (venv), else flatrun on PATH."""
    local = REPO / ".venv" / "bin" / "flatrun"
    if local.exists():
        return str(local)
    return shutil.which("flatrun") or "flatrun"


def make_platform(name: str) -> P.Platform:
    if name == "bare":
        return P.Bare()
    if name == "flatrun":
        return oci.Flatrun(flatrun_binary())
    if name == "runc":
        return oci.Runc()
    if name == "crun":
        return oci.Crun()
    if name == "podman":
        return Podman()
    if name == "gvisor":
        return oci.Gvisor()
    if name == "vm":
        return VM()
    raise ValueError(f"--platforms: unknown platform {name!r}; known: {', '.join(ALL_PLATFORMS)}")


def parse_platforms(text: str | None) -> list[str]:
    if not text:
        return list(ALL_PLATFORMS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL_PLATFORMS]
    if unknown:
        raise ValueError(f"--platforms: unknown platform(s) {', '.join(unknown)}; "
                         f"known: {', '.join(ALL_PLATFORMS)}")
    if "bare" not in names:
        names.insert(0, "bare")  # every ratio is to bare metal
    return names


@dataclass
class Results:
    """Everything a report needs; serialised as results.json."""

    profile: str
    machine: dict[str, Any]
    workdir: str = ""  # removed at the end of the run
    versions: dict[str, str] = field(default_factory=dict)
    platforms: dict[str, dict[str, Any]] = field(default_factory=dict)
    cases: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    seconds: float = 0.0
    skipped_cases: list[str] = field(default_factory=list)  # left out by the profile

    def to_json(self) -> dict[str, Any]:
        return {"profile": self.profile, "machine": self.machine, "workdir": self.workdir,
                "versions": self.versions,
                "platforms": self.platforms, "cases": self.cases, "started": self.started,
                "seconds": self.seconds, "skipped_cases": self.skipped_cases}


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, kernel, distribution; KVM flavour."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError):
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    distro = ""
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                distro = line.split("=", 1)[1].strip('"')
    cgroup = "v2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "v1/hybrid"
    from flatstack.bench.vm import is_pvm

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_mib": mem_kib // 1024,
            "kernel": os.uname().release, "arch": os.uname().machine, "distro": distro,
            "python": pyplatform.python_version(), "cgroups": cgroup,
            "kvm": ("PVM (stock guest kernels hang: QEMU uses TCG)" if is_pvm() else
                    "yes" if os.path.exists("/dev/kvm") else "no"),
            "hostname": os.uname().nodename}


def tool_versions() -> dict[str, str]:
    versions = {}
    for tool, path in R.available_tools().items():
        if path is None:
            versions[tool] = "not installed"
            continue
        flag = "-v" if tool == "iperf3" else "--version"
        versions[tool] = P.tool_version([path, flag])
    versions["busybox"] = P.tool_version(["/bin/busybox"]).split(" multi-call")[0]
    return versions


def _runc_spec(work: Path) -> dict[str, Any]:
    spec_dir = work / "runc-spec"
    spec_dir.mkdir()
    if shutil.which("runc"):
        subprocess.run(["runc", "spec"], cwd=spec_dir, check=True, capture_output=True)
        spec = json.loads((spec_dir / "config.json").read_text())
    else:
        from flatstack.oci.defaults import default_spec

        spec = default_spec()
    spec["ociVersion"] = "1.0.2"  # crun 1.8.1 rejects newer
    return spec


class Bench:
    """One benchmark run: ``setup`` (rootfs, platforms), ``measure``, ``close``."""

    def __init__(self, profile: W.Profile, workloads: list[W.Workload], platforms: list[str],
                 log: Callable[[str], None] = print) -> None:
        self.profile = profile
        self.workloads = workloads
        self.names = platforms
        self.log = log
        self.active: dict[str, P.Platform] = {}
        self.work = Path(tempfile.mkdtemp(prefix="flatstack-bench-", dir="/var/tmp"))
        self.work.chmod(0o755)
        self.results = Results(profile.name, machine(), workdir=str(self.work))
        self.results.skipped_cases = [c.name for w in workloads for c in w.cases
                                      if c.name in profile.skip_cases]

    # -- set-up --------------------------------------------------------------------
    def _lock(self) -> None:
        """One bench at a time: runs share the bridge, the tap and the machine."""
        import fcntl

        os.makedirs(os.path.dirname(LOCK), exist_ok=True)
        self.lock = open(LOCK, "w")  # noqa: SIM115  (held until close)
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.log(f"waiting for another flatstack bench to finish ({LOCK})")
            fcntl.flock(self.lock, fcntl.LOCK_EX)

    def setup(self) -> None:
        self._lock()
        for tool, path in R.available_tools().items():
            if path is None:
                self.log(f"[warn] {tool} is not installed: its workloads will fail on every "
                         "platform (Debian package of the same name)")
        rootfs = R.build(self.work / "rootfs")
        env = P.Env(self.work, rootfs, _runc_spec(self.work), vm_cases=self.profile.vm_cases)
        self.results.versions = tool_versions()
        for name in self.names:
            plat = make_platform(name)
            record: dict[str, Any] = {"label": plat.label or name, "present": False}
            self.results.platforms[name] = record
            reason = plat.missing()
            if reason is None:
                try:
                    plat.prepare(env)
                except (P.PlatformError, OSError, subprocess.SubprocessError) as err:
                    reason = f"set-up failed: {err}"
                    plat.close()
            if reason is not None:
                record["reason"] = reason
                self.log(f"[skip] {name}: {reason}")
                continue
            record["present"] = True
            self.results.versions.update(plat.versions())
            self.active[name] = plat
        self.env = env

    def cases(self) -> list[W.Case]:
        return [c for w in self.workloads for c in w.cases
                if c.name not in self.profile.skip_cases]

    def steps(self) -> int:
        """Number of progress steps (one per sample)."""
        total = 0
        for case in self.cases():
            for name, plat in self.active.items():
                if plat.unsupported(case) is None:
                    total += self._count(name, case)
        return total

    def _count(self, name: str, case: W.Case) -> int:
        plat = self.active[name]
        n = getattr(self.profile, plat.repeats_attr)
        if case.kind == "startup":
            return n if name == "vm" else self.profile.startup_runs
        if case.kind == "density":
            return 1
        if case.kind == "serve" and self.profile.serve_repeats:
            return min(n, self.profile.serve_repeats)
        return n

    # -- measuring -----------------------------------------------------------------
    def measure(self, advance: Callable[[str], None] = lambda _: None) -> Results:
        started = time.monotonic()
        for case in self.cases():
            record = {"name": case.name, "workload": case.workload, "title": case.title,
                      "unit": case.unit, "higher_is_better": case.higher_is_better,
                      "kind": case.kind, "mode": case.mode, "samples": {}, "errors": {},
                      "unsupported": {}}
            if case.kind == "run":
                record["argv"] = W.argv_for(case, self.profile)
            self.results.cases.append(record)
            case_started = time.monotonic()
            order = [n for n, p in self.active.items()
                     if not self._note_unsupported(record, n, p, case)]
            rounds = max((self._count(n, case) for n in order), default=0)
            for i in range(rounds):
                rotated = order[i % len(order):] + order[:i % len(order)]
                for name in rotated:
                    if i >= self._count(name, case) or name in record["errors"]:
                        continue
                    advance(f"{case.name} on {name}")
                    try:
                        value = self._sample(self.active[name], name, case)
                    except (P.PlatformError, ValueError, OSError,
                            subprocess.SubprocessError) as err:
                        record["errors"][name] = str(err)[-600:]
                        self.log(f"[fail] {case.name} on {name}: {str(err)[-300:]}")
                        for _ in range(i + 1, self._count(name, case)):
                            advance(f"{case.name} on {name} (skipped)")
                        continue
                    record["samples"].setdefault(name, []).append(value)
            record["seconds"] = round(time.monotonic() - case_started, 1)
        self.results.seconds = time.monotonic() - started
        return self.results

    @staticmethod
    def _note_unsupported(record: dict[str, Any], name: str, plat: P.Platform,
                          case: W.Case) -> bool:
        why = plat.unsupported(case)
        if why:
            record["unsupported"][name] = why
        return why is not None

    def _sample(self, plat: P.Platform, name: str, case: W.Case) -> float:
        p = self.profile
        if case.kind == "run":
            volume = None
            if case.volume:
                volume = self.work / f"vol-{name}"
                volume.mkdir(exist_ok=True)
            out = plat.run(W.argv_for(case, p), volume=volume, timeout=p.seconds * 6 + 120)
            return W.PARSERS[case.name](out)
        if case.kind == "serve":
            return self._serve(plat, case)
        if case.kind == "startup":
            return plat.startup() * 1000
        if case.kind == "density":
            return self._density(plat, name)
        raise ValueError(f"unknown case kind {case.kind}")

    def _serve(self, plat: P.Platform, case: W.Case) -> float:
        p = self.profile
        if case.workload == "iperf3":
            server, port = W.iperf3_server(), W.IPERF_PORT
            client = W.iperf3_client
        else:
            server, port = W.sockperf_server(), W.SOCKPERF_PORT
            client = W.sockperf_client
        served = plat.serve(server, case.mode, port)
        try:
            argv = client(p, served.host, served.port)
            argv[0] = shutil.which(argv[0]) or argv[0]
            deadline = time.monotonic() + 5
            while True:  # the server may still be starting: retry refused connections
                try:
                    out, _ = P.run_logged(argv, self.work, p.seconds * 4 + 60)
                    return W.PARSERS[case.workload](out)
                except (P.PlatformError, ValueError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.3)
        finally:
            served.stop()

    def _density(self, plat: P.Platform, name: str) -> float:
        n = self.profile.density_containers
        if name == "vm":
            n = min(n, 2)  # each guest boots for seconds under TCG
        with plat.idle(n):
            time.sleep(1.0)
            pss = _pss_mib(str(self.work))
        return pss / n

    def close(self) -> None:
        for plat in self.active.values():
            with contextlib.suppress(Exception):
                plat.close()
        env = getattr(self, "env", None)
        if env is not None and env.networks is not None:
            for cid in env.networks.attached():
                with contextlib.suppress(Exception):
                    env.networks.detach(cid)
            rules.remove_bridge(P.BENCH_BRIDGE)
        _umount_below(self.work)
        shutil.rmtree(self.work, ignore_errors=True)
        lock = getattr(self, "lock", None)
        if lock is not None:
            lock.close()


def _pss_mib(work: str) -> float:
    """Summed PSS of every process of this run: containers, monitors, sandboxes, QEMU.

    A process belongs to the run when its command line or its root directory names the
    run's work directory (conmon's and runsc's --root, QEMU's -initrd path) or it sits in
    a cgroup named after a bench container (``/fsb-...``; runs are serialised by a lock).
    Kernel memory (cgroups, namespaces, page tables) is not PSS.
    """
    total_kib = 0
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ")
            root = os.readlink(os.path.join(entry.path, "root"))
            cgroup = Path(entry.path, "cgroup").read_text()
            if work not in root and work.encode() not in cmdline and "/fsb-" not in cgroup:
                continue
            for line in Path(entry.path, "smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kib += int(line.split()[1])
                    break
        except OSError:
            continue  # exited meanwhile, or a kernel thread
    return total_kib / 1024


def _umount_below(path: Path) -> None:
    prefix = str(path) + "/"
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if line.split()[4].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
