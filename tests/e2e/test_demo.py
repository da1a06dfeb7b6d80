"""``make run``'s demo: it fetches the page through a published port, runs the example
app (ready instances, spread, a killed one replaced), runs twice in a row (``--keep``
then ``--stop``), recovers from a run that died half-way, and leaves nothing behind; and
the example image's knobs on one container."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from flatstack import demo, examples
from flatstack.control.endpoint import Endpoints, tag_of
from flatstack.control.kube import load_apps
from tests.control._plane import get
from tests.engine._image_support import free_port


class Places:
    def __init__(self, tmp: Path) -> None:
        self.state = tmp / "state"
        self.run = tmp / "run"
        self.bridge = f"fsdemo{uuid.uuid4().hex[:6]}"
        self.subnet = f"10.92.{random.randint(2, 250)}.0/24"
        self.app_port = free_port()

    def argv(self, *extra: str) -> list[str]:
        return ["--state-dir", str(self.state), "--run-dir", str(self.run), "--bridge",
                self.bridge, "--subnet", self.subnet, "--port", str(free_port()),
                "--app-port", str(self.app_port), *extra]

    def demo(self) -> demo.Demo:
        return demo.Demo(str(self.state), str(self.run), bridge=self.bridge,
                         subnet=self.subnet, port=free_port(), app_port=self.app_port)

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
        tag = tag_of(str(self.state))
        rules = [line for line in subprocess.run(
            ["iptables", "-w", "-t", "nat", "-S"], capture_output=True, text=True,
            check=True).stdout.splitlines() if tag in line]
        return {"containers": listing(self.state / "containers"),
                "supervisor": listing(self.state / "supervisor" / "containers"),
                "attachments": listing(self.state / "networks" / "attachments"),
                "holds": listing(self.state / "images" / "holds"),
                "runtime": [n for n in listing(self.run / "runtime") if not n.startswith(".")],
                "netns": netns.list_names(str(self.run)), "netns_dir": (self.run / "netns")
                .exists(), "mounts": mounts, "processes": processes, "bridge": bridge,
                "rules": rules, "apps": _stored_apps(self.state),
                "control_db": (self.state / "control.db").exists()}


def _stored_apps(state: Path) -> list[str]:
    from flatstack.control.store import DB_NAME, Store

    if not (state / DB_NAME).exists():
        return []
    store = Store(state)
    try:
        return [s.name for s in store.list()]
    finally:
        store.close()


@pytest.fixture
def places() -> Iterator[Places]:
    with tempfile.TemporaryDirectory(prefix="fsdemo-", ignore_cleanup_errors=True) as tmp:
        made = Places(Path(tmp))
        try:
            yield made
        finally:  # whatever a failed test left
            made.demo().teardown()
            Endpoints(tag_of(str(made.state))).teardown()


def _clean(leftovers: dict[str, Any]) -> bool:
    return not any(leftovers.values())


def test_demo_fetches_the_page_runs_the_app_and_leaves_nothing(
        places: Places, capsys: pytest.CaptureFixture[str]) -> None:
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
    _assert_app_part(out, places)
    assert "deleted app hello" in out  # the daemon removes its endpoint rules then
    assert _clean(places.leftovers()), {k: v for k, v in places.leftovers().items() if v}

    # twice in a row, with --keep: images reused, the app left serving until --stop
    assert demo.main(places.argv("--no-bundle", "--keep")) == 0
    out = capsys.readouterr().out
    assert out.count("reusing the OCI layout") == 2 and "<h1>hello from flatstack</h1>" in out
    assert "interrupted earlier run" not in out
    _assert_app_part(out, places)
    assert "-m flatstack.demo --stop" in out and "nothing left running" not in out
    assert "Deleted" not in out  # events: this run's only (the first run's are gone)
    status, body = get("127.0.0.1", places.app_port)
    assert status == 200 and body.startswith("hello from "), body
    assert places.leftovers()["apps"] == ["hello"]

    assert demo.main(places.argv("--stop")) == 0
    out = capsys.readouterr().out
    assert "deleted app hello" in out and "stopped; nothing left running" in out
    assert get("127.0.0.1", places.app_port, timeout=1)[0] == 0
    assert _clean(places.leftovers()), {k: v for k, v in places.leftovers().items() if v}


def _assert_app_part(out: str, places: Places) -> None:
    """The example app: applied, 2 ready instances, spread, one killed and replaced."""
    assert "app/hello created (generation 1)" in out
    assert re.search(rf"\n\s+hello\s+2/2\s+2\s+1\s+{places.app_port}", out), out  # get apps
    assert out.count("hello-1-") >= 4  # get instances -o wide, before and after the kill
    spread = re.search(r"16 x GET \S+ \(a new connection each\) answered by (\d+) instances",
                       out)
    assert spread and int(spread.group(1)) >= 2, out
    replaced = re.search(r"replacement (\w+) ready and serving ([\d.]+) s after the kill", out)
    assert replaced and float(replaced.group(2)) < 30, out
    assert "Crashed" in out  # the event of the killed instance
    assert f"http://127.0.0.1:{places.app_port}/cgi-bin/slow?0.5" in out
    assert "s  kill an instance from outside" in out  # the timings summary


def test_demo_cleans_up_after_a_run_that_died(places: Places,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    # a run killed after the container and the app started (no teardown): daemon,
    # supervisor, container, instances, endpoint rules, netns and bridge all still there
    dead = places.demo()
    dead.start_daemon()
    dead.import_image(dead.image_layout())
    dead.run_web()
    dead.flatstack("image", "import", "--name", examples.IMAGE, dead.example_layout())
    dead.flatstack("apply", "-f", dead.manifest())
    dead.wait_ready(2)
    daemon = dead.daemon
    assert daemon is not None and places.leftovers()["netns"] and places.leftovers()["rules"]
    capsys.readouterr()

    assert demo.main(places.argv("--no-bundle", "--no-app")) == 0
    out = capsys.readouterr().out
    assert "cleaning up what an interrupted earlier run left" in out
    assert "deleted app hello" in out
    assert "removed container demo-web" in out and f"daemon pid {daemon.pid} stopped" in out
    assert "<h1>hello from flatstack</h1>" in out and "app/hello" not in out
    daemon.wait(timeout=10)
    assert _clean(places.leftovers()), {k: v for k, v in places.leftovers().items() if v}


def test_demo_forgets_the_apps_of_a_daemon_that_was_killed(
        places: Places, capsys: pytest.CaptureFixture[str]) -> None:
    """SIGKILL of the daemon: its app stays in the desired state; the next run deletes
    it there, or the new daemon would start its instances again."""
    dead = places.demo()
    dead.start_daemon()
    dead.flatstack("image", "import", "--name", examples.IMAGE, dead.example_layout())
    dead.flatstack("apply", "-f", dead.manifest())
    dead.wait_ready(2)
    assert dead.daemon is not None
    dead.daemon.kill()
    dead.daemon.wait()
    assert places.leftovers()["apps"] == ["hello"]
    capsys.readouterr()

    assert demo.main(places.argv("--no-bundle", "--no-app")) == 0
    out = capsys.readouterr().out
    assert "deleted app hello (its daemon was gone)" in out and "endpoint rules" in out
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


def test_example_knobs_on_one_instance(places: Places) -> None:
    """The example image run as a plain container: /, health, slow, burn, hang, crash."""
    node = places.demo()
    port = free_port()
    try:
        node.start_daemon()
        node.flatstack("image", "import", "--name", examples.IMAGE, node.example_layout())
        node.flatstack("run", "-d", "--name", "knobs", "-p", f"{port}:8080", examples.IMAGE)
        _check_knobs(node, port, _record(node)["id"])
    finally:
        node.teardown()
    assert _clean(places.leftovers()), {k: v for k, v in places.leftovers().items() if v}


def _record(node: demo.Demo) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(node.flatstack("inspect", "knobs", show=False).stdout)[0]
    return record


def _timed(port: int, path: str, timeout: float = 5) -> tuple[int, str, float]:
    started = time.monotonic()
    status, body = get("127.0.0.1", port, path, timeout=timeout)
    return status, body, time.monotonic() - started


def _check_knobs(node: demo.Demo, port: int, cid: str) -> None:
    deadline = time.monotonic() + 10
    while get("127.0.0.1", port, "/cgi-bin/health")[0] != 200:
        assert time.monotonic() < deadline, "the example never answered"
        time.sleep(0.05)
    assert get("127.0.0.1", port, "/cgi-bin/health") == (200, f"ok {cid[:12]}")
    status, body, fast = _timed(port, "/")
    assert (status, body) == (200, f"hello from {cid[:12]}")

    # slow: every reply but health waits the configured delay; ?0 undoes it
    assert get("127.0.0.1", port, "/cgi-bin/slow?0.4")[1].endswith("adds 0.4 s to every reply")
    status, body, slow = _timed(port, "/")
    assert status == 200 and slow >= 0.4 and slow >= fast + 0.35, (fast, slow)
    status, _, health = _timed(port, "/cgi-bin/health")
    assert status == 200 and health < 0.4, health
    get("127.0.0.1", port, "/cgi-bin/slow?0")
    assert _timed(port, "/")[2] < 0.4

    # burn: a busy loop inside the container for the seconds asked
    assert get("127.0.0.1", port, "/cgi-bin/burn?3")[1].endswith("burns CPU for 3 s")
    ps = node.flatstack("exec", "knobs", "ps", "-o", "args", show=False).stdout
    assert "while :; do :; done" in ps, ps

    # hang: httpd stopped, nothing answers (probes included) until it is continued
    assert get("127.0.0.1", port, "/cgi-bin/hang")[1].endswith("hanging")
    time.sleep(0.3)
    status, _, waited = _timed(port, "/cgi-bin/health", timeout=1)
    assert status == 0 and waited >= 0.9
    node.flatstack("exec", "knobs", "sh", "-c", "kill -CONT $(cat /tmp/knobs/httpd.pid)",
                   show=False)
    assert get("127.0.0.1", port, "/cgi-bin/health")[0] == 200

    # crash: the instance exits with the code asked
    assert get("127.0.0.1", port, "/cgi-bin/crash?7")[1].endswith("crashing with exit code 7")
    deadline = time.monotonic() + 10
    while (record := _record(node))["state"] == "running":
        assert time.monotonic() < deadline, record
        time.sleep(0.05)
    assert (record["state"], record["exit_code"]) == ("exited", 7), record


def test_the_example_specs_are_one_app() -> None:
    """examples/app.yaml and examples/deployment.yaml (Deployment + HPA + the SLA
    annotation) load to the same App, with probes, an SLA, autoscaling and an endpoint."""
    with open(os.path.join(examples.EXAMPLES, "app.yaml")) as f:
        (app,) = load_apps(f.read())
    with open(os.path.join(examples.EXAMPLES, "deployment.yaml")) as f:
        (kube,) = load_apps(f.read())
    assert app.to_dict() == kube.to_dict()
    spec = app.to_dict()["spec"]
    assert spec["image"] == examples.IMAGE
    assert {"startupProbe", "readinessProbe", "livenessProbe", "sla"} <= set(spec)
    assert (spec["autoscale"]["minReplicas"], spec["autoscale"]["maxReplicas"]) == (2, 4)
    assert spec["autoscale"]["metrics"][0]["resource"]["name"] == "cpu"
    with open(os.path.join(examples.EXAMPLES, "app.yaml")) as f:
        assert spec["ports"][0]["hostPort"] == yaml.safe_load(f)["spec"]["ports"][0]["hostPort"]
