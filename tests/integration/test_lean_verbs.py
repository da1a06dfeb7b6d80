"""start, state, kill and delete run on ``posix`` alone: no ``os``, ctypes or json.

Each is invoked several times per container, and ``import os`` alone is about a
tenth of one invocation here; the verbs are run in the launcher's interpreter
(``-I -S``) against a real container, and both their effect and the modules they
loaded are checked.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests.conftest import REPO, Bundles, Flatrun, cgroup_dirs

_DRIVER = """
import sys
sys.path.insert(0, {src!r})
from flatstack.runtime.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
heavy = sorted(m for m in ("os", "ctypes", "json", "re", "typing", "posixpath")
               if m in sys.modules)
sys.stderr.write(f"\\n@loaded {{code}} {{heavy}}\\n")
"""


def _launcher_python(flatrun_bin: str) -> str:
    shebang = Path(flatrun_bin).read_text().splitlines()[0]
    return shebang.removeprefix("#!").split()[0]


def _verb(flatrun: Flatrun, *args: str) -> tuple[str, str]:
    """Run one verb in a fresh launcher interpreter: (stdout, what it loaded)."""
    err_path = flatrun.tmp / "lean-err"
    with open(err_path, "w+") as err:
        proc = subprocess.run(
            [_launcher_python(flatrun.binary), "-I", "-S", "-c",
             _DRIVER.format(src=str(REPO / "src")), "--root", flatrun.root, *args],
            stdout=subprocess.PIPE, stderr=err, text=True, timeout=30, check=False)
    stderr = err_path.read_text()
    marker = stderr.rsplit("@loaded ", 1)[-1].strip()
    assert proc.returncode == 0 and marker.startswith("0 "), stderr
    return proc.stdout, marker.removeprefix("0 ")


def test_hot_verbs_load_no_heavy_modules(flatrun: Flatrun, make_bundle: Bundles) -> None:
    bundle = make_bundle(["sleep", "30"])
    cid = flatrun.new_id()
    flatrun("create", "--bundle", bundle, cid)

    out, loaded = _verb(flatrun, "state", cid)
    assert json.loads(out)["status"] == "created" and loaded == "[]"

    _, loaded = _verb(flatrun, "start", cid)
    assert flatrun.state(cid)["status"] == "running" and loaded == "[]"

    _, loaded = _verb(flatrun, "kill", cid, "KILL")
    assert loaded == "[]"
    for _ in range(200):
        if flatrun.state(cid)["status"] == "stopped":
            break
        time.sleep(0.01)
    assert flatrun.state(cid)["status"] == "stopped"
    assert cgroup_dirs(cid)

    _, loaded = _verb(flatrun, "delete", cid)
    assert loaded == "[]"
    assert not (Path(flatrun.root) / cid).exists()
    assert cgroup_dirs(cid) == []
