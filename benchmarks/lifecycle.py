#!/usr/bin/env python3
"""Container lifecycle latency: flatrun beside runc and crun, interleaved, one run.

For each runtime and iteration: ``create`` -> ``start`` -> wait for the init to exit
-> ``delete`` of ``/bin/true`` in a busybox bundle, and a one-shot foreground ``run``.
Every runtime gets the same config.json (runc's default spec with the process
changed); flatrun is also measured with its own hardened default spec (seccomp,
capabilities, masked paths) and with a user namespace on top, so the cost of each
hardening is visible.

crun 1.8.1 refuses this machine's hybrid cgroup layout; each crun command runs in
a private mount namespace without the cgroup2 mount (set up in the forked child
before exec, which costs well under a millisecond) and with ociVersion 1.0.2.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from flatstack.tools.busybox import build_rootfs  # noqa: E402

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS = 0x00020000
MS_REC, MS_PRIVATE, MNT_DETACH = 0x4000, 1 << 18, 2


def _crun_namespace() -> None:
    """preexec_fn: a private mount namespace without the cgroup2 mount."""
    if _libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare")
    _libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None)
    _libc.umount2(b"/sys/fs/cgroup/unified", MNT_DETACH)


class Runtime:
    def __init__(self, name: str, argv: list[str], bundle: str, root: str,
                 preexec: Any = None) -> None:
        self.name = name
        self.argv = argv
        self.bundle = bundle
        self.root = root
        self.preexec = preexec

    def cmd(self, *args: str, check: bool = True) -> None:
        # stderr to a file, never a pipe: the container inherits create's stdio.
        with tempfile.TemporaryFile() as err:
            proc = subprocess.run([*self.argv, "--root", self.root, *args],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=err, preexec_fn=self.preexec, check=False)
            if check and proc.returncode != 0:
                err.seek(0)
                raise RuntimeError(f"{self.name} {' '.join(args)} failed: "
                                   f"{err.read().decode(errors='replace').strip()}")

    def lifecycle(self, cid: str, pid_file: str) -> tuple[float, dict[str, float]]:
        """The whole lifecycle's duration, and each verb's."""
        verbs: dict[str, float] = {}
        started = time.perf_counter()
        self.cmd("create", "--bundle", self.bundle, "--pid-file", pid_file, cid)
        verbs["create"] = time.perf_counter() - started
        pid = int(Path(pid_file).read_text())
        mark = time.perf_counter()
        self.cmd("start", cid)
        verbs["start"] = time.perf_counter() - mark
        _wait_child(pid)
        mark = time.perf_counter()
        self.cmd("delete", cid)
        ended = time.perf_counter()
        verbs["delete"] = ended - mark
        return ended - started, verbs

    def run(self, cid: str) -> float:
        started = time.perf_counter()
        self.cmd("run", "--bundle", self.bundle, cid)
        return time.perf_counter() - started


def _wait_child(pid: int) -> None:
    """The init is re-parented to us (we are a child subreaper); reap it."""
    while True:
        try:
            got, _ = os.waitpid(-1, 0)
        except ChildProcessError:
            return
        if got == pid:
            return


def _bundle(work: Path, name: str, rootfs: str, config: dict[str, Any]) -> str:
    bundle = work / name
    bundle.mkdir()
    cfg = copy.deepcopy(config)
    cfg["root"] = {"path": rootfs, "readonly": True}
    cfg["process"]["args"] = ["/bin/true"]
    cfg["process"]["terminal"] = False
    (bundle / "config.json").write_text(json.dumps(cfg))
    return str(bundle)


def summarize(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    p90 = ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
    return {"median_ms": statistics.median(ms), "p90_ms": p90, "min_ms": ms[0],
            "max_ms": ms[-1], "n": len(ms)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--iterations", type=int, default=30)
    parser.add_argument("--out", default=str(REPO / "results" / "lifecycle.json"))
    parser.add_argument("--runtimes", default="flatrun,flatrun-hardened,flatrun-userns,runc,crun")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("lifecycle.py: run as root")
    _libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    work = Path(tempfile.mkdtemp(prefix="flatstack-bench-"))
    work.chmod(0o755)  # the user-namespace bundle's mapped root must reach its rootfs
    try:
        rootfs = build_rootfs(str(work / "rootfs"))
        spec_dir = work / "runc-spec"
        spec_dir.mkdir()
        subprocess.run(["runc", "spec"], cwd=spec_dir, check=True)
        runc_spec = json.loads((spec_dir / "config.json").read_text())
        runc_spec["ociVersion"] = "1.0.2"
        from flatstack.oci.defaults import default_spec

        hardened = default_spec()
        with_userns = default_spec(userns=True)
        flatrun = str(REPO / ".venv" / "bin" / "flatrun")
        available: dict[str, Runtime] = {}
        wanted = args.runtimes.split(",")
        candidates = {
            "flatrun": ([flatrun], runc_spec, None),
            "flatrun-hardened": ([flatrun], hardened, None),
            "flatrun-userns": ([flatrun], with_userns, None),
            "runc": ([shutil.which("runc") or "runc"], runc_spec, None),
            "crun": ([shutil.which("crun") or "crun"], runc_spec, _crun_namespace),
        }
        for name in wanted:
            argv, config, preexec = candidates[name]
            if not shutil.which(argv[0]) and not os.path.exists(argv[0]):
                print(f"skipping {name}: {argv[0]} is not installed")
                continue
            # flatrun-userns: a host id range per container and an idmapped rootfs
            # (no chowned copy of the image needed).
            bundle = _bundle(work, name, rootfs, config)
            available[name] = Runtime(name, argv, bundle, str(work / f"state-{name}"),
                                      preexec)
        samples: dict[str, dict[str, list[float]]] = {
            n: {"lifecycle": [], "run": [], "create": [], "start": [], "delete": []}
            for n in available}
        for name, rt in available.items():  # warm-up: caches, seccomp BPF, page cache
            rt.lifecycle(f"warm-{name}", str(work / "warm.pid"))
        for i in range(args.iterations):
            for name, rt in available.items():
                total, verbs = rt.lifecycle(f"lc-{name}-{i}", str(work / f"{name}.pid"))
                samples[name]["lifecycle"].append(total)
                for verb, took in verbs.items():
                    samples[name][verb].append(took)
            for name, rt in available.items():
                samples[name]["run"].append(rt.run(f"run-{name}-{i}"))
        results = {n: {k: summarize(v) for k, v in s.items()} for n, s in samples.items()}
        _print_table(results)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "benchmark": "lifecycle", "iterations": args.iterations,
            "kernel": os.uname().release, "cpus": os.cpu_count(),
            "results": results,
            "samples_ms": {n: {k: [x * 1000 for x in v] for k, v in s.items()}
                           for n, s in samples.items()},
        }, indent=2))
        print(f"\nwrote {out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _print_table(results: dict[str, dict[str, dict[str, float]]]) -> None:
    print(f"\n{'runtime':<18}{'lifecycle med':>14}{'p90':>9}{'run med':>10}{'p90':>9}"
          f"{'vs runc':>9}{'vs crun':>9}")
    ref = {k: results.get(k, {}).get("lifecycle", {}).get("median_ms") for k in ("runc", "crun")}
    for name, r in results.items():
        lc, rn = r["lifecycle"], r["run"]
        ratios = [f"{lc['median_ms'] / ref[k]:.2f}x" if ref[k] else "-" for k in ("runc", "crun")]
        print(f"{name:<18}{lc['median_ms']:>12.1f}ms{lc['p90_ms']:>7.1f}ms"
              f"{rn['median_ms']:>8.1f}ms{rn['p90_ms']:>7.1f}ms{ratios[0]:>9}{ratios[1]:>9}")
    print(f"\n{'per verb (median)':<18}{'create':>10}{'start':>10}{'delete':>10}")
    for name, r in results.items():
        print(f"{name:<18}" + "".join(f"{r[verb]['median_ms']:>8.1f}ms"
                                      for verb in ("create", "start", "delete")))


if __name__ == "__main__":
    sys.exit(main())
