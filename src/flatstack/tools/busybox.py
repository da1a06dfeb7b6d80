"""Build an OCI bundle whose rootfs is Debian's busybox-static and its applets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

BUSYBOX = "/bin/busybox"


def build_rootfs(rootfs: str, busybox: str = BUSYBOX) -> str:
    """Populate ``rootfs`` with busybox, its applet links and minimal /etc files."""
    if not os.path.exists(busybox):
        raise FileNotFoundError(f"{busybox} not found: install the busybox-static package")
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp",
              "root", "var/run", "home"):
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
    os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
    target = os.path.join(rootfs, "bin", "busybox")
    shutil.copy2(busybox, target)
    applets = subprocess.run([busybox, "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        link = os.path.join(rootfs, applet)
        if os.path.lexists(link) or applet == "bin/busybox":
            continue
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink("/bin/busybox", link)
    with open(os.path.join(rootfs, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n"
                "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    with open(os.path.join(rootfs, "etc", "group"), "w") as f:
        f.write("root:x:0:\ntty:x:5:\nnogroup:x:65534:\n")
    with open(os.path.join(rootfs, "etc", "hostname"), "w") as f:
        f.write("flatstack\n")
    return rootfs


def build_bundle(bundle: str, args: list[str] | None = None, *,
                 config: dict[str, Any] | None = None, rootless: bool = False) -> str:
    """Create ``bundle``/rootfs and ``bundle``/config.json (flatrun's default spec)."""
    from flatstack.oci.defaults import default_spec

    os.makedirs(bundle, exist_ok=True)
    build_rootfs(os.path.join(bundle, "rootfs"))
    spec = config if config is not None else default_spec(rootless=rootless)
    if args is not None:
        spec["process"]["args"] = list(args)
        spec["process"]["terminal"] = False
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(spec, f, indent=2)
    return bundle


class ImageBuildError(Exception):
    """umoci failed while building an image."""


def _umoci(*argv: str) -> None:
    proc = subprocess.run(["umoci", *argv], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ImageBuildError(f"umoci {argv[0]}: {proc.stderr.strip()}")


def build_image(layout: str, fill: Callable[[str], None], config: list[str]) -> str:
    """Write a busybox image to the OCI layout ``layout`` (replaced whole, atomically).

    ``fill(rootfs)`` adds the image's own files; ``config`` are ``umoci config`` flags
    (``--config.cmd ...``). umoci's own flow (new, unpack, fill, repack), because
    ``umoci insert`` 0.4.7 writes a layer whose tar stream lacks its final padding.
    """
    import tempfile

    layout = os.path.abspath(layout)
    partial = layout + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    work = tempfile.mkdtemp(prefix="flatstack-image-")
    try:
        bundle = os.path.join(work, "bundle")
        tag = f"{partial}:1"
        _umoci("init", "--layout", partial)
        _umoci("new", "--image", tag)
        _umoci("unpack", "--image", tag, bundle)
        fill(build_rootfs(os.path.join(bundle, "rootfs")))
        _umoci("repack", "--image", tag, bundle)
        _umoci("config", "--image", tag, "--os", "linux", "--architecture", "amd64",
               "--config.env", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", *config)
        shutil.rmtree(layout, ignore_errors=True)
        os.replace(partial, layout)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(partial, ignore_errors=True)
    return layout


def main() -> None:
    """``python -m flatstack.tools.busybox BUNDLE [ARGS...]``."""
    import sys

    if len(sys.argv) < 2:
        sys.exit("usage: python -m flatstack.tools.busybox BUNDLE [ARGS...]")
    build_bundle(sys.argv[1], sys.argv[2:] or None)
    print(sys.argv[1])


if __name__ == "__main__":
    main()
