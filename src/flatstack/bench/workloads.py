"""What is measured: each workload's argv (the same on every platform) and its parser.

A :class:`Case` is one row of the report: a workload, optionally in a network mode.
Durations come from a :class:`Profile` (``--quick`` or full).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from flatstack.bench.rootfs import PROBE

#: Network modes: the container's own stack through a veth on a bridge, the host's stack,
#: and a port published on the host (DNAT to the container).
NET_MODES = ("host", "bridge", "port")
IPERF_PORT = 5201
SOCKPERF_PORT = 11111


@dataclass(frozen=True)
class Profile:
    """How long and how often: ``quick`` for the smoke test, ``full`` for the report."""

    name: str
    seconds: int  # duration of each timed workload run
    repeats: int  # samples per platform (interleaved)
    vm_repeats: int  # samples for the software-emulated VM (each run boots it)
    fio_size_mib: int
    startup_runs: int
    density_containers: int
    serve_repeats: int = 0  # samples of a network case (0: ``repeats``)
    #: Cases the VM runs (None: all); each VM sample boots a guest (slow under TCG).
    vm_cases: tuple[str, ...] | None = None
    #: Cases left out of this profile altogether (said in the report).
    skip_cases: tuple[str, ...] = ()


QUICK = Profile("quick", seconds=1, repeats=2, vm_repeats=1, fio_size_mib=32,
                startup_runs=5, density_containers=4, serve_repeats=1,
                vm_cases=("cpu", "startup"),
                # sockperf spends ~2 s around every run: keep the bridge (the target)
                skip_cases=("iperf3-host", "sockperf-host", "sockperf-port"))
#: The report's profile: about 45 minutes on a 2-core machine (VM under TCG included).
FULL = Profile("full", seconds=5, repeats=3, vm_repeats=2, fio_size_mib=256,
               startup_runs=20, density_containers=20)


@dataclass(frozen=True)
class Case:
    """One measured quantity, e.g. ``fio-vol-randread`` or ``iperf3`` over ``bridge``."""

    name: str
    workload: str
    title: str
    unit: str
    higher_is_better: bool
    kind: str  # run | serve | startup | density
    volume: bool = False  # needs the bind-mounted volume at /vol
    mode: str = "none"  # network mode for kind == serve


@dataclass(frozen=True)
class Workload:
    """A workload: its cases, the argv per case and how to read a sample from stdout."""

    name: str
    description: str
    cases: tuple[Case, ...]


def _number(pattern: str, text: str, what: str) -> float:
    match = re.search(pattern, text)
    if not match:
        raise ValueError(f"{what}: no match for {pattern!r} in output {text[-400:]!r}")
    return float(match.group(1))


# -- argv builders ------------------------------------------------------------------
def sysbench_cpu(p: Profile) -> list[str]:
    return ["sysbench", "cpu", "--threads=1", "--cpu-max-prime=20000", f"--time={p.seconds}",
            "run"]


def sysbench_memory(p: Profile) -> list[str]:
    return ["sysbench", "memory", "--threads=1", "--memory-block-size=1M",
            "--memory-total-size=1000G", "--memory-oper=write", f"--time={p.seconds}", "run"]


FIO_JOBS = {
    "randread": ("randread", "4k"), "randwrite": ("randwrite", "4k"),
    "seqread": ("read", "1M"), "seqwrite": ("write", "1M"),
}


def fio(p: Profile, directory: str, job: str) -> list[str]:
    rw, bs = FIO_JOBS[job]
    return ["fio", "--name=bench", f"--directory={directory}", "--filename=fio.dat",
            f"--size={p.fio_size_mib}M", f"--rw={rw}", f"--bs={bs}", "--direct=1",
            "--ioengine=psync", "--time_based", f"--runtime={p.seconds}",
            "--randrepeat=1", "--output-format=json"]


def copyup() -> list[str]:
    return [PROBE, "copyup", "/data/lower.dat"]


def iperf3_server() -> list[str]:
    return ["iperf3", "-s", "-1", "-p", str(IPERF_PORT)]


def iperf3_client(p: Profile, host: str, port: int) -> list[str]:
    return ["iperf3", "-c", host, "-p", str(port), "-t", str(p.seconds), "-J"]


def sockperf_server() -> list[str]:
    return ["sockperf", "sr", "--tcp", "-p", str(SOCKPERF_PORT)]


def sockperf_client(p: Profile, host: str, port: int) -> list[str]:
    return ["sockperf", "pp", "--tcp", "-i", host, "-p", str(port), "-t", str(p.seconds)]


# -- parsers ------------------------------------------------------------------------
def parse_sysbench_cpu(out: str) -> float:
    return _number(r"events per second:\s*([\d.]+)", out, "sysbench cpu")


def parse_sysbench_memory(out: str) -> float:
    return _number(r"\(([\d.]+) MiB/sec\)", out, "sysbench memory")


def parse_fio(job: str) -> Callable[[str], float]:
    def parse(out: str) -> float:
        start = out.find("{")
        if start < 0:
            raise ValueError(f"fio: no JSON in output {out[-400:]!r}")
        data, _ = json.JSONDecoder().raw_decode(out[start:])
        stats = data["jobs"][0]["write" if "write" in job else "read"]
        if job.startswith("rand"):
            return float(stats["iops"])
        return float(stats["bw_bytes"]) / 1e6  # MB/s
    return parse


def parse_copyup(out: str) -> float:
    return _number(r"copyup_ns=(\d+)", out, "fsbench-probe") / 1e6  # ms


def parse_iperf3(out: str) -> float:
    start = out.find("{")
    if start < 0:
        raise ValueError(f"iperf3: no JSON in output {out[-400:]!r}")
    data, _ = json.JSONDecoder().raw_decode(out[start:])
    if "error" in data:
        raise ValueError(f"iperf3: {data['error']}")
    return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9  # Gbit/s


def parse_sockperf(out: str) -> float:
    # sockperf reports one-way latency (half the round trip): report the round trip.
    return 2 * _number(r"percentile 50\.000 =\s*([\d.]+)", out, "sockperf")


PARSERS: dict[str, Callable[[str], float]] = {
    "cpu": parse_sysbench_cpu, "memory": parse_sysbench_memory, "copyup": parse_copyup,
    "iperf3": parse_iperf3, "sockperf": parse_sockperf,
    **{f"fio-vol-{j}": parse_fio(j) for j in FIO_JOBS},
    "fio-root-randwrite": parse_fio("randwrite"),
}


def argv_for(case: Case, p: Profile) -> list[str]:
    """The in-container argv of a ``run`` case."""
    if case.workload == "cpu":
        return sysbench_cpu(p)
    if case.workload == "memory":
        return sysbench_memory(p)
    if case.workload == "copyup":
        return copyup()
    if case.name.startswith("fio-vol-"):
        return fio(p, "/vol", case.name.removeprefix("fio-vol-"))
    if case.name == "fio-root-randwrite":
        return fio(p, "/scratch", "randwrite")
    raise ValueError(f"{case.name} has no argv")


def _net_cases(workload: str, title: str, unit: str, higher: bool) -> tuple[Case, ...]:
    return tuple(Case(f"{workload}-{m}", workload, f"{title} ({m})", unit, higher, "serve",
                      mode=m) for m in NET_MODES)


WORKLOADS: dict[str, Workload] = {w.name: w for w in (
    Workload("cpu", "sysbench cpu, 1 thread, primes up to 20000",
             (Case("cpu", "cpu", "CPU (sysbench cpu)", "events/s", True, "run"),)),
    Workload("memory", "sysbench memory, 1 thread, 1 MiB blocks, write",
             (Case("memory", "memory", "Memory bandwidth (sysbench memory)", "MiB/s", True,
                   "run"),)),
    Workload("disk", "fio psync O_DIRECT: 4k random and 1M sequential on the bind-mounted "
             "volume; 4k random write on the container's root (overlay upper)",
             (*(Case(f"fio-vol-{j}", "disk", f"fio {j} (volume)",
                     "IOPS" if j.startswith("rand") else "MB/s", True, "run", volume=True)
                for j in FIO_JOBS),
              Case("fio-root-randwrite", "disk", "fio randwrite (container root)", "IOPS",
                   True, "run"))),
    Workload("copyup", "first 1-byte write + fsync into a 64 MiB file of the image "
             "(overlay copy-up; in place on bare metal)",
             (Case("copyup", "copyup", "Overlay copy-up (first write to 64 MiB file)", "ms",
                   False, "run"),)),
    Workload("network", "iperf3 TCP throughput and sockperf TCP ping-pong round trip, "
             "client on the host, server in the container",
             _net_cases("iperf3", "iperf3 throughput", "Gbit/s", True)
             + _net_cases("sockperf", "TCP round trip p50", "µs", False)),
    Workload("startup", "run /bin/true to completion (create, start, wait, delete)",
             (Case("startup", "startup", "Start-up latency (run /bin/true)", "ms", False,
                   "startup"),)),
    Workload("density", "PSS of the run's processes (container, monitor, sandbox, QEMU) per "
             "idle container (sleep)",
             (Case("density", "density", "Host memory per idle container", "MiB", False,
                   "density"),)),
)}


def select(only: list[str] | None) -> list[Workload]:
    """Workloads named in ``only`` (all when None); unknown names raise ValueError."""
    if not only:
        return list(WORKLOADS.values())
    unknown = [n for n in only if n not in WORKLOADS]
    if unknown:
        raise ValueError(f"--only: unknown workload(s) {', '.join(unknown)}; "
                         f"known: {', '.join(WORKLOADS)}")
    return [WORKLOADS[n] for n in only]
