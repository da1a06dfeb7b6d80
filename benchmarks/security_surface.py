#!/usr/bin/env python3
"""Security surface of each runtime's DEFAULT configuration, measured from inside.

Every tool runs the same busybox probe with the configuration it generates by
default: ``flatrun spec``, ``runc spec``, ``crun spec`` (only ``process.args`` and
``terminal`` changed, so the probe runs without a tty) and ``podman run IMAGE``
(``--network none``: the network mode does not change what is measured, and
the bridge would touch the host's iptables).  The probe reads, from inside:

* ``/proc/self/status``: CapEff/CapBnd (popcount of the masks), Seccomp mode,
  Seccomp_filters, NoNewPrivs;
* ``/proc/self/uid_map``: a user namespace is in use unless the map is the
  identity ``0 0 4294967295``;
* ``/proc/self/mountinfo``: *masked* paths are mounts strictly below /proc or
  /sys that are a bind of a device node (``/dev/null``, mountinfo root
  ``/null``) or a tmpfs; *read-only* paths are proc/sysfs mounts strictly below
  /proc or /sys with the ``ro`` per-mount option; /sys itself is reported apart;
* ``/proc/self/cgroup``: a cgroup namespace shows ``/`` for every hierarchy;
* the container's own ``pids.max`` and memory limit (v1 or v2 file names); "none"
  when unlimited.

Syscalls allowed by the seccomp filter are counted from the ``linux.seccomp`` the
runtime was actually given (the bundle's config.json; for podman the one it
generated under its storage): the distinct names in rules whose action is
SCMP_ACT_ALLOW while the default action denies, keeping only names that
libseccomp resolves on this machine's architecture (the runtimes here compile
with that libseccomp and skip the others).  Rules with argument conditions are
counted apart as "conditional".  The total is the number of syscall numbers
libseccomp names on this architecture.

Docker's engine is not installed (only its client): its row is cited from its
sources, not measured.  Results: a table on stdout, results/security_surface.json.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from flatstack.tools.busybox import build_rootfs  # noqa: E402

FLATRUN = str(REPO / ".venv" / "bin" / "flatrun")
PROBE = ("cat /proc/self/status; echo @@uid_map; cat /proc/self/uid_map; "
         "echo @@mountinfo; cat /proc/self/mountinfo; echo @@cgroup; cat /proc/self/cgroup; "
         "echo @@pids; cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max 2>/dev/null; "
         "echo @@memory; cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
         "/sys/fs/cgroup/memory.max 2>/dev/null; true")
#: memory.limit_in_bytes with no limit on cgroup v1 (page-rounded LONG_MAX).
V1_UNLIMITED = 9223372036854771712
IDENTITY_MAP = ["0", "0", "4294967295"]
PERMISSIVE = {"SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE"}
CRUN_WRAPPER = """#!/bin/sh
exec unshare -m --propagation private sh -c \
 'umount /sys/fs/cgroup/unified 2>/dev/null; exec crun "$@"' crun "$@"
"""
PODMAN_IMAGE = "localhost/security-surface-busybox:latest"
SYSTEM_CONTAINERS_CONF = "/usr/share/containers/containers.conf"
ULIMITS = 'default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]\n'
#: Mounts below /sys that are no masks: the cgroup tree's own tmpfs.
NOT_MASKS = ("/sys/fs/cgroup",)

#: Cited, not measured: Docker Engine's defaults (docker run IMAGE, no options).
DOCKER_CITED = {
    "tool": "docker (cited)",
    "measured": False,
    "cap_eff": 14, "cap_bnd": 14,
    "seccomp_mode": 2, "no_new_privs": 0, "userns": False,
    "masked_paths": None, "masked_configured": 10,
    "readonly_paths": None, "readonly_configured": 5, "sys_ro": True,
    # No pids or memory limit unless asked (--pids-limit, --memory); a private cgroup
    # namespace only on cgroup v2 hosts (--cgroupns; the host's on v1).
    "pids_max": None, "memory_max": None, "cgroupns": False,
    # Counted once by this script's method from moby's profiles/seccomp/default.json at
    # commit 00f3d189e420d485e42d15fe494f96d272284e0e for the 14 default capabilities on
    # x86_64, kernel >= 4.8 (docs: "disables around 44 system calls out of 300+").
    "seccomp_allowed": 295, "seccomp_conditional": 3,
    "sources": [
        "https://github.com/moby/moby/blob/master/oci/caps/defaults.go (14 capabilities)",
        "https://github.com/moby/moby/blob/master/oci/defaults.go (10 masked, 5 read-only "
        "paths, /sys ro, no user namespace)",
        "https://docs.docker.com/engine/security/seccomp/ (default profile: allowlist, "
        "'disables around 44 system calls out of 300+')",
        "moby/moby profiles/seccomp/default.json @00f3d189e420 (counted: 295 allowed + 3 "
        "with argument conditions on x86_64 with the 14 default capabilities)",
        "https://docs.docker.com/engine/security/userns-remap/ (user namespaces are "
        "opt-in: userns-remap)",
        "https://docs.docker.com/reference/cli/docker/container/run/ (--pids-limit, "
        "--memory: unlimited by default; --cgroupns: private on cgroup v2, host on v1)",
        "no-new-privileges is opt-in: --security-opt no-new-privileges",
    ],
}


# -- probe parsing ----------------------------------------------------------------
def parse_probe(text: str) -> dict[str, Any]:
    """What the in-container probe printed, reduced to the table's numbers."""
    status, _, rest = text.partition("@@uid_map\n")
    uid_map, _, rest = rest.partition("@@mountinfo\n")
    mountinfo, _, rest = rest.partition("@@cgroup\n")
    cgroup, _, rest = rest.partition("@@pids\n")
    pids, _, memory = rest.partition("@@memory\n")
    fields = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    if "CapEff" not in fields:
        raise RuntimeError(f"probe output has no /proc/self/status: {text[:300]!r}")
    maps = [line.split() for line in uid_map.splitlines() if line.strip()]
    masked, readonly, sys_ro = [], [], False
    for line in mountinfo.splitlines():
        pre, _, post = line.partition(" - ")
        parts, post_parts = pre.split(), post.split()
        if len(parts) < 6 or not post_parts:
            continue
        root, point, options, fstype = parts[3], parts[4], parts[5].split(","), post_parts[0]
        if point == "/sys" and "ro" in options:
            sys_ro = True
        if not (point.startswith("/proc/") or point.startswith("/sys/")):
            continue
        if point in NOT_MASKS:
            continue
        if (fstype == "tmpfs" and root == "/") or root.rsplit("/", 1)[-1] == "null":
            masked.append(point)
        elif fstype in ("proc", "sysfs") and "ro" in options:
            readonly.append(point)
    return {
        "cap_eff": bin(int(fields["CapEff"], 16)).count("1"),
        "cap_bnd": bin(int(fields["CapBnd"], 16)).count("1"),
        "seccomp_mode": int(fields.get("Seccomp", "0")),
        "seccomp_filters": int(fields.get("Seccomp_filters", "0")),
        "no_new_privs": int(fields.get("NoNewPrivs", "0")),
        "uid_map": [" ".join(m) for m in maps],
        "userns": maps != [IDENTITY_MAP],
        "masked_paths": len(masked), "masked": masked,
        "readonly_paths": len(readonly), "readonly": readonly,
        "sys_ro": sys_ro,
        # A cgroup namespace shows the container's own cgroup as "/" in every hierarchy.
        "cgroupns": bool(cgroup.split()) and all(line.endswith(":/")
                                                 for line in cgroup.split()),
        "pids_max": _limit(pids),
        "memory_max": _limit(memory),
    }


def _limit(text: str) -> int | None:
    """A cgroup limit file's value; None for "max" or v1's unlimited, -1 if unreadable."""
    words = text.split()
    if not words:
        return -1  # no cgroupfs in the container (runc's and crun's specs mount none)
    if not words[0].isdigit() or int(words[0]) >= V1_UNLIMITED:
        return None
    return int(words[0])


def _configured_limits(result: dict[str, Any], linux: dict[str, Any]) -> None:
    """Where the container cannot read its limits, take them from the config it was given."""
    resources = linux.get("resources") or {}
    for key, value in (("pids_max", (resources.get("pids") or {}).get("limit")),
                       ("memory_max", (resources.get("memory") or {}).get("limit"))):
        if result[key] == -1:
            result[key] = value if value is not None and value > 0 else None
            result[f"{key}_from_config"] = True


# -- seccomp counting -------------------------------------------------------------
def _libseccomp() -> Any:
    from flatstack.runtime import _libseccomp

    lib = _libseccomp.lib()
    lib.seccomp_syscall_resolve_num_arch.restype = ctypes.c_void_p
    lib.seccomp_syscall_resolve_num_arch.argtypes = [ctypes.c_uint32, ctypes.c_int]
    return lib


def native_syscall_total() -> int:
    """How many syscall numbers libseccomp names on the native architecture."""
    lib = _libseccomp()
    return sum(1 for nr in range(1024) if lib.seccomp_syscall_resolve_num_arch(0, nr))


def count_allowed(seccomp: dict[str, Any] | None) -> tuple[int | None, int | None]:
    """(unconditionally allowed, only-with-argument-conditions) syscalls on this arch."""
    if not seccomp:
        return None, None
    if seccomp.get("defaultAction") in PERMISSIVE:
        return None, None  # a denylist: everything not named is allowed
    lib = _libseccomp()
    always, conditional = set(), set()
    for rule in seccomp.get("syscalls") or []:
        if rule.get("action") != "SCMP_ACT_ALLOW":
            continue
        for name in rule.get("names") or []:
            if lib.seccomp_syscall_resolve_name(name.encode()) < 0:
                continue  # not a syscall of this architecture (or unknown to libseccomp)
            (conditional if rule.get("args") else always).add(name)
    return len(always), len(conditional - always)


# -- runners ----------------------------------------------------------------------
def _bundle(work: Path, name: str, spec_cmd: list[str], rootfs: str) -> tuple[Path, dict]:
    bundle = work / name
    bundle.mkdir()
    subprocess.run(spec_cmd, cwd=bundle, check=True, capture_output=True)
    config = json.loads((bundle / "config.json").read_text())
    config["root"]["path"] = rootfs
    config["process"]["args"] = ["sh", "-c", PROBE]
    config["process"]["terminal"] = False
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle, config


def _run(argv: list[str], work: Path, env: dict[str, str] | None = None) -> str:
    # Files, never pipes: a container inherits the runtime's stdio.
    out, err = work / "out", work / "err"
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.run(argv, stdout=o, stderr=e, stdin=subprocess.DEVNULL,
                              timeout=60, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])}... exit {proc.returncode}: "
                           f"{err.read_text().strip()[:400]}")
    return out.read_text()


def measure_oci(name: str, work: Path, rootfs: str, spec_cmd: list[str],
                run_argv: list[str]) -> dict[str, Any]:
    bundle, config = _bundle(work, name, spec_cmd, rootfs)
    result = parse_probe(_run([*run_argv, "run", "--bundle", str(bundle), f"ss-{name}"], work))
    linux = config.get("linux") or {}
    result["seccomp_allowed"], result["seccomp_conditional"] = count_allowed(
        linux.get("seccomp"))
    result["masked_configured"] = len(linux.get("maskedPaths") or [])
    result["readonly_configured"] = len(linux.get("readonlyPaths") or [])
    _configured_limits(result, linux)
    return result


def measure_flatrun(work: Path, rootfs: str) -> dict[str, Any]:
    # flatrun's spec names rootfs "rootfs" relative to the bundle: give it its own copy
    # (the default spec idmaps the root filesystem onto the container's id range).
    result = measure_oci("flatrun", work, rootfs, [FLATRUN, "spec"],
                         [FLATRUN, "--root", str(work / "flatrun-state")])
    return {"tool": "flatrun", "measured": True, **result}


def measure_runc(work: Path, rootfs: str) -> dict[str, Any]:
    result = measure_oci("runc", work, rootfs, ["runc", "spec"],
                         ["runc", "--root", str(work / "runc-state")])
    return {"tool": "runc", "measured": True, **result}


def measure_crun(work: Path, rootfs: str) -> dict[str, Any]:
    wrapper = work / "crun-wrapper"
    wrapper.write_text(CRUN_WRAPPER)
    wrapper.chmod(0o755)
    result = measure_oci("crun", work, rootfs, ["crun", "spec"],
                         [str(wrapper), "--root", str(work / "crun-state")])
    return {"tool": "crun", "measured": True, **result}


def measure_podman(work: Path, rootfs: str) -> dict[str, Any]:
    base = work / "podman"
    base.mkdir()
    # CONTAINERS_CONF replaces the packaged file: copy it (the distribution's defaults,
    # e.g. its capability list) and add only the ulimits this machine needs.
    packaged = Path(SYSTEM_CONTAINERS_CONF)
    text = packaged.read_text() if packaged.exists() else "[containers]\n"
    conf = base / "containers.conf"
    conf.write_text(text.replace("[containers]\n", "[containers]\n" + ULIMITS, 1))
    env = dict(os.environ, CONTAINERS_CONF=str(conf))
    argv = ["podman", "--root", str(base / "storage"), "--runroot", str(base / "run"),
            "--cgroup-manager", "cgroupfs", "--events-backend", "file",
            "--tmpdir", str(base / "tmp"), "--runtime", "runc"]
    tar = base / "busybox.tar"
    subprocess.run(["tar", "-C", rootfs, "-cf", str(tar), "."], check=True)
    try:
        _run([*argv, "import", str(tar), PODMAN_IMAGE], work, env)
        text = _run([*argv, "run", "--name", "security-surface", "--network", "none",
                     PODMAN_IMAGE, "sh", "-c", PROBE], work, env)
        result = parse_probe(text)
        configs = [p for p in base.rglob("config.json") if "userdata" in p.parts]
        config = json.loads(configs[0].read_text()) if configs else {}
        linux = config.get("linux") or {}
        result["seccomp_allowed"], result["seccomp_conditional"] = count_allowed(
            linux.get("seccomp"))
        result["masked_configured"] = len(linux.get("maskedPaths") or [])
        result["readonly_configured"] = len(linux.get("readonlyPaths") or [])
        _configured_limits(result, linux)
    finally:
        subprocess.run([*argv, "rm", "--all", "--force"], env=env, capture_output=True,
                       check=False)
        subprocess.run([*argv, "system", "reset", "--force"], env=env, capture_output=True,
                       check=False)
    return {"tool": "podman (runc)", "measured": True, **result}


# -- output -----------------------------------------------------------------------
COLUMNS = [("tool", "tool"), ("cap_eff", "CapEff"), ("cap_bnd", "CapBnd"),
           ("seccomp_mode", "seccomp"), ("seccomp_allowed", "allowed"),
           ("seccomp_conditional", "cond."), ("no_new_privs", "NNP"), ("userns", "userns"),
           ("masked_paths", "masked"), ("readonly_paths", "ro paths"), ("sys_ro", "/sys ro"),
           ("cgroupns", "cgroupns"), ("pids_max", "pids.max"), ("memory_max", "memory")]
CONFIGURED = {"masked_paths": "masked_configured", "readonly_paths": "readonly_configured"}


def _cell(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if key == "seccomp_allowed" and value is None and row.get("seccomp_mode") == 0:
        return "all"
    if key in CONFIGURED and row.get(CONFIGURED[key]) is not None:
        return f"{'?' if value is None else value}/{row[CONFIGURED[key]]}"
    if key in ("pids_max", "memory_max"):
        mark = "*" if row.get(f"{key}_from_config") else ""
        if value is None:
            return "none" + mark
        if key == "memory_max":
            value = f"{value / (1 << 30):g} GiB" if value >= 1 << 30 else f"{value >> 20} MiB"
        return f"{value}{mark}"
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def table(rows: list[dict[str, Any]]) -> str:
    cells = [[title for _, title in COLUMNS]] + [[_cell(r, k) for k, _ in COLUMNS]
                                                 for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    if os.geteuid() != 0:
        print("security_surface.py runs containers: run it as root", file=sys.stderr)
        return 2
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="security-surface-") as tmp:
        work = Path(tmp)
        rootfs = build_rootfs(str(work / "rootfs"))
        runners = [("flatrun", measure_flatrun, FLATRUN), ("runc", measure_runc, "runc"),
                   ("crun", measure_crun, "crun"), ("podman", measure_podman, "podman")]
        for name, runner, binary in runners:
            if not (os.path.exists(binary) or shutil.which(binary)):
                skipped[name] = "not installed"
                continue
            sub = work / f"w-{name}"
            sub.mkdir()
            try:
                rows.append(runner(sub, rootfs))
            except (RuntimeError, subprocess.SubprocessError, OSError) as err:
                skipped[name] = str(err)
    docker_engine = shutil.which("dockerd") is not None
    skipped["docker"] = ("engine present but not measured" if docker_engine else
                         "no Docker engine (dockerd) on this machine: cited, not measured")
    rows.append(DOCKER_CITED)
    total = native_syscall_total()
    print(table(rows))
    print(f"\nseccomp 'allowed': syscall names allowed unconditionally on {os.uname().machine} "
          f"(of {total} libseccomp knows); 'cond.': allowed only with argument conditions; "
          "masked/ro paths: present in the container/configured; *: the container has no "
          "cgroupfs to read, value from the config it was given")
    for name, why in skipped.items():
        print(f"{name}: {why}")
    out = REPO / "results" / "security_surface.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "machine": os.uname().machine, "kernel": os.uname().release,
        "native_syscalls": total, "rows": rows, "skipped": skipped,
        "seconds": round(time.monotonic() - started, 1),
    }, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(REPO)} in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
