"""``flatstack bench``: run the benchmark and write the report."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

DEFAULT_OUT = Path("bench-results")

app = typer.Typer(help="Bare metal vs flatstack vs runc, crun, podman, gVisor and a VM.",
                  invoke_without_command=True, no_args_is_help=False)


def _split(text: str | None) -> list[str] | None:
    return [p.strip() for p in text.split(",") if p.strip()] if text else None


@app.callback()
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="1-second runs, 2 samples (smoke "
                                        "test).")] = False,
    only: Annotated[str, typer.Option("--only", help="Comma-separated workloads: cpu, memory, "
                                      "disk, copyup, network, startup, density.")] = "",
    platforms: Annotated[str, typer.Option("--platforms", help="Comma-separated: bare, "
                                           "flatrun, runc, crun, podman, gvisor, vm (bare is "
                                           "always added).")] = "",
    out: Annotated[Path, typer.Option("--out", help="Report directory.")] = DEFAULT_OUT,
) -> None:
    """Measure every platform side by side and write results.json, report.md and plots."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from flatstack.bench import report, runner, workloads

    console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
    if os.geteuid() != 0:
        console.print("flatstack bench: runs containers and a VM: run it as root")
        raise typer.Exit(2)
    try:
        selected = workloads.select(_split(only))
        names = runner.parse_platforms(platforms)
    except ValueError as err:
        console.print(f"flatstack bench: {err}")
        raise typer.Exit(2) from err
    profile = workloads.QUICK if quick else workloads.FULL
    started = time.monotonic()
    bench_run = runner.Bench(profile, selected, names, log=console.print)
    try:
        console.print(f"setting up ({profile.name} profile): rootfs, images, VM initramfs")
        bench_run.setup()
        with Progress(TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task("measuring", total=bench_run.steps())

            def advance(what: str) -> None:
                progress.update(task, advance=1, description=what)
            results = bench_run.measure(advance)
    finally:
        bench_run.close()
    data = results.to_json()
    data["wall_seconds"] = time.monotonic() - started
    paths = report.write(data, out)
    typer.echo(headline(data))
    console.print(f"wrote {paths['markdown']} and {paths['json']} "
                  f"in {data['wall_seconds']:.0f} s")


def headline(data: dict) -> str:
    """A plain-text table: median and % of bare for each case and platform."""
    from flatstack.bench.report import _cell, targets

    names = list(data["platforms"])
    rows = [["case", *names]]
    for case in data["cases"]:
        rows.append([f"{case['name']} [{case['unit']}]",
                     *[_cell(case, n, data["platforms"]).replace("**", "").split(" (")[0]
                       + _pct(case, n) for n in names]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    for name, rec in data["platforms"].items():
        if not rec["present"]:
            lines.append(f"{name}: missing: {rec.get('reason')}")
    lines += [f"target {t}: {v} ({ok.replace('*', '')})" for t, v, ok in targets(data)]
    return "\n".join(lines)


def _pct(case: dict, name: str) -> str:
    from flatstack.bench.report import percent_of_bare

    ratio = percent_of_bare(case, name)
    if ratio is None or name == "bare" or case["kind"] not in ("run", "serve"):
        return ""
    return f" {ratio:.0f}%"
