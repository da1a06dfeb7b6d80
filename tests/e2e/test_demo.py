"""``make run``'s demo: it fetches the page through a published port, runs twice in a
row, recovers from a run that died half-way, and leaves nothing behind."""

from __future__ import annotations

import os
import random
import re
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flatstack import demo
from tests.engine._image_support import free_port


class Places:
    def __init__(self, tmp: Path) -> None:
        self.state = tmp / "state"
        self.run = tmp / "run"
        self.bridge = f"fsdemo{uuid.uuid4().hex[:6]}"
        self.subnet = f"10.92.{random.randint(2, 250)}.0/24"

    def argv(self, *extra: str) -> list[str]:
        return ["--state-dir", str(self.state), "--run-dir", str(self.run), "--bridge",
                self.bridge, "--subnet", self.subnet, "--port", str(free_port()), *extra]

    def leftovers(self) -> dict[str, Any]:
        from flatstack.network import netns

        def listing(path: Path) -> list[str]:
            return sorted(os.listdir(path)) if path.is_dir() else []

        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text()
                  .splitlines() if line.split()[4].startswith((str(self.state),
                                                                str(self.run)))]
        processes = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if str(self.run).encode() in cmdline or str(self.state).encode() in cmdline:
                processes.append(cmdline.replace(b"\0", b" ").decode())
        bridge = subprocess.run(["ip", "link", "show", self.bridge], capture_output=True,
                                check=False).returncode == 0
        return {"containers": listing(self.state / "containers"),
                "supervisor": listing(self.state / "supervisor" / "containers"),
                "attachments": listing(self.state / "networks" / "attachments"),
                "holds": listing(self.state / "images" / "holds"),
                "runtime": [n for n in listing(self.run / "runtime") if not n.startswith(".")],
                "netns": netns.list_names(str(self.run)), "netns_dir": (self.run / "netns")
                .exists(), "mounts": mounts, "processes": processes, "bridge": bridge}


@pytest.fixture
def places() -> Iterator[Places]:
    with tempfile.TemporaryDirectory(prefix="fsdemo-", ignore_cleanup_errors=True) as tmp:
        made = Places(Path(tmp))
        try:
            yield made
        finally:  # whatever a failed test left
            demo.Demo(str(made.state), str(made.run), bridge=made.bridge,
                      subnet=made.subnet).teardown()


def _clean(leftovers: dict[str, Any]) -> bool:
    return not any(leftovers.values())


def test_demo_fetches_the_page_and_leaves_nothing(places: Places,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(places.argv()) == 0
    out = capsys.readouterr().out
    assert "hello from flatrun" in out  # the flatrun part
    assert "building" in out and "with umoci" in out
    assert "-> 200\n      <h1>hello from flatstack</h1>" in out
    assert "->80/tcp" in out and "demo-web" in out  # ps
    assert "response:200" in out  # logs: httpd -v saw the request
    assert "MEM USAGE / LIMIT" in out  # stats
    assert "uid=0(root)" in out
    host_uid = re.search(r"uid 0 in the container is host uid (\d+) \(65536 ids", out)
    assert host_uid and int(host_uid.group(1)) >= 65536, out
    assert not re.search(r"uid_map:\s+0 0 ", out)  # the flatrun part: not the host's root
    assert _clean(places.leftovers()), {k: v for k, v in places.leftovers().items() if v}

    # twice in a row: the layout is reused, the page served again
    assert demo.main(places.argv("--no-bundle")) == 0
    out = capsys.readouterr().out
    assert "reusing the OCI layout" in out and "<h1>hello from flatstack</h1>" in out
    assert "interrupted earlier run" not in out
    assert _clean(places.leftovers()), {k: v for k, v in places.leftovers().items() if v}


def test_demo_cleans_up_after_a_run_that_died(places: Places,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    # a run killed after the container started (no teardown): daemon, supervisor,
    # container, netns and bridge all still there
    dead = demo.Demo(str(places.state), str(places.run), bridge=places.bridge,
                     subnet=places.subnet, port=free_port())
    dead.start_daemon()
    dead.import_image(dead.image_layout())
    dead.run_web()
    daemon = dead.daemon
    assert daemon is not None and places.leftovers()["netns"]
    capsys.readouterr()

    assert demo.main(places.argv("--no-bundle")) == 0
    out = capsys.readouterr().out
    assert "cleaning up what an interrupted earlier run left" in out
    assert "removed container demo-web" in out and f"daemon pid {daemon.pid} stopped" in out
    assert "<h1>hello from flatstack</h1>" in out
    daemon.wait(timeout=10)
    assert _clean(places.leftovers()), {k: v for k, v in places.leftovers().items() if v}


def test_demo_fails_cleanly(places: Places, capsys: pytest.CaptureFixture[str]) -> None:
    """A step that fails after the daemon started: a clear message, and the teardown."""
    places.state.mkdir(parents=True)
    (places.state / "demo-image").mkdir()
    (places.state / "demo-image" / "index.json").write_text("{}")  # a broken layout
    assert demo.main(places.argv("--no-bundle")) == 1
    captured = capsys.readouterr()
    assert "demo failed: flatstack image import" in captured.err
    assert "daemon pid" in captured.out and "stopped" in captured.out
    assert _clean(places.leftovers()), {k: v for k, v in places.leftovers().items() if v}
