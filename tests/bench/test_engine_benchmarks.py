"""The engine benchmarks at the smallest scale: real daemon, real podman, real containers.

Numbers are not checked (shared machine); what is: every tool and network is measured,
the JSON and the table have the documented shape, and nothing is left behind (no
container process, bridge, netns or mount of the benchmark's directories).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"



def _bench(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PYTHON if PYTHON.exists() else sys.executable),
                           str(REPO / "benchmarks" / script), *args], capture_output=True,
                          text=True, timeout=300, check=False)


def _host_traces() -> dict[str, list[str]]:
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    return {"bridges": [ln for ln in links.splitlines() if ": fsbn" in ln],
            "mounts": [m for m in mounts if "/fsrl-" in m or "/fsd-" in m]}


@pytest.mark.timeout(300)
def test_run_latency_structure(tmp_path: Path) -> None:
    out = tmp_path / "run_latency.json"
    proc = _bench("run_latency.py", "-n", "2", "--networks", "none", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "run_latency" and doc["iterations"] == 2
    tools = ["flatstack API", "flatstack CLI", "podman+crun", "podman+runc"]
    assert list(doc["results"]) == tools
    for tool in tools:
        row = doc["results"][tool]["none"]
        assert row["n"] == 2 and 0 < row["median_ms"] <= row["p90_ms"] <= row["max_ms"]
        assert row["speedup_vs_podman_crun"] > 0
        assert len(doc["samples_ms"][tool]["none"]) == 2
    assert doc["results"]["podman+crun"]["none"]["speedup_vs_podman_crun"] == 1.0
    for tool in tools:
        assert any(line.startswith(tool) for line in proc.stdout.splitlines()), tool
    assert _host_traces() == {"bridges": [], "mounts": []}


@pytest.mark.timeout(300)
def test_density_structure(tmp_path: Path) -> None:
    out = tmp_path / "density.json"
    proc = _bench("density.py", "--sizes", "2", "--settle", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert [r["engine"] for r in doc["results"]] == ["flatstack", "podman+crun"]
    for res in doc["results"]:
        (row,) = res["checkpoints"]
        assert row["n"] == row["running"] == row["cgroups"] == 2
        for key in ("used_mib", "own_mib", "overhead_mib", "engine_pss_mib", "kernel_mib",
                    "kernel_unreclaimable_mib", "own_kernel_mib", "accounted_mib"):
            assert isinstance(row[key], float), key
        assert row["own_mib"] > 0 and row["engine_processes"] >= 1
        assert res["leftover_processes"] == 0
    flat, podman = doc["results"]
    # the daemon and its supervisor: no process per container
    assert flat["checkpoints"][0]["engine_processes"] == 2
    assert podman["checkpoints"][0]["engine_processes"] >= 2  # a conmon per container
    assert _host_traces() == {"bridges": [], "mounts": []}
