"""``flatstack bench --quick``: a real run on every platform; checks the report's structure.

The numbers are not checked (the machine is shared and the profile is 1-second runs);
what is checked: every requested platform is measured or explicitly marked missing with
a reason, every measured platform has samples or a stated reason per case, and the
files (results.json, report.md, one PNG per workload) are there.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from flatstack.bench import oci, report, runner

REPO = Path(__file__).resolve().parents[2]
FLATSTACK = REPO / ".venv" / "bin" / "flatstack"
ALL = "bare,flatrun,runc,crun,podman,gvisor,vm"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"



def _bench(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(FLATSTACK), "bench", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.mark.timeout(600)
def test_quick_report_structure(tmp_path: Path) -> None:
    out = tmp_path / "report"
    proc = _bench("--quick", "--only", "cpu,copyup,startup", "--platforms", ALL,
                  "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((out / "results.json").read_text())

    assert data["profile"] == "quick"
    for key in ("cpu", "cores", "kernel", "memory_mib", "kvm"):
        assert data["machine"][key], key
    for tool in ("sysbench", "fio", "iperf3", "sockperf", "busybox"):
        assert tool in data["versions"]
    assert list(data["platforms"]) == ALL.split(",")
    for name, rec in data["platforms"].items():
        assert rec["label"]
        if not rec["present"]:
            assert rec["reason"], f"{name} is missing without a reason"
            assert f"{name}: missing" in proc.stderr
    assert [c["name"] for c in data["cases"]] == ["cpu", "copyup", "startup"]
    for case in data["cases"]:
        for name, rec in data["platforms"].items():
            if not rec["present"]:
                continue
            explained = case["samples"].get(name) or case["errors"].get(name) or \
                case["unsupported"].get(name)
            assert explained, f"{case['name']} on {name}: neither samples nor a reason"
        # flatstack itself and the baseline must always produce numbers.
        for name in ("bare", "flatrun"):
            assert case["samples"].get(name), (case["name"], name, case["errors"])
            assert all(v > 0 for v in case["samples"][name])
    assert data["cited"]["source"].startswith("Felter et al.")

    md = (out / "report.md").read_text()
    for rec in data["platforms"].values():
        assert rec["label"] in md
    assert "## Cited, not measured" in md
    assert "## Targets (flatstack = flatrun)" in md
    if data["platforms"]["vm"]["present"] and "TCG" in data["platforms"]["vm"]["label"]:
        assert "software-emulated" in md
    for png in ("overview.png", "cpu.png", "copyup.png", "startup.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
        assert f"]({png})" in md
    # Nothing left behind: no mounts, no work directory, no tap device of the bench.
    assert data["workdir"].startswith("/var/tmp/flatstack-bench-")
    assert not Path(data["workdir"]).exists()
    assert data["workdir"] + "/" not in Path("/proc/self/mountinfo").read_text()


def test_unknown_platform_and_workload_are_refused(tmp_path: Path) -> None:
    proc = _bench("--quick", "--platforms", "bare,kvmish", "--out", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert "--platforms: unknown platform(s) kvmish" in proc.stderr
    proc = _bench("--quick", "--only", "cpu,gpu", "--out", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert "--only: unknown workload(s) gpu" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_missing_runtime_is_reported_not_dropped(tmp_path: Path) -> None:
    """A platform whose binary is absent is listed as missing, with the reason, everywhere."""
    absent = oci.Flatrun(str(tmp_path / "no-such-flatrun"))
    reason = absent.missing()
    assert reason == f"{tmp_path / 'no-such-flatrun'} is not installed"
    assert runner.parse_platforms("flatrun") == ["bare", "flatrun"]  # bare is the baseline
    data = {
        "profile": "quick", "seconds": 1.0, "versions": {},
        "machine": runner.machine(),
        "platforms": {"bare": {"label": "bare metal", "present": True},
                      "flatrun": {"label": "flatstack (flatrun)", "present": False,
                                  "reason": reason}},
        "cases": [{"name": "cpu", "workload": "cpu", "title": "CPU", "unit": "events/s",
                   "higher_is_better": True, "kind": "run", "mode": "none",
                   "samples": {"bare": [100.0, 110.0]}, "errors": {}, "unsupported": {}}],
    }
    paths = report.write(data, tmp_path / "out")
    md = paths["markdown"].read_text()
    assert f"**missing**: {reason}" in md
    assert "| CPU | events/s ↑ | 105 (100-110) | missing |" in md
    assert "| cpu ≥ 99.5% of bare | not measured | — |" in md
