"""``make run``: build a busybox bundle and run a container through flatrun."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = (
    "echo \"hello from $(hostname), pid $$ in its own pid namespace\"; "
    "grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status; "
    "echo \"uid_map: $(cat /proc/self/uid_map | tr -s ' ')\"; "
    "echo \"processes visible: $(ls -d /proc/[0-9]* | wc -l)\"; "
    "echo \"root filesystem: $(touch /probe 2>&1 || true)\""
)


def main() -> int:
    """Build the bundle, run it, print what happened."""
    from flatstack.tools.busybox import build_bundle

    flatrun = os.path.join(REPO, ".venv", "bin", "flatrun")
    work = tempfile.mkdtemp(prefix="flatstack-demo-")
    root = os.path.join(work, "state")
    bundle = os.path.join(work, "bundle")
    try:
        print(f"building a busybox bundle from Debian's busybox-static in {bundle}")
        build_bundle(bundle, ["sh", "-c", SCRIPT])
        cid = f"demo-{os.getpid()}"
        print(f"$ flatrun --root {root} run --bundle {bundle} {cid}")
        started = time.monotonic()
        proc = subprocess.run([flatrun, "--root", root, "run", "--bundle", bundle, cid],
                              check=False)
        elapsed = (time.monotonic() - started) * 1000
        print(f"container {cid} exited with status {proc.returncode} after {elapsed:.1f} ms; "
              "its state, cgroup and mounts are gone")
        return proc.returncode
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
