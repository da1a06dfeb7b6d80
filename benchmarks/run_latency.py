#!/usr/bin/env python3
"""``run --rm IMAGE true`` end to end: flatstack (API and CLI) beside podman+crun/runc.

One run, interleaved (every iteration runs each tool once, per network), image present,
``--network none`` and the default bridge. What is timed:

- ``flatstack API``: ONE request over the daemon's unix socket, exactly what the CLI's
  foreground ``run --rm`` sends (``POST /v1/containers?attach=true``, body
  ``{image, command: [true], network, remove: true}``), until the closing status frame;
  the daemon answers it after the container exited and was removed (CNI DEL, unmount,
  records). Client side: ``http.client`` in this process (no Python start-up).
- ``flatstack CLI``: ``flatstack run --rm --network NET IMAGE true`` as a subprocess
  (the venv's interpreter start-up, typer, then the same request).
- ``podman+crun`` / ``podman+runc``: ``podman run --rm --network none|bridge IMAGE true``
  with private storage, cgroupfs, file events and the ulimits this machine needs; crun
  through the wrapper that hides the hybrid cgroup2 mount (MACHINE-NOTES).

flatstack's daemon runs on a temporary state dir with a private bridge and subnet.
Ratios are medians relative to podman+crun on the same network (target: API >= 5x).
Output: a table on stdout and a JSON document (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, FlatstackDaemon, Podman, busybox_image, machine, summary

NETWORKS = ("none", "bridge")


def measure(iterations: int, podman: bool, networks: tuple[str, ...],
            cli: bool = True) -> dict[str, object]:
    """Run the benchmark; the JSON document."""
    work = Path(tempfile.mkdtemp(prefix="fsrl-"))
    work.chmod(0o755)
    daemon = FlatstackDaemon(work)
    peers: list[Podman] = []
    samples: dict[str, dict[str, list[float]]] = {}
    started = time.monotonic()
    try:
        layout, tar = busybox_image(work)
        daemon.start()
        daemon.import_image(layout)
        if podman and shutil.which("podman"):
            peers = [Podman(work, runtime, tar) for runtime in ("crun", "runc")
                     if shutil.which(runtime)]
        tools: dict[str, Callable[[str], float]] = {"flatstack API": daemon.run_rm}
        if cli:
            tools["flatstack CLI"] = daemon.cli_run_rm
        for peer in peers:
            tools[peer.name] = peer.run_rm
        for network in networks:
            for fn in tools.values():  # warm-up: layer unpack, bridge, page cache
                fn(network)
            for _ in range(iterations):
                for name, fn in tools.items():
                    samples.setdefault(name, {}).setdefault(network, []).append(fn(network))
    finally:
        for tool in (daemon, *peers):
            try:
                tool.close()
            except Exception as err:  # report and go on cleaning up
                print(f"cleanup {tool.name}: {err}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
    results: dict[str, dict[str, dict[str, float]]] = {
        name: {net: summary(s) for net, s in by_net.items()} for name, by_net in samples.items()}
    for by_net in results.values():
        for net, row in by_net.items():
            ref = results.get("podman+crun", {}).get(net)
            if ref:
                row["speedup_vs_podman_crun"] = round(ref["median_ms"] / row["median_ms"], 2)
    return {"benchmark": "run_latency", "iterations": iterations, "machine": machine(),
            "duration_s": round(time.monotonic() - started, 1), "results": results,
            "samples_ms": {name: {net: [round(x * 1000, 2) for x in s]
                                  for net, s in by_net.items()}
                           for name, by_net in samples.items()}}


def print_table(doc: dict[str, object]) -> None:
    results = doc["results"]
    assert isinstance(results, dict)
    print(f"{'tool':<15}{'network':<9}{'median':>9}{'p90':>9}{'n':>5}"
          f"{'speedup vs podman+crun':>24}")
    for name, by_net in results.items():
        for net, r in by_net.items():
            ratio = r.get("speedup_vs_podman_crun")
            ratio_text = f"{ratio:.2f}x" if ratio else "-"
            print(f"{name:<15}{net:<9}{r['median_ms']:>7.1f}ms{r['p90_ms']:>7.1f}ms"
                  f"{r['n']:>5}{ratio_text:>24}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--iterations", type=int, default=20)
    parser.add_argument("--networks", default=",".join(NETWORKS),
                        help="comma-separated: none, bridge")
    parser.add_argument("--no-podman", action="store_true", help="flatstack only")
    parser.add_argument("--no-cli", action="store_true", help="skip the CLI subprocess")
    parser.add_argument("--out", default=str(REPO / "results" / "run_latency.json"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run_latency.py runs containers: run it as root")
    if args.iterations < 1:
        sys.exit("--iterations: must be at least 1")
    networks = tuple(args.networks.split(","))
    if bad := [n for n in networks if n not in NETWORKS]:
        sys.exit(f"--networks: unknown {bad}, expected none and/or bridge")
    doc = measure(args.iterations, not args.no_podman, networks, cli=not args.no_cli)
    print_table(doc)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    print(f"\nload average {doc['machine']['loadavg']}; "  # type: ignore[index]
          f"{doc['duration_s']} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
