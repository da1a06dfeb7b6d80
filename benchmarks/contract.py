#!/usr/bin/env python3
"""The infrastructure contract's timings, against a real ``flatstack daemon``.

Apps of busybox httpd instances (``/cgi-bin/work`` sleeps 0.3 s while ``/tmp/slow``
exists), each on its own endpoint port, on a private bridge and subnet:

- crash: an instance SIGKILLed -> a new instance ready (in the endpoint). One app per
  trial, so every kill is an app's first failure (the back-off starts at the second);
- hang: the instance SIGSTOPped (alive, not answering) -> the liveness probe (1 s
  period) fails it -> a new instance ready;
- slow: one of three instances made slow while a load generator hits the endpoint ->
  the SLA monitor ejects it -> a replacement ready and the slow one gone; the load
  generator's failed requests are counted;
- load step: a CPU burn started in the one instance of an autoscaled app (cpu
  utilisation target 40 %) -> a second instance ready;
- square wave: the same app's load alternates high (4 s) and low (3 s) three times, then
  stays low, with an 8 s scale-down stabilisation window: how often the replica count
  went up and down during the wave (target: up, then never down while it lasts) and how
  long after the last high half it came down (target: the window, plus one pass);
- rolling: a spec change (new env) rolled over 3 instances (maxSurge 1, maxUnavailable 0)
  while a load generator hits the endpoint: time to all instances of the new generation
  ready and the old ones gone, and the failed requests (target: 0).

Times run from the action's API call returning to the new instance being reported ready
by ``GET /v1/instances`` (polled every 20 ms). Prints a table against the issue's
targets with Kubernetes' defaults beside them, and writes JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import IMAGE, REPO, FlatstackDaemon, busybox_image

from flatstack.control.endpoint import Endpoints, tag_of
from flatstack.testing import HTTPD_APP, free_port
from flatstack.testing import http_get as get

WAVE_WINDOW = 8  # scale-down stabilisation window of the square-wave scenario (s)
TARGETS = {"crash": ("p50 < 1 s", 1.0), "hang": ("< 3 s", 3.0),
           "slow": ("< 10 s, 0 errors", 10.0), "load_step": ("< 5 s", 5.0),
           "square_wave": (f"{WAVE_WINDOW}-{WAVE_WINDOW + 3} s, no flap", WAVE_WINDOW + 3.0),
           "rolling": ("0 errors", 120.0)}
KUBERNETES = {"crash": "restart at once (back-off 10 s from the 2nd); ready after the "
                       "next readiness probe (10 s period)",
              "hang": "30 s (10 s period x 3 failures)",
              "slow": "not detected (liveness still passes)",
              "load_step": "15 s HPA loop, then the pod's start",
              "square_wave": "300 s scale-down window (HPA default), 15 s loop",
              "rolling": "0 errors with readiness probes and maxUnavailable 0"}
READY = {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 0.2,
         "failureThreshold": 1}
BURN = ["sh", "-c", "while :; do :; done"]
BURN_WHILE_FLAG = ["sh", "-c", "touch /tmp/burn; while [ -f /tmp/burn ]; do :; done"]
CPU_40 = [{"type": "Resource", "resource": {"name": "cpu", "target": {
    "type": "Utilization", "averageUtilization": 40}}}]


def app_doc(name: str, replicas: int, **spec: Any) -> dict[str, Any]:
    """An App of busybox httpd instances with an endpoint port and a readiness probe."""
    return {"apiVersion": "flatstack.io/v1", "kind": "App", "metadata": {"name": name},
            "spec": {"image": IMAGE, "command": ["sh", "-c", HTTPD_APP],
                     "ports": [{"name": "http", "containerPort": 8080,
                                "hostPort": free_port()}],
                     "replicas": replicas, "readinessProbe": READY,
                     "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}},
                     "terminationGracePeriodSeconds": 1, **spec}}


class Plane:
    """The daemon's API (unix socket) as this benchmark uses it."""

    def __init__(self, daemon: FlatstackDaemon) -> None:
        self.http = httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket)),
                                 base_url="http://flatstack", timeout=60)

    def call(self, method: str, url: str, **kw: Any) -> Any:
        reply = self.http.request(method, url, **kw)
        if reply.status_code >= 400:
            raise RuntimeError(f"{method} {url}: {reply.status_code} {reply.text}")
        return reply.json() if reply.headers.get("content-type", "").startswith(
            "application/json") else reply.content

    def apply(self, *docs: dict[str, Any]) -> None:
        self.call("POST", "/v1/apps", json={"manifest": yaml.safe_dump_all(docs)})

    def delete(self, name: str) -> None:
        self.call("DELETE", f"/v1/apps/{name}")

    def ready(self, app: str) -> list[dict[str, Any]]:
        return [i for i in self.call("GET", "/v1/instances", params={"app": app})
                if i["ready"] and i["state"] == "running"]

    def exec(self, cid: str, command: list[str], detach: bool = False) -> None:
        self.call("POST", f"/v1/containers/{cid}/exec",
                  json={"command": command, "detach": detach})

    def kill(self, cid: str, signal: str) -> None:
        self.call("POST", f"/v1/containers/{cid}/kill", params={"signal": signal})

    def events(self, app: str) -> list[dict[str, Any]]:
        return self.call("GET", "/v1/events", params={"app": app})  # type: ignore[no-any-return]

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> float:
        """Poll every 20 ms; the monotonic time ``predicate`` became true."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                app = what.split()[0]
                recent = [f"{e['reason']}: {e['message']}" for e in self.events(app)[-5:]]
                raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}; "
                                   f"recent events of {app}: {recent}")
            time.sleep(0.02)
        return time.monotonic()

    def replaced(self, app: str, before: set[str], victim: str, want: int) -> Callable[[], bool]:
        """True once ``want`` instances are ready, a new one among them, not ``victim``."""
        def check() -> bool:
            ready = {i["id"] for i in self.ready(app)}
            return len(ready) == want and victim not in ready and bool(ready - before)
        return check


def _port(doc: dict[str, Any]) -> int:
    return int(doc["spec"]["ports"][0]["hostPort"])


def _replacements(plane: Plane, docs: list[dict[str, Any]], signal: str,
                  after: Callable[[str], None] = lambda _name: None,
                  spread: bool = False) -> list[float]:
    """For each app of ``docs`` (2 instances): send ``signal`` to one instance and time
    until a new one is ready in its place; ``after(app)`` checks each trial."""
    plane.apply(*docs)
    times: list[float] = []
    try:
        for doc in docs:
            name = doc["metadata"]["name"]
            plane.wait(lambda n=name: len(plane.ready(n)) == 2, 60, f"{name} ready")
            if spread:
                time.sleep(0.37 * (len(times) + 1) % 1)  # spread the probe phase
            before = plane.ready(name)
            victim = before[0]["id"]
            plane.kill(victim, signal)
            began = time.monotonic()
            done = plane.wait(plane.replaced(name, {i["id"] for i in before}, victim, 2),
                              30, f"{name} replaced")
            times.append(done - began)
            after(name)
    finally:
        for doc in docs:
            plane.delete(doc["metadata"]["name"])
    return times


def crash(plane: Plane, trials: int) -> dict[str, Any]:
    docs = [app_doc(f"crash-{n}", 2) for n in range(trials)]

    def serving(name: str) -> None:
        doc = next(d for d in docs if d["metadata"]["name"] == name)
        assert get("127.0.0.1", _port(doc))[0] == 200

    times = _replacements(plane, docs, "KILL", serving)
    return {"trials_s": times, "p50_s": statistics.median(times), "max_s": max(times),
            "value_s": statistics.median(times)}


def hang(plane: Plane, trials: int, failures: int) -> dict[str, Any]:
    liveness = {"httpGet": {"path": "/alive", "port": "http"}, "periodSeconds": 1,
                "timeoutSeconds": 0.5, "failureThreshold": failures}
    startup = {"httpGet": {"path": "/alive", "port": "http"}, "periodSeconds": 0.2,
               "failureThreshold": 100}  # liveness only once httpd answers
    docs = [app_doc(f"hang-{n}", 2, livenessProbe=liveness, startupProbe=startup)
            for n in range(trials)]

    def by_liveness(name: str) -> None:
        reasons = [e["reason"] for e in plane.events(name)]
        assert "LivenessFailed" in reasons, reasons

    times = _replacements(plane, docs, "STOP", by_liveness, spread=True)
    return {"trials_s": times, "p50_s": statistics.median(times), "max_s": max(times),
            "value_s": max(times), "liveness": liveness}


class Load:
    """``workers`` threads GETting ``path`` from the endpoint; counts failed requests."""

    def __init__(self, port: int, path: str, workers: int = 2) -> None:
        self.port, self.path = port, path
        self.total = self.errors = 0
        self.statuses: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True)
                         for _ in range(workers)]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            status, _ = get("127.0.0.1", self.port, self.path, timeout=5)
            with self._lock:
                self.total += 1
                self.errors += status != 200
                self.statuses[status] = self.statuses.get(status, 0) + 1

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


def slow(plane: Plane) -> dict[str, Any]:
    sla = {"latencyP99Ms": 150, "window": 3, "minSamples": 10,
           "synthetic": {"httpGet": {"path": "/cgi-bin/work", "port": "http"},
                         "ratePerSecond": 10}}
    doc = app_doc("slow", 3, sla=sla)
    plane.apply(doc)
    try:
        plane.wait(lambda: len(plane.ready("slow")) == 3, 60, "slow ready")
        time.sleep(float(sla["window"]) + 0.5)  # the monitor has full windows
        load = Load(_port(doc), "/cgi-bin/work")
        time.sleep(1.0)
        before = plane.ready("slow")
        victim = before[0]["id"]
        plane.exec(victim, ["touch", "/tmp/slow"])
        began = time.monotonic()
        ejected = plane.wait(lambda: victim not in {i["id"] for i in plane.ready("slow")},
                             30, "the slow instance ejected")
        done = plane.wait(plane.replaced("slow", {i["id"] for i in before}, victim, 3), 30,
                          "slow replaced")
        gone = plane.wait(lambda: victim not in {
            i["id"] for i in plane.call("GET", "/v1/instances", params={"app": "slow"})},
            30, "the slow instance removed")
        time.sleep(1.0)
        load.stop()
        reasons = [e["reason"] for e in plane.events("slow")]
        assert "Ejected" in reasons, reasons
    finally:
        plane.delete("slow")
    return {"ejected_s": ejected - began, "replaced_s": done - began,
            "removed_s": gone - began, "requests": load.total, "errors": load.errors,
            "statuses": load.statuses, "value_s": done - began, "sla": sla}


def _warmed_up(plane: Plane, name: str) -> str:
    """The id of the one instance of autoscaled app ``name`` once ready and warmed up."""
    plane.wait(lambda: len(plane.ready(name)) == 1, 60, f"{name} ready")
    time.sleep(4.0)  # past the autoscaler's 3 s warm-up
    return str(plane.ready(name)[0]["id"])


def load_step(plane: Plane) -> dict[str, Any]:
    autoscale = {"minReplicas": 1, "maxReplicas": 3, "metrics": CPU_40}
    plane.apply(app_doc("load", 1, autoscale=autoscale))
    try:
        first = _warmed_up(plane, "load")
        wall = time.time()
        plane.exec(first, BURN, detach=True)
        began = time.monotonic()
        done = plane.wait(lambda: len(plane.ready("load")) >= 2, 30, "a second replica")
        scaled = next(e for e in plane.events("load") if e["reason"] == "ScaledUp")
    finally:
        plane.delete("load")
    return {"replica_serving_s": done - began, "decision_s": scaled["time"] - wall,
            "decision": scaled["message"], "value_s": done - began, "autoscale": autoscale}


def square_wave(plane: Plane) -> dict[str, Any]:
    autoscale = {"minReplicas": 1, "maxReplicas": 3, "metrics": CPU_40, "behavior": {
        "scaleDown": {"stabilizationWindowSeconds": WAVE_WINDOW}}}
    plane.apply(app_doc("wave", 1, autoscale=autoscale))
    try:
        busy = _warmed_up(plane, "wave")
        began = time.time()
        for _ in range(3):
            plane.exec(busy, BURN_WHILE_FLAG, detach=True)
            time.sleep(4.0)
            plane.exec(busy, ["rm", "/tmp/burn"])
            dropped = time.time()
            time.sleep(3.0)
        plane.wait(lambda: plane.call("GET", "/v1/apps/wave")["replicas"] == 1,
                   WAVE_WINDOW + 20, "wave scaled in")
        scaling = [e for e in plane.events("wave") if e["reason"] in ("ScaledUp", "ScaledDown")]
    finally:
        plane.delete("wave")
    reasons = [e["reason"] for e in scaling]
    during = [e["reason"] for e in scaling if e["time"] <= dropped]
    flaps = sum(1 for a, b in itertools.pairwise(reasons) if a != b) - 1  # up, down: 0
    down = next(e for e in scaling if e["reason"] == "ScaledDown")
    value = down["time"] - dropped
    return {"scaled_up": reasons.count("ScaledUp"),
            "down_during_wave": during.count("ScaledDown"), "flaps": flaps,
            "scaled_in_after_s": value, "wave_s": dropped - began, "window_s": WAVE_WINDOW,
            "decisions": [f"{e['reason']} at +{e['time'] - began:.1f} s: {e['message']}"
                          for e in scaling],
            "value_s": value, "met": flaps == 0 and not during.count("ScaledDown")
            and WAVE_WINDOW - 2 <= value < WAVE_WINDOW + 3}


def rolling(plane: Plane) -> dict[str, Any]:
    doc = app_doc("roll", 3, strategy={"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    plane.apply(doc)
    try:
        plane.wait(lambda: len(plane.ready("roll")) == 3, 60, "roll ready")
        old = {i["id"] for i in plane.ready("roll")}
        load = Load(_port(doc), "/")
        time.sleep(1.0)
        doc["spec"]["env"] = [{"name": "VERSION", "value": "2"}]
        plane.apply(doc)
        began = time.monotonic()

        def rolled() -> bool:
            every = plane.call("GET", "/v1/instances", params={"app": "roll"})
            ready = [i for i in every if i["ready"] and i["state"] == "running"]
            return (len(ready) == 3 and not old & {i["id"] for i in every}
                    and {i["generation"] for i in ready} == {2})
        done = plane.wait(rolled, 60, "roll updated")
        time.sleep(1.0)
        load.stop()
    finally:
        plane.delete("roll")
    return {"rolled_s": done - began, "requests": load.total, "errors": load.errors,
            "statuses": load.statuses, "value_s": done - began}


def print_table(doc: dict[str, Any]) -> None:
    rows = doc["results"]
    print(f"\n{'scenario':<11}{'measured':>10}  {'target':<18}{'met':<5}kubernetes defaults")
    for key in TARGETS:
        if key not in rows:
            continue
        r = rows[key]
        text, limit = TARGETS[key]
        met = r.get("met", r["value_s"] < limit and r.get("errors", 0) == 0)
        print(f"{key:<11}{r['value_s']:>9.2f}s  {text:<18}{'yes' if met else 'NO':<5}"
              f"{KUBERNETES[key]}")
    if "crash" in rows:
        print("crash trials: " + ", ".join(f"{t:.2f}" for t in rows["crash"]["trials_s"])
              + " s")
    if "hang" in rows:
        h = rows["hang"]
        print(f"hang trials (max shown; liveness period 1 s, timeout 0.5 s, "
              f"{h['liveness']['failureThreshold']} failures): "
              + ", ".join(f"{t:.2f}" for t in h["trials_s"]) + " s")
    if "slow" in rows:
        s = rows["slow"]
        print(f"slow: ejected after {s['ejected_s']:.2f} s, replacement ready "
              f"{s['replaced_s']:.2f} s, slow one removed {s['removed_s']:.2f} s; "
              f"{s['requests']} requests through the endpoint, {s['errors']} failed")
    if "load_step" in rows:
        ls = rows["load_step"]
        print(f"load step: ScaledUp after {ls['decision_s']:.2f} s ({ls['decision']}); "
              f"second replica ready {ls['replica_serving_s']:.2f} s")
    if "square_wave" in rows:
        sw = rows["square_wave"]
        print(f"square wave ({sw['wave_s']:.0f} s, scale-down window {sw['window_s']} s): "
              f"{sw['scaled_up']} scale-up(s), {sw['down_during_wave']} scale-down(s) during "
              f"the wave, {sw['flaps']} flap(s); scaled in {sw['scaled_in_after_s']:.2f} s "
              "after the last high half")
        for line in sw["decisions"]:
            print(f"  {line}")
    if "rolling" in rows:
        r = rows["rolling"]
        print(f"rolling update of 3 instances: {r['rolled_s']:.2f} s; {r['requests']} "
              f"requests through the endpoint, {r['errors']} failed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crash-trials", type=int, default=5)
    parser.add_argument("--hang-trials", type=int, default=3)
    parser.add_argument("--hang-failures", type=int, default=2,
                        help="liveness failureThreshold (period 1 s)")
    parser.add_argument("--only", default=",".join(TARGETS))
    parser.add_argument("--out", default=str(REPO / "results" / "contract.json"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("contract.py runs containers: run it as root")
    if args.crash_trials < 1 or args.hang_trials < 1 or args.hang_failures < 1:
        sys.exit("--crash-trials, --hang-trials and --hang-failures must be >= 1")
    only = args.only.split(",")
    if bad := [s for s in only if s not in TARGETS]:
        sys.exit(f"--only: unknown scenarios {bad}")
    work = Path(tempfile.mkdtemp(prefix="fsc-"))
    work.chmod(0o755)
    started = time.monotonic()
    results: dict[str, Any] = {}
    daemon = FlatstackDaemon(work)
    try:
        layout, _ = busybox_image(work)
        daemon.start()
        daemon.import_image(layout)
        plane = Plane(daemon)
        scenarios: dict[str, Callable[[], dict[str, Any]]] = {
            "crash": lambda: crash(plane, args.crash_trials),
            "hang": lambda: hang(plane, args.hang_trials, args.hang_failures),
            "slow": lambda: slow(plane), "load_step": lambda: load_step(plane),
            "square_wave": lambda: square_wave(plane), "rolling": lambda: rolling(plane)}
        for key in only:
            print(f"{key}...", file=sys.stderr, flush=True)
            results[key] = scenarios[key]()
    finally:
        daemon.close()
        Endpoints(tag_of(str(daemon.state))).teardown()
        shutil.rmtree(work, ignore_errors=True)
    doc = {"benchmark": "contract", "time": time.time(), "cpus": os.cpu_count(),
           "duration_s": round(time.monotonic() - started, 1),
           "targets": {k: v[0] for k, v in TARGETS.items()}, "kubernetes": KUBERNETES,
           "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print_table(doc)
    print(f"\n{out} ({doc['duration_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
