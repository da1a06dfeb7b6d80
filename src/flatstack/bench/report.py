"""The report: results.json (every sample), report.md (ratio tables) and PNG plots.

Ratios are "% of bare metal" oriented so that 100% is native and less is worse:
platform/bare for higher-is-better quantities, bare/platform for lower-is-better ones.
Start-up and density have no bare-metal equivalent; they are shown in absolute units.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

#: Published figures, cited, not measured: Felter, Ferreira, Rajamony, Rubio, "An Updated
#: Performance Comparison of Virtual Machines and Linux Containers", IBM Research Report
#: RC25482, July 2014 (KVM vs Docker vs native on the same hardware).
CITED = {
    "source": "Felter et al., IBM Research Report RC25482 (2014): An Updated Performance "
              "Comparison of Virtual Machines and Linux Containers",
    "rows": [
        {"what": "fio 4k random IOPS", "kvm": "-45% to -51% vs native",
         "docker": "equal to native"},
        {"what": "netperf TCP_RR round trip", "kvm": "+80% latency vs native",
         "docker": "equal to native (host network)"},
    ],
}

#: The issue's targets for flatstack (case -> (minimum % of bare, extra check)).
TARGETS = {
    "cpu": 99.5, "memory": 99.5, "fio-vol-randread": 98.0, "fio-vol-randwrite": 98.0,
    "iperf3-bridge": 90.0,
}
RTT_TARGET_US = 3.0  # sockperf-bridge: at most this much added round trip
FLATSTACK = "flatrun"


def summary(samples: list[float]) -> dict[str, float]:
    return {"min": min(samples), "median": statistics.median(samples), "max": max(samples),
            "n": len(samples)}


def percent_of_bare(case: dict[str, Any], platform: str) -> float | None:
    samples = case["samples"]
    if platform not in samples or "bare" not in samples:
        return None
    mine, bare = statistics.median(samples[platform]), statistics.median(samples["bare"])
    if mine <= 0 or bare <= 0:
        return None
    return 100 * (mine / bare if case["higher_is_better"] else bare / mine)


def _fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _status(case: dict[str, Any], name: str, platforms: dict[str, Any]) -> str | None:
    """Why a platform has no number in this case, or None when it has samples."""
    if name in case["samples"]:
        return None
    if not platforms[name]["present"]:
        return "missing"
    if name in case["unsupported"]:
        return "n/a"
    if name in case["errors"]:
        return "failed"
    return "-"


def _cell(case: dict[str, Any], name: str, platforms: dict[str, Any]) -> str:
    status = _status(case, name, platforms)
    if status is not None:
        return status
    s = summary(case["samples"][name])
    text = f"{_fmt(s['median'])} ({_fmt(s['min'])}-{_fmt(s['max'])})"
    ratio = percent_of_bare(case, name)
    if ratio is not None and name != "bare" and case["kind"] in ("run", "serve"):
        text += f" **{ratio:.1f}%**"
    return text


def targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, flatstack's figure, verdict) for each target the run measured."""
    rows = []
    cases = {c["name"]: c for c in results["cases"]}
    for name, minimum in TARGETS.items():
        case = cases.get(name)
        ratio = percent_of_bare(case, FLATSTACK) if case else None
        if ratio is None:
            rows.append((f"{name} ≥ {minimum}% of bare", "not measured", "—"))
            continue
        verdict = "met" if ratio >= minimum else "**NOT met**"
        rows.append((f"{name} ≥ {minimum}% of bare", f"{ratio:.1f}%", verdict))
    case = cases.get("sockperf-bridge")
    if case and FLATSTACK in case["samples"] and "bare" in case["samples"]:
        added = (statistics.median(case["samples"][FLATSTACK])
                 - statistics.median(case["samples"]["bare"]))
        verdict = "met" if added <= RTT_TARGET_US else "**NOT met**"
        rows.append((f"bridge round trip ≤ bare + {RTT_TARGET_US:g} µs", f"{added:+.1f} µs",
                     verdict))
    else:
        rows.append((f"bridge round trip ≤ bare + {RTT_TARGET_US:g} µs", "not measured", "—"))
    return rows


def markdown(results: dict[str, Any], plots: list[str]) -> str:
    platforms = results["platforms"]
    names = list(platforms)
    m = results["machine"]
    vm_label = platforms.get("vm", {}).get("label", "")
    lines = [
        "# flatstack bench report", "",
        f"Profile **{results['profile']}**, {results['seconds']:.0f} s of measuring. "
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_mib']} MiB, kernel "
        f"{m['kernel']}, {m['distro']}, cgroups {m['cgroups']}, KVM: {m['kvm']}.", "",
        "Cells: median (min-max) over the samples; **bold** = % of bare metal, oriented so "
        "that 100% is native and lower is worse. Platforms ran interleaved, order rotating "
        "per round.", "",
    ]
    if results["profile"] == "quick":
        left_out = ", ".join(results.get("skipped_cases") or []) or "none"
        lines += ["> **Quick profile**: 1-second runs, 2 samples (1 for the VM); cases left "
                  f"out: {left_out}. A smoke test of the machinery, not a measurement to "
                  "quote.", ""]
    if "TCG" in vm_label:
        lines += [f"> **{vm_label}**: every VM figure below is from software emulation "
                  "(QEMU TCG), because this host's /dev/kvm cannot run a stock kernel. "
                  "It says nothing about KVM; see the cited KVM figures instead.", ""]
    lines += ["## Platforms", "", "| platform | status |", "| --- | --- |"]
    for name, rec in platforms.items():
        status = "measured" if rec["present"] else f"**missing**: {rec.get('reason', '?')}"
        lines.append(f"| {rec['label']} (`{name}`) | {status} |")
    lines += ["", "## Targets (flatstack = flatrun)", "", "| target | flatstack | verdict |",
              "| --- | --- | --- |"]
    lines += [f"| {t} | {v} | {ok} |" for t, v, ok in targets(results)]
    lines += ["", "## Results", "",
              "| case | unit | " + " | ".join(names) + " |",
              "| --- | --- | " + " | ".join("---" for _ in names) + " |"]
    for case in results["cases"]:
        arrow = "↑" if case["higher_is_better"] else "↓"
        cells = [_cell(case, n, platforms) for n in names]
        lines.append(f"| {case['title']} | {case['unit']} {arrow} | " + " | ".join(cells)
                     + " |")
    notes = []
    for case in results["cases"]:
        for name, why in case["unsupported"].items():
            notes.append(f"- {case['name']} on {name}: n/a: {why}")
        for name, why in case["errors"].items():
            notes.append(f"- {case['name']} on {name}: **failed**: {why.strip()[-300:]}")
    if notes:
        lines += ["", "### Not measured", "", *notes]
    lines += [
        "", "## Cited, not measured", "",
        f"From {CITED['source']}:", "", "| workload | KVM (cited) | Docker (cited) |",
        "| --- | --- | --- |",
        *[f"| {r['what']} | {r['kvm']} | {r['docker']} |" for r in CITED["rows"]], "",
        "These are published figures for KVM on other hardware, shown next to the measured "
        "rows for context. They were not measured by this run.", "",
        "## Method", "",
        "- Same binaries everywhere: sysbench, fio, iperf3 and sockperf are copied from the "
        "host with their libraries into one rootfs; containers, gVisor and the VM's "
        "initramfs run those files; bare metal runs the host's copies.",
        "- OCI runtimes (flatrun, runc, crun, gVisor) get the same config.json (runc's default "
        "spec, so no seccomp filter for any of them), a fresh overlay root per container and "
        "flatstack's CNI network (bridge + portmap). podman uses crun, its own overlay "
        "storage and netavark. Bare metal's network baseline is the loopback.",
        "- Disk: fio psync with O_DIRECT; the volume is a host directory bind-mounted at /vol "
        "(the VM: a raw ext4 image on the same disk, virtio-blk, cache=none). gVisor's gofer "
        "file system does not pass O_DIRECT through, so its disk numbers include its page "
        "cache and can exceed bare metal.",
        "- Copy-up: the first 1-byte write + fsync into a 64 MiB file that is part of the "
        "image (in place on bare metal).",
        "- Network: server in the container, iperf3/sockperf client on the host. Round trip "
        "= 2 x sockperf's p50 one-way latency.",
        "- Start-up: `run` of /bin/true to exit (bare: fork+exec; podman: `podman run --rm`; "
        "VM: boot to poweroff). Density: summed PSS of every process of the run "
        "(container processes, conmon, runsc sandbox and gofer, QEMU) per idle container "
        "(sleep); kernel memory (cgroups, namespaces, page tables) is not included.",
        "", "## Tool versions", "",
        *[f"- {k}: {v}" for k, v in results["versions"].items()],
    ]
    if plots:
        lines += ["", "## Plots", "", *[f"![{p}]({p})" for p in plots]]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], out: Path) -> list[str]:
    """One PNG per workload (bars with min/max error bars); returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    platforms = results["platforms"]
    by_workload: dict[str, list[dict[str, Any]]] = {}
    for case in results["cases"]:
        group = case["workload"] if case["workload"] not in ("iperf3", "sockperf") else (
            "network-" + case["workload"])
        by_workload.setdefault(group, []).append(case)
    files = []
    for group, cases in by_workload.items():
        fig, axes = plt.subplots(1, len(cases), figsize=(max(5.0, 3.6 * len(cases)), 4.2),
                                 squeeze=False)
        for ax, case in zip(axes[0], cases, strict=True):
            names = list(platforms)
            meds, lo, hi, colors = [], [], [], []
            for n in names:
                samples = case["samples"].get(n)
                if samples:
                    s = summary(samples)
                    meds.append(s["median"])
                    lo.append(s["median"] - s["min"])
                    hi.append(s["max"] - s["median"])
                else:
                    meds.append(0)
                    lo.append(0)
                    hi.append(0)
                colors.append("#c0392b" if n == "flatrun" else
                              "#7f8c8d" if n == "bare" else
                              "#e8b04a" if n == "vm" else "#2e86c1")
            ax.bar(range(len(names)), meds, yerr=[lo, hi], color=colors, capsize=3)
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels([n + ("*" if n == "vm" else "") for n in names], rotation=40,
                               fontsize=8)
            for i, n in enumerate(names):
                status = _status(case, n, platforms)
                if status is not None:
                    ax.text(i, 0, status, rotation=90, ha="center", va="bottom", fontsize=7)
            arrow = "higher is better" if case["higher_is_better"] else "lower is better"
            ax.set_title(case["title"], fontsize=9)
            ax.set_ylabel(f"{case['unit']} ({arrow})", fontsize=8)
            if case["kind"] == "startup":
                ax.set_yscale("log")
        fig.text(0.01, 0.01, "* vm: QEMU TCG, software-emulated" if "TCG" in
                 platforms.get("vm", {}).get("label", "") else "", fontsize=7)
        fig.tight_layout()
        name = f"{group}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        files.append(name)
    return files


#: The overview's cases: what the thesis is about (throughput and round trip).
OVERVIEW = ("cpu", "memory", "fio-vol-randread", "fio-vol-randwrite", "iperf3-bridge",
            "iperf3-port", "sockperf-bridge", "sockperf-port")


def plot_overview(results: dict[str, Any], out: Path) -> str | None:
    """One grouped bar chart: % of bare metal per case and platform (the README's plot);
    None when no case of :data:`OVERVIEW` has a bare-metal figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = [c for c in results["cases"] if c["name"] in OVERVIEW and "bare" in c["samples"]]
    names = [n for n in results["platforms"] if n != "bare"]
    if not cases or not names:
        return None
    fig, ax = plt.subplots(figsize=(11, 4.6))
    width = 0.8 / len(names)
    top = 130.0
    palette = {"flatrun": "#c0392b", "runc": "#2e86c1", "crun": "#5dade2",
               "podman": "#1abc9c", "gvisor": "#8e44ad", "vm": "#e8b04a"}
    for j, name in enumerate(names):
        xs, ys = [], []
        for i, case in enumerate(cases):
            ratio = percent_of_bare(case, name)
            if ratio is not None:
                xs.append(i + (j - (len(names) - 1) / 2) * width)
                ys.append(ratio)
                top = max(top, ratio * 1.08)
        label = name + (" (TCG, emulated)" if name == "vm" and "TCG" in
                        results["platforms"][name].get("label", "") else "")
        ax.bar(xs, ys, width, label=label, color=palette.get(name, "#7f8c8d"))
    ax.axhline(100, color="#555", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels([c["name"] for c in cases], rotation=20, fontsize=8)
    ax.set_ylabel("% of bare metal (100 = native, higher is better)", fontsize=8)
    ax.set_ylim(0, top)
    ax.legend(fontsize=7, ncol=len(names), loc="upper center", bbox_to_anchor=(0.5, 1.12))
    fig.text(0.01, 0.01, "Missing bars: not measured on that platform (see report.md). "
             "Round trips as bare/platform.", fontsize=7)
    fig.tight_layout()
    name = "overview.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def write(results: dict[str, Any], out: Path) -> dict[str, Path]:
    """results.json, report.md and the PNGs into ``out``; returns the main paths."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({**results, "cited": CITED}, indent=2) + "\n")
    overview = plot_overview(results, out)
    plots = ([overview] if overview else []) + plot(results, out)
    (out / "report.md").write_text(markdown(results, plots))
    return {"json": out / "results.json", "markdown": out / "report.md"}
