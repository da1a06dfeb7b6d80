"""Build the example service image (``examples/``) as an OCI layout with umoci.

The image is Debian's busybox-static (its applets as links) plus ``examples/image``:
``/serve.sh`` (runs ``httpd`` on :8080 over ``/www``), ``/knobs.sh`` and the CGI knobs in
``/www/cgi-bin`` (``index.cgi`` for ``/``, ``health``, ``crash``, ``hang``, ``slow``,
``burn``). ``python -m flatstack.examples LAYOUT`` builds it; ``flatstack image import
--name localhost/flatstack-example:1 LAYOUT`` then makes it runnable.
"""

from __future__ import annotations

import os
import shutil
import sys

from flatstack.tools.busybox import ImageBuildError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(REPO, "examples")
SOURCE = os.path.join(EXAMPLES, "image")
IMAGE = "localhost/flatstack-example:1"
PORT = 8080


class BuildError(Exception):
    """umoci refused a step; the message names it."""


def source_stamp() -> str:
    """The newest modification time of the image's sources (a rebuild when they change)."""
    newest = 0.0
    for root, _dirs, files in os.walk(SOURCE):
        for name in files:
            newest = max(newest, os.stat(os.path.join(root, name)).st_mtime)
    return f"{newest:.6f}"


def build_image(layout: str) -> str:
    """Write the example image to the OCI layout ``layout`` (replaced whole, atomically)."""
    from flatstack.tools.busybox import build_image as build_busybox_image

    stamp = source_stamp()

    def fill(rootfs: str) -> None:
        shutil.copytree(os.path.join(SOURCE, "www"), os.path.join(rootfs, "www"))
        for name in ("serve.sh", "knobs.sh"):
            shutil.copy2(os.path.join(SOURCE, name), os.path.join(rootfs, name))

    try:
        build_busybox_image(layout, fill, [
            "--config.env", f"PORT={PORT}", "--config.exposedports", f"{PORT}/tcp",
            "--config.cmd", "/serve.sh"])
    except ImageBuildError as err:
        raise BuildError(str(err)) from None
    with open(os.path.join(layout, "flatstack-example.stamp"), "w") as f:
        f.write(stamp)
    return os.path.abspath(layout)


def is_current(layout: str) -> bool:
    """True when ``layout`` was built from the sources as they are now."""
    try:
        with open(os.path.join(layout, "flatstack-example.stamp")) as f:
            return f.read() == source_stamp()
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    """``python -m flatstack.examples LAYOUT``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m flatstack.examples LAYOUT", file=sys.stderr)
        return 2
    try:
        print(build_image(args[0]))
    except BuildError as err:
        print(f"build failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
