"""``/metrics`` through the real daemon, scraped by a real Prometheus (Debian package) over
``flatstack daemon --metrics-listen``; a bad listen address is refused up front."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from flatstack.control.endpoint import Endpoints, tag_of
from tests.control._plane import app_doc, wait_for
from tests.e2e._daemon import FLATSTACK, Daemon
from tests.engine._image_support import free_port

READY = {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 0.2,
         "failureThreshold": 1}
SLA = {"latencyP99Ms": 500, "window": 2, "minSamples": 5,
       "synthetic": {"httpGet": {"path": "/", "port": "http"}, "ratePerSecond": 5}}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The exposition parsed by prometheus_client: (name, labels) -> value."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


@pytest.fixture
def metrics_daemon() -> Iterator[tuple[Daemon, int]]:
    """A daemon with ``--metrics-listen 127.0.0.1:PORT`` (given through its env var)."""
    with tempfile.TemporaryDirectory(prefix="fsmet-", ignore_cleanup_errors=True) as tmp:
        made = Daemon(Path(tmp))
        port = free_port()
        made.env["FLATSTACK_METRICS_LISTEN"] = f"127.0.0.1:{port}"
        made.start()
        try:
            yield made, port
        finally:
            made.close()


class Prometheus:
    """``prometheus`` on a temp config and storage dir, scraping ``target`` every 1 s."""

    def __init__(self, tmp: Path, target: str) -> None:
        self.port = free_port()
        config = tmp / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [{"job_name": "flatstack",
                                "static_configs": [{"targets": [target]}]}]}))
        self.log = tmp / "prometheus.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [shutil.which("prometheus") or "prometheus", f"--config.file={config}",
                 f"--storage.tsdb.path={tmp / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5)

    def query(self, expr: str) -> list[dict]:
        """The instant vector of ``expr`` ([] while Prometheus is not up yet)."""
        try:
            reply = self.client.get("/api/v1/query", params={"query": expr})
        except httpx.TransportError:
            return []
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["status"] == "success", body
        return body["data"]["result"]  # type: ignore[no-any-return]

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def test_prometheus_scrapes_the_daemon(metrics_daemon: tuple[Daemon, int],
                                       layouts: dict[str, Path], tmp_path: Path) -> None:
    daemon, metrics_port = metrics_daemon
    daemon.import_images(layouts)
    host_port = free_port()
    spec = tmp_path / "web.yaml"
    spec.write_text(yaml.safe_dump(app_doc(replicas=2, host_port=host_port,
                                           readinessProbe=READY, sla=SLA)))
    prometheus = Prometheus(tmp_path, f"127.0.0.1:{metrics_port}")
    try:
        daemon.cli("apply", "-f", str(spec))
        _check(daemon, metrics_port, prometheus, host_port)
    finally:
        prometheus.close()
        with daemon.api() as api:
            api.delete("/v1/apps/web")
        wait_for(lambda: daemon.cli("ps", "-aq").stdout == "", timeout=30)
        Endpoints(tag_of(str(daemon.state))).teardown()


def _ready(daemon: Daemon) -> int:
    return int(json.loads(daemon.cli("get", "apps", "-o", "json").stdout)[0]["ready"])


def _check(daemon: Daemon, metrics_port: int, prometheus: Prometheus, host_port: int) -> None:
    assert wait_for(lambda: _ready(daemon) == 2, timeout=30)
    # the API socket: every family, the app's figures as the controllers hold them
    def measured(text: str) -> bool:  # the monitor has figures for every instance
        return all(value(text, "flatstack_sla_p99_latency_seconds", app="web", instance=n)
                   is not None for n in _names(daemon))

    with daemon.api() as api:
        assert wait_for(lambda: measured(api.get("/metrics").text), timeout=15)
        reply = api.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = reply.text
    assert value(text, "flatstack_app_replicas_desired", app="web") == 2
    assert value(text, "flatstack_app_instances_ready", app="web") == 2
    assert value(text, "flatstack_app_instances_serving", app="web") == 2
    assert value(text, "flatstack_app_instances", app="web", state="running") == 2
    assert value(text, "flatstack_endpoint_backends", app="web", host_port=str(host_port),
                 protocol="TCP") == 2
    assert value(text, "flatstack_engine_containers", state="running") == 2
    assert value(text, "flatstack_app_events_total", app="web", reason="Started") == 2
    assert value(text, "flatstack_app_ejections_total", app="web") == 0
    assert value(text, "flatstack_sla_target_p99_latency_seconds", app="web") == 0.5
    for name in _names(daemon):  # httpd on a bridge answers well inside the SLA
        p99 = value(text, "flatstack_sla_p99_latency_seconds", app="web", instance=name)
        assert p99 is not None and 0 < p99 < 0.5
        assert value(text, "flatstack_sla_breaching", app="web", instance=name) == 0

    # the TCP listener serves the same figures, and nothing else; scrapes hold no database
    # connection open
    with httpx.Client(base_url=f"http://127.0.0.1:{metrics_port}", timeout=5) as tcp:
        assert value(tcp.get("/metrics").text, "flatstack_app_instances_ready", app="web") == 2
        assert tcp.get("/v1/version").status_code == 404
        assert tcp.get("/v1/apps").status_code == 404
        opened = _db_fds(daemon)
        for _ in range(30):
            with httpx.Client(timeout=5) as fresh:
                assert fresh.get(f"http://127.0.0.1:{metrics_port}/metrics").status_code == 200
        assert _db_fds(daemon) <= opened + 1

    # Prometheus scrapes it: the target is up and the ready count is the app's
    assert wait_for(lambda: prometheus.scalar('up{job="flatstack"}') == 1, timeout=30), \
        prometheus.log.read_text()[-2000:]
    ready_expr = 'flatstack_app_instances_ready{app="web"}'
    assert wait_for(lambda: prometheus.scalar(ready_expr) == _ready(daemon) == 2, timeout=15)

    # an instance killed: Prometheus sees the restart counted by its reason and the ready
    # count back at 2; scaled to 3: Prometheus follows
    daemon.cli("kill", _names(daemon)[0])
    restarts = 'flatstack_app_restarts_total{app="web",reason="Crashed"}'
    assert wait_for(lambda: prometheus.scalar(restarts) == 1, timeout=30)
    daemon.cli("scale", "app", "web", "--replicas", "3")
    assert wait_for(lambda: prometheus.scalar(ready_expr) == _ready(daemon) == 3, timeout=30)
    assert prometheus.scalar('flatstack_app_replicas_desired{app="web"}') == 3
    backends = f'flatstack_endpoint_backends{{app="web",host_port="{host_port}"}}'
    assert wait_for(lambda: prometheus.scalar(backends) == 3, timeout=10)


def _db_fds(daemon: Daemon) -> int:
    """The daemon's open descriptors on its control database."""
    assert daemon.proc is not None
    fds = Path(f"/proc/{daemon.proc.pid}/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += os.readlink(fd).endswith("control.db")
        except FileNotFoundError:
            pass
    return count


def _names(daemon: Daemon) -> list[str]:
    return sorted(i["name"] for i in json.loads(daemon.cli("get", "instances", "web", "-o",
                                                           "json").stdout)
                  if i["state"] == "running" and i["ready"])


def test_metrics_listen_refuses_a_bad_address(tmp_path: Path) -> None:
    for bad, reason in (("localhost", "expected IP:PORT"), ("127.0.0.1:0", "port must be"),
                        ("no-such-host:80", "expected IP:PORT")):
        proc = subprocess.run(
            [str(FLATSTACK), "daemon", "--state-dir", str(tmp_path / "state"), "--socket",
             str(tmp_path / "run" / "api.sock"), "--runtime-root", str(tmp_path / "rt"),
             "--metrics-listen", bad], capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode != 0, proc.stdout
        assert f"--metrics-listen: {bad!r}" in proc.stderr and reason in proc.stderr
        assert not (tmp_path / "run").exists() and not (tmp_path / "state").exists()
