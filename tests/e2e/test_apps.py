"""Apps through the real daemon and CLI: apply (dry run, diff, bad input), get, describe,
the endpoint, a killed instance replaced, scale, events -f, delete."""

from __future__ import annotations

import collections
import contextlib
import json
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import yaml

from flatstack.control.endpoint import Endpoints, tag_of
from tests.control._plane import app_doc, get, wait_for
from tests.e2e._daemon import FLATSTACK, Daemon
from tests.engine._image_support import free_port

READY = {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 0.2,
         "failureThreshold": 1}
SLA = {"latencyP99Ms": 500, "window": 2, "minSamples": 5,
       "synthetic": {"httpGet": {"path": "/", "port": "http"}, "ratePerSecond": 5}}


def _apps(daemon: Daemon) -> list[dict]:
    return json.loads(daemon.cli("get", "apps", "-o", "json").stdout)


def test_apps_through_the_daemon(daemon: Daemon, layouts: dict[str, Path],
                                 tmp_path: Path) -> None:
    daemon.import_images(layouts)
    port = free_port()
    spec = tmp_path / "web.yaml"
    spec.write_text(yaml.safe_dump(app_doc(replicas=2, host_port=port, readinessProbe=READY,
                                           sla=SLA)))
    try:
        _run(daemon, spec, tmp_path, port)
    finally:  # the app goes first, or the daemon would put its rules back
        with daemon.api() as api:
            api.delete("/v1/apps/web")
        wait_for(lambda: daemon.cli("ps", "-aq").stdout == "", timeout=30)
        Endpoints(tag_of(str(daemon.state))).teardown()


def _run(daemon: Daemon, spec: Path, tmp_path: Path, port: int) -> None:
    dry = daemon.cli("apply", "-f", str(spec), "--dry-run").stdout
    assert dry.startswith("app/web created (generation 1) (dry run)\n")
    assert "+++ app/web" in dry and "+  replicas: 2" in dry
    assert _apps(daemon) == []

    assert daemon.cli("apply", "-f", str(spec)).stdout == "app/web created (generation 1)\n"
    assert daemon.cli("apply", "-f", str(spec)).stdout == "app/web unchanged (generation 1)\n"
    assert wait_for(lambda: _apps(daemon)[0]["ready"] == 2, timeout=30)
    assert wait_for(lambda: get("127.0.0.1", port)[0] == 200)
    served = collections.Counter(get("127.0.0.1", port)[1] for _ in range(40))
    instances = json.loads(daemon.cli("get", "instances", "web", "-o", "json").stdout)
    assert set(served) == {i["id"][:12] for i in instances} and len(served) == 2

    wide = daemon.cli("get", "instances", "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAME", "APP", "READY", "STATE", "GENERATION", "AGE", "IP",
                               "ID"] and len(wide) == 3
    table = daemon.cli("get", "apps").stdout.splitlines()
    assert table[1].split()[:5] == ["web", "2/2", "2", "1", str(port)]
    described = daemon.cli("describe", "app", "web").stdout
    assert "2 desired, 2 running, 2 ready" in described and "Started" in described
    assert "readiness ok" in described
    assert wait_for(lambda: "SLA:         healthy: all 2 judged instances meet the SLA" in
                    daemon.cli("describe", "app", "web").stdout, timeout=10)

    # bad input: every bad field named, nothing written
    bad = tmp_path / "bad.yaml"
    doc = app_doc(replicas=2, host_port=port)
    doc["spec"]["replicas"] = "two"
    doc["spec"]["colour"] = "blue"
    bad.write_text(yaml.safe_dump(doc))
    proc = daemon.cli("apply", "-f", str(bad), check=False)
    assert proc.returncode == 1
    assert "spec.replicas" in proc.stderr and "spec.colour" in proc.stderr
    with daemon.api() as api:
        answer = api.post("/v1/apps", json={"manifest": bad.read_text()})
        assert answer.status_code == 422
        assert {d["field"] for d in answer.json()["detail"]} == {
            "documents[0].spec.replicas", "documents[0].spec.colour"}
        answer = api.post("/v1/apps", json={"manifest": "kind: [\n"})
        assert answer.status_code == 422 and "invalid YAML" in answer.json()["error"]
        assert api.post("/v1/apps/nosuch/scale", json={"replicas": 2}).status_code == 404
        answer = api.post("/v1/apps/web/scale", json={"replicas": -1})
        assert answer.status_code == 422 and answer.json()["field"] == "replicas"
    assert _apps(daemon)[0]["generation"] == 1

    # an instance killed from outside is replaced, with its event
    follow = subprocess.Popen([str(FLATSTACK), "events", "-f", "-o", "json", "--app", "web"],
                              stdout=subprocess.PIPE, text=True, env=daemon.env)
    try:
        victim = instances[0]
        daemon.cli("kill", victim["name"])
        assert wait_for(lambda: victim["id"] not in {
            i["id"] for i in json.loads(daemon.cli("get", "instances", "-o", "json").stdout)}
            and _apps(daemon)[0]["ready"] == 2, timeout=30)
        assert "Crashed" in daemon.cli("events", "--app", "web").stdout
        reasons = _follow_until(follow, "Crashed")
        assert "Crashed" in reasons
    finally:
        follow.kill()
        follow.wait()

    # the daemon killed and restarted: the kernel keeps serving, the instances are adopted
    ids = {i["id"] for i in json.loads(daemon.cli("get", "instances", "-o", "json").stdout)}
    daemon.stop(signal.SIGKILL)
    assert [get("127.0.0.1", port)[0] for _ in range(20)] == [200] * 20
    daemon.start()
    assert [get("127.0.0.1", port)[0] for _ in range(20)] == [200] * 20
    assert wait_for(lambda: _apps(daemon)[0]["ready"] == 2, timeout=10)
    assert {i["id"] for i in json.loads(daemon.cli("get", "instances", "-o", "json").stdout)
            } == ids

    assert "scaled to 3" in daemon.cli("scale", "app", "web", "--replicas", "3").stdout
    assert wait_for(lambda: _apps(daemon)[0]["ready"] == 3, timeout=30)

    missing = daemon.cli("delete", "app", "nosuch", check=False)
    assert missing.returncode == 1 and "'nosuch' does not exist" in missing.stderr
    assert daemon.cli("delete", "app", "web").stdout == "app/web deleted\n"
    assert wait_for(lambda: daemon.cli("ps", "-aq").stdout == "", timeout=30)
    assert wait_for(lambda: get("127.0.0.1", port, timeout=1)[0] == 0, timeout=5)
    assert _apps(daemon) == []
    assert "Deleted" in daemon.cli("events").stdout


def _follow_until(proc: subprocess.Popen[str], reason: str, timeout: float = 10) -> list[str]:
    """Reasons printed by ``events -f`` until ``reason`` shows (or ``timeout``)."""
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout],  # type: ignore[union-attr]
                     daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while reason not in seen and time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            seen.append(json.loads(lines.get(timeout=0.5))["reason"])
    return seen
