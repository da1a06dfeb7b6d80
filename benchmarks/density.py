#!/usr/bin/env python3
"""Density: host memory per idle container beyond the container's own processes,
flatstack beside podman (one conmon per container), one run.

For each engine (flatstack's daemon on private directories, then podman+crun on private
storage): warm up (one container run and removed: layers unpacked, supervisor up), let
the host settle, take a baseline, then start idle containers (busybox ``sleep 1000000``,
``--network none`` by default) one after another and measure at each checkpoint N
(default 100 and 500; ``--full`` adds 1000; ``--max`` caps, ``--time-budget`` stops an
engine early and measures what it reached; a MemAvailable floor stops it too).

Method (all from /proc and cgroupfs, no estimate from process lists alone):

- ``used``: host ``MemAvailable`` at the baseline minus at the checkpoint, per container:
  everything the host gave up, user and kernel (page tables, slab, namespaces, mounts,
  veths, records in page cache that cannot be reclaimed).
- ``own``: the containers' own memory, the sum of their memory cgroups' usage
  (``memory.usage_in_bytes`` on v1, ``memory.current`` on v2; on current kernels this
  includes the kernel memory charged to the container's processes), per container.
- ``overhead`` = ``used`` - ``own``: what running the container costs the host beyond its
  own processes. This is the issue's number (target <= 1 MiB for flatstack).
- ``engine_pss``: growth of the proportional set size of the engine's own processes
  (flatstack: daemon, supervisor and any descendants outside
  container cgroups; podman: the conmon processes and their descendants outside
  container cgroups), per container: the user-space part of ``overhead``, insensitive
  to other activity on the host.
- ``kernel``: growth of the host's kernel memory (Slab + PageTables + KernelStack +
  Percpu), per container; ``own_kernel``: the part charged to the containers' cgroups
  (``memory.kmem.usage_in_bytes`` on v1, ``kernel`` in ``memory.stat`` on v2).
  ``kernel_unreclaimable`` leaves out reclaimable slab (dentries, inodes), which
  MemAvailable counts as available.
- ``accounted`` = ``kernel`` - ``own_kernel`` + ``engine_pss``: the overhead built from
  its parts. It ignores other jobs' user memory, so it is the steadier number on a shared
  machine; it counts reclaimable slab as used (an upper bound in that respect) and misses
  what the kernel keeps outside those counters (page cache of records and logs, vmalloc).

MemAvailable is host-wide: other work on a shared machine moves it by tens of MiB
(``used`` can even come out negative at N=100), so read ``overhead`` beside
``accounted`` and prefer large N.
Everything made is removed afterwards (containers, netns, mounts, cgroups, bridge,
podman storage); leftover container processes are counted and reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, FlatstackDaemon, Podman, busybox_image, machine

COMMAND = ["sleep", "1000000"]
MIB = 1024 * 1024
FLOOR = 2 * 1024 * MIB  # stop starting containers below this MemAvailable


# -- host counters ---------------------------------------------------------------------
def meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes."""
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, value = line.split(":", 1)
        out[key] = int(value.split()[0]) * 1024
    return out


def memory_cgroup(pid: int) -> Path | None:
    """The memory cgroup directory of a process (v1 memory controller, else v2)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory" + rel)
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        for line in lines:
            if line.startswith("0::"):
                return Path("/sys/fs/cgroup" + line[3:])
    return None


def cgroup_usage(directory: Path) -> tuple[int, int]:
    """(all memory, kernel memory) charged to a memory cgroup, bytes."""
    try:
        if (directory / "memory.usage_in_bytes").exists():
            return (int((directory / "memory.usage_in_bytes").read_text()),
                    int((directory / "memory.kmem.usage_in_bytes").read_text()))
        stat = dict(line.split() for line in
                    (directory / "memory.stat").read_text().splitlines())
        return int((directory / "memory.current").read_text()), int(stat.get("kernel", 0))
    except OSError:
        return 0, 0


def pss(pid: int) -> int:
    """Proportional set size of a process, bytes (0 when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def engine_processes(roots: Iterable[int], container_cgroups: set[Path]) -> list[int]:
    """``roots`` and their descendants, minus processes inside a container's cgroup."""
    kids = children_map()
    out: list[int] = []
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in out or memory_cgroup(pid) in container_cgroups:
            continue
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


# -- engines ---------------------------------------------------------------------------
class Engine:
    """What density needs from an engine: start one, the container and engine pids."""

    name: str

    def start_one(self) -> str:
        raise NotImplementedError

    def container_pids(self, ids: list[str]) -> list[int]:
        raise NotImplementedError

    def engine_roots(self, ids: list[str]) -> list[int]:
        raise NotImplementedError

    def remove_all(self, ids: list[str]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class FlatstackEngine(Engine):
    name = "flatstack"

    def __init__(self, work: Path, layout: Path, network: str) -> None:
        self.daemon = FlatstackDaemon(work).start()
        self.daemon.import_image(layout)
        self.network = network
        self.pids: dict[str, int] = {}

    def start_one(self) -> str:
        record = self.daemon.run_detached(self.network, COMMAND)
        self.pids[record["id"]] = int(record.get("pid") or 0)
        return str(record["id"])

    def container_pids(self, ids: list[str]) -> list[int]:
        missing = [i for i in ids if not self.pids.get(i)]
        if missing:
            for c in self.daemon.containers():
                self.pids[c["id"]] = int(c.get("pid") or 0)
        return [self.pids[i] for i in ids if self.pids.get(i)]

    def engine_roots(self, ids: list[str]) -> list[int]:
        return self.daemon.engine_pids()

    def remove_all(self, ids: list[str]) -> None:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(self.daemon.remove, ids))

    def close(self) -> None:
        self.daemon.close()


class PodmanEngine(Engine):
    def __init__(self, work: Path, tar: Path, network: str, runtime: str) -> None:
        self.podman = Podman(work, runtime, tar)
        self.name = self.podman.name
        self.network = network

    def start_one(self) -> str:
        return self.podman.run_detached(self.network, COMMAND)

    def _inspect(self, ids: list[str], field: str) -> list[int]:
        out: list[int] = []
        for i in range(0, len(ids), 200):
            text = self.podman.podman(["inspect", "--format", "{{.State." + field + "}}",
                                       *ids[i:i + 200]])
            out.extend(int(x) for x in text.split() if int(x) > 0)
        return out

    def container_pids(self, ids: list[str]) -> list[int]:
        return self._inspect(ids, "Pid")

    def engine_roots(self, ids: list[str]) -> list[int]:
        return self._inspect(ids, "ConmonPid") if ids else []

    def remove_all(self, ids: list[str]) -> None:
        self.podman.podman(["rm", "--all", "--force", "--time", "0"])

    def close(self) -> None:
        self.podman.close()


# -- the measurement -------------------------------------------------------------------
def snapshot(engine: Engine, ids: list[str], settle_s: float) -> dict[str, Any]:
    """Readings after ``settle_s`` seconds; MemAvailable is the median of one reading a
    second over that time (damps other jobs' short spikes)."""
    available = []
    for _ in range(max(1, round(settle_s))):
        time.sleep(settle_s / max(1, round(settle_s)))
        available.append(meminfo()["MemAvailable"])
    pids = engine.container_pids(ids)
    cgroups = {cg for cg in (memory_cgroup(p) for p in pids) if cg is not None}
    info = meminfo()
    info["MemAvailable"] = int(statistics.median(available))
    procs = engine_processes(engine.engine_roots(ids), cgroups)
    usage = [cgroup_usage(cg) for cg in cgroups]
    return {"n": len(ids), "running": len(pids), "mem_available": info["MemAvailable"],
            "kernel": sum(info.get(k, 0) for k in ("Slab", "PageTables", "KernelStack",
                                                   "Percpu")),
            "kernel_unreclaimable": info["Slab"] - info["SReclaimable"] + sum(
                info.get(k, 0) for k in ("PageTables", "KernelStack", "Percpu")),
            "own": sum(u[0] for u in usage), "own_kernel": sum(u[1] for u in usage),
            "cgroups": len(cgroups),
            "engine_pss": sum(pss(p) for p in procs), "engine_processes": len(procs)}


def per_container(base: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    n = now["n"] or 1
    used = (base["mem_available"] - now["mem_available"]) / n
    own = (now["own"] - base["own"]) / n
    own_kernel = (now["own_kernel"] - base["own_kernel"]) / n
    engine_pss = (now["engine_pss"] - base["engine_pss"]) / n
    kernel = (now["kernel"] - base["kernel"]) / n
    unreclaimable = (now["kernel_unreclaimable"] - base["kernel_unreclaimable"]) / n

    def mib(x: float) -> float:
        return round(x / MIB, 3)

    return {"n": now["n"], "running": now["running"], "cgroups": now["cgroups"],
            "used_mib": mib(used), "own_mib": mib(own), "overhead_mib": mib(used - own),
            "engine_pss_mib": mib(engine_pss), "kernel_mib": mib(kernel),
            "kernel_unreclaimable_mib": mib(unreclaimable), "own_kernel_mib": mib(own_kernel),
            "accounted_mib": mib(kernel - own_kernel + engine_pss),
            "engine_processes": now["engine_processes"]}


def measure_engine(make: Callable[[], Engine], checkpoints: list[int], budget: float,
                   settle_s: float) -> dict[str, Any]:
    engine = make()
    ids: list[str] = []
    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {"engine": engine.name, "checkpoints": rows}
    try:
        warm = engine.start_one()
        engine.remove_all([warm])
        base = snapshot(engine, [], settle_s)
        t0 = time.monotonic()
        stopped = ""
        for target in checkpoints:
            while len(ids) < target:
                if time.monotonic() - t0 > budget:
                    stopped = f"time budget of {budget:.0f} s reached"
                    break
                if meminfo()["MemAvailable"] < FLOOR:
                    stopped = "MemAvailable below 2 GiB"
                    break
                try:
                    ids.append(engine.start_one())
                except Exception as err:  # measure what was reached, report the failure
                    stopped = f"container {len(ids) + 1} failed to start: {err}"
                    break
            if not ids:
                break
            elapsed = time.monotonic() - t0
            row = per_container(base, snapshot(engine, ids, settle_s))
            row["start_s"] = round(elapsed, 1)
            rows.append(row)
            print(f"{engine.name}: {row}", flush=True)
            if stopped:
                result["stopped"] = stopped
                break
        t1 = time.monotonic()
        pids = engine.container_pids(ids)
        engine.remove_all(ids)
        result["cleanup_s"] = round(time.monotonic() - t1, 1)
        time.sleep(1)
        result["leftover_processes"] = sum(os.path.exists(f"/proc/{p}") for p in pids)
    finally:
        try:
            engine.close()
        except Exception as err:  # report and go on
            print(f"cleanup {engine.name}: {err}", file=sys.stderr)
    return result


def print_table(doc: dict[str, Any]) -> None:
    print(f"\n{'engine':<13}{'N':>6}{'used':>8}{'own':>7}{'overhead':>10}{'engine pss':>12}"
          f"{'kernel':>8}{'unrecl':>8}{'own kern':>10}{'accounted':>11}{'start s':>9}"
          "   (MiB per container)")
    for res in doc["results"]:
        for r in res["checkpoints"]:
            print(f"{res['engine']:<13}{r['n']:>6}{r['used_mib']:>8.2f}{r['own_mib']:>7.2f}"
                  f"{r['overhead_mib']:>10.2f}{r['engine_pss_mib']:>12.2f}"
                  f"{r['kernel_mib']:>8.2f}{r['kernel_unreclaimable_mib']:>8.2f}"
                  f"{r['own_kernel_mib']:>10.2f}"
                  f"{r['accounted_mib']:>11.2f}{r['start_s']:>9.1f}")
        if res.get("stopped"):
            print(f"{res['engine']}: stopped early: {res['stopped']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,500", help="checkpoints, comma-separated")
    parser.add_argument("--full", action="store_true", help="checkpoints 100,500,1000")
    parser.add_argument("--max", type=int, default=1000, help="never more containers")
    parser.add_argument("--time-budget", type=float, default=900,
                        help="seconds of container starts per engine before stopping")
    parser.add_argument("--network", default="none", choices=("none", "bridge"))
    parser.add_argument("--engines", default="flatstack,podman+crun",
                        help="flatstack, podman+crun, podman+runc")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before a reading")
    parser.add_argument("--out", default=str(REPO / "results" / "density.json"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("density.py runs containers: run it as root")
    try:
        sizes = [int(x) for x in ("100,500,1000" if args.full else args.sizes).split(",")]
    except ValueError:
        sys.exit(f"--sizes: expected numbers separated by commas, got {args.sizes!r}")
    checkpoints = sorted({n for n in sizes if 0 < n <= args.max}) or [args.max]
    engines = args.engines.split(",")
    if bad := [e for e in engines if e not in ("flatstack", "podman+crun", "podman+runc")]:
        sys.exit(f"--engines: unknown {bad}")
    work = Path(tempfile.mkdtemp(prefix="fsd-"))
    work.chmod(0o755)
    started = time.monotonic()
    results = []
    try:
        layout, tar = busybox_image(work)
        for name in engines:
            if name.startswith("podman") and not shutil.which("podman"):
                print(f"{name}: podman is not installed, skipped", file=sys.stderr)
                continue
            sub = work / name.replace("+", "-")
            sub.mkdir()
            if name == "flatstack":
                def make(sub: Path = sub) -> Engine:
                    return FlatstackEngine(sub, layout, args.network)
            else:
                def make(sub: Path = sub, rt: str = name.split("+")[1]) -> Engine:
                    return PodmanEngine(sub, tar, args.network, rt)
            results.append(measure_engine(make, checkpoints, args.time_budget, args.settle))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    doc = {"benchmark": "density", "network": args.network, "command": COMMAND,
           "machine": {**machine(), "mem_total_mib": meminfo()["MemTotal"] // MIB},
           "duration_s": round(time.monotonic() - started, 1), "results": results}
    print_table(doc)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    print(f"\nload average {doc['machine']['loadavg']}; {doc['duration_s']} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
