"""The benchmark's root filesystem: busybox plus the host's workload binaries and libraries.

Every platform runs the very same binaries: they are copied from the host with the
shared libraries ``ldd`` names, so a container, gVisor and the VM's initramfs execute
byte-identical programs.  A small static C probe (``fsbench-probe``) times one
first write into a lower-layer file (the overlay copy-up).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from flatstack.tools.busybox import build_rootfs

#: Host tools copied into the rootfs (Debian packages: sysbench, fio, iperf3, sockperf).
TOOLS = ("sysbench", "fio", "iperf3", "sockperf")
#: Size of the lower-layer file the copy-up probe writes into.
COPYUP_MIB = 64
PROBE = "/usr/local/bin/fsbench-probe"

PROBE_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
/* fsbench-probe copyup FILE: nanoseconds for open(O_WRONLY)+pwrite(1 byte)+fsync+close. */
static long long now(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}
int main(int argc, char **argv) {
    if (argc != 3 || strcmp(argv[1], "copyup") != 0) {
        fprintf(stderr, "usage: fsbench-probe copyup FILE\n"); return 2;
    }
    long long start = now();
    int fd = open(argv[2], O_WRONLY);
    if (fd < 0) { perror("open"); return 1; }
    if (pwrite(fd, "x", 1, 0) != 1) { perror("pwrite"); return 1; }
    if (fsync(fd) != 0) { perror("fsync"); return 1; }
    close(fd);
    printf("copyup_ns=%lld\n", now() - start);
    return 0;
}
"""


class RootfsError(RuntimeError):
    """The benchmark rootfs could not be built (a tool or compiler is missing)."""


def shared_libraries(binary: str) -> list[str]:
    """Absolute paths of the libraries (and loader) ``binary`` needs, per ``ldd``."""
    proc = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False)
    if proc.returncode != 0:  # a static binary: "not a dynamic executable"
        return []
    libs = []
    for line in proc.stdout.splitlines():
        parts = line.split()
        if "=>" in parts:
            target = parts[parts.index("=>") + 1]
            if target.startswith("/"):
                libs.append(target)
        elif parts and parts[0].startswith("/"):
            libs.append(parts[0])
    return libs


def _copy_with_parents(src: str, root: Path) -> None:
    dest = root / src.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        shutil.copy2(os.path.realpath(src), dest)


def available_tools() -> dict[str, str | None]:
    """Tool name -> host path, or None when the tool is not installed."""
    return {tool: shutil.which(tool) for tool in TOOLS}


def build_probe(dest: Path) -> None:
    """Compile the static copy-up probe into ``dest``."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RootfsError("gcc is not installed (Debian package gcc): needed for the probe")
    src = dest.with_suffix(".c")
    src.write_text(PROBE_C)
    proc = subprocess.run([gcc, "-O2", "-static", "-o", str(dest), str(src)],
                          capture_output=True, text=True, check=False)
    src.unlink()
    if proc.returncode != 0:
        raise RootfsError(f"compiling fsbench-probe failed: {proc.stderr.strip()[:300]}")


def build(root: Path) -> Path:
    """Make ``root``: busybox, the tools found on the host, their libraries and the probe."""
    build_rootfs(str(root))
    for tool, path in available_tools().items():
        if path is None:
            continue
        dest = root / "usr" / "bin" / tool
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(path), dest)
        for lib in shared_libraries(path):
            _copy_with_parents(lib, root)
    probe = root / PROBE.lstrip("/")
    probe.parent.mkdir(parents=True, exist_ok=True)
    build_probe(probe)
    for d in ("vol", "data", "scratch"):
        (root / d).mkdir(exist_ok=True)
    (root / "scratch").chmod(0o1777)
    # A lower-layer file for the copy-up probe (sparse would copy up in no time).
    with open(root / "data" / "lower.dat", "wb") as f:
        chunk = os.urandom(1 << 20)
        for _ in range(COPYUP_MIB):
            f.write(chunk)
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    return root
