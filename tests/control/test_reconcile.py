"""The replica controller over real containers: replicas, replacement, liveness, endpoint."""

from __future__ import annotations

import collections
import time

from flatstack.engine.containers import RunOptions
from tests.control._plane import Plane, app_doc, free_port, get, plane_fixture, wait_for
from tests.engine._engine_support import (  # noqa: F401 - fixtures
    IMAGE,
    Node,
    layouts_fixture,
    node_fixture,
)

__all__ = ["plane_fixture"]

PROBE = {"httpGet": {"path": "/alive", "port": "http"}, "periodSeconds": 0.2,
         "timeoutSeconds": 0.5, "failureThreshold": 2}
READY = {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 0.2,
         "timeoutSeconds": 0.5, "failureThreshold": 1}


def test_replicas_created_scaled_and_replaced_when_killed(plane: Plane) -> None:
    plane.apply(app_doc(replicas=2))
    assert wait_for(lambda: len(plane.instances()) == 2), plane.reconciler.snapshot()
    containers = plane.containers()
    assert {c["labels"]["flatstack.generation"] for c in containers} == {"1"}
    assert all(c["resources"]["memory"] == 64 << 20 for c in containers)
    assert all(c["resources"]["cpus"] == 0.5 for c in containers)
    for inst in plane.instances():
        assert wait_for(lambda i=inst: get(i["ip"], 8080)[0] == 200)
        assert get(inst["ip"], 8080)[1] == inst["id"][:12]

    victim = plane.instances()[0]
    plane.node.engine.kill(victim["id"], "KILL")
    assert wait_for(lambda: "Crashed" in plane.reasons())
    crash = next(e for e in plane.store.events(app="web") if e.reason == "Crashed")
    assert crash.instance == victim["name"] and crash.numbers["exit_code"] == 137
    assert "replaced now" in crash.message, plane.store.events(app="web")
    assert wait_for(lambda: len(plane.instances()) == 2
                    and victim["id"] not in {i["id"] for i in plane.instances()})
    assert wait_for(lambda: victim["id"] not in {c["id"] for c in plane.containers()})

    plane.store.scale("web", 3)
    plane.control.poke()
    assert wait_for(lambda: len(plane.instances()) == 3
                    and {i["generation"] for i in plane.instances()} == {2})
    plane.store.scale("web", 1)
    plane.control.poke()
    assert wait_for(lambda: len(plane.containers()) == 1)
    assert "Removed" in plane.reasons() or "Replaced" in plane.reasons()


def test_crash_loop_backs_off_with_an_event(plane: Plane) -> None:
    plane.apply(app_doc(replicas=1, command=["sh", "-c", "exit 3"]))
    assert wait_for(lambda: "CrashLoopBackOff" in plane.reasons(), timeout=30)
    loop = next(e for e in plane.store.events(app="web") if e.reason == "CrashLoopBackOff")
    assert "Crashed" in loop.message and "next start at" in loop.message
    assert loop.numbers["failures"] == 3 and loop.numbers["backoff_s"] == 2
    crashes = [e for e in plane.store.events(app="web") if e.reason == "Crashed"]
    assert all(e.numbers["exit_code"] == 3 for e in crashes)
    # back-off: the fourth start waits 2 s after the third failure
    assert [round(e.numbers["backoff_s"]) for e in crashes[:3]] == [0, 1, 2]


def test_liveness_failure_kills_and_replaces(plane: Plane) -> None:
    plane.apply(app_doc(replicas=1, livenessProbe=PROBE))
    assert wait_for(lambda: len(plane.ready()) == 1)
    first = plane.ready()[0]
    from flatstack.engine.containers import ExecOptions

    plane.node.engine.exec(first["id"], ExecOptions(command=["rm", "/tmp/www/alive"]))
    assert wait_for(lambda: "LivenessFailed" in plane.reasons(), timeout=10)
    event = next(e for e in plane.store.events(app="web") if e.reason == "LivenessFailed")
    assert event.instance == first["name"] and "HTTP 404" in event.message
    assert wait_for(lambda: len(plane.ready()) == 1 and plane.ready()[0]["id"] != first["id"])
    assert wait_for(lambda: first["id"] not in {c["id"] for c in plane.containers()})


def test_endpoint_spreads_and_drops_an_ejected_instance(plane: Plane) -> None:
    port = free_port()
    plane.apply(app_doc(replicas=3, host_port=port, readinessProbe=READY))
    assert wait_for(lambda: len(plane.ready()) == 3)
    names = {i["id"][:12] for i in plane.ready()}
    assert wait_for(lambda: get("127.0.0.1", port)[0] == 200)
    seen = collections.Counter(get("127.0.0.1", port)[1] for _ in range(90))
    assert set(seen) == names, seen
    assert min(seen.values()) >= 10, seen
    # from another container on the bridge, through the host's address (PREROUTING, hairpin)
    gateway = plane.node.engine.inspect(plane.ready()[0]["id"])["network"]["gateway"]
    client = plane.node.engine.run(RunOptions(image=IMAGE, command=[
        "sh", "-c", f"for i in 1 2 3 4 5 6 7 8 9 10 11 12; do wget -q -O- http://{gateway}:"
        f"{port}/; done"]))
    assert plane.node.wait_for(client["id"])["exit_code"] == 0
    assert len(set(plane.node.log_text(client["id"]).split()) & names) >= 2
    plane.node.engine.remove(client["id"])

    from flatstack.engine.containers import ExecOptions

    out = plane.ready()[0]
    plane.node.engine.exec(out["id"], ExecOptions(command=["rm", "/tmp/www/ready"]))
    assert wait_for(lambda: len(plane.ready()) == 2)
    assert wait_for(lambda: out["ip"] not in plane.nat_rules(), timeout=5)
    after = collections.Counter(get("127.0.0.1", port)[1] for _ in range(60))
    assert set(after) == names - {out["id"][:12]}, after
    assert f"{out['ip']}:8080" not in plane.nat_rules()


def test_delete_removes_instances_and_rules(plane: Plane) -> None:
    port = free_port()
    plane.apply(app_doc(replicas=2, host_port=port))
    assert wait_for(lambda: len(plane.ready()) == 2)
    assert wait_for(lambda: get("127.0.0.1", port)[0] == 200)
    assert f"--dport {port}" in plane.nat_rules()
    plane.store.delete("web")
    plane.control.poke()
    assert wait_for(lambda: not plane.containers())
    assert wait_for(lambda: f"--dport {port}" not in plane.nat_rules())
    assert get("127.0.0.1", port, timeout=1)[0] == 0
    assert not plane.reconciler.snapshot("web")


def test_restarted_controller_adopts_instances_and_keeps_serving(plane: Plane) -> None:
    port = free_port()
    plane.apply(app_doc(replicas=2, host_port=port, readinessProbe=READY,
                        livenessProbe=PROBE))
    assert wait_for(lambda: len(plane.ready()) == 2)
    assert wait_for(lambda: get("127.0.0.1", port)[0] == 200)
    before = {i["id"] for i in plane.ready()}
    started = plane.reasons().count("Started")
    plane.control.stop()
    # the kernel serves while no controller runs
    assert all(get("127.0.0.1", port)[0] == 200 for _ in range(20))
    plane.restart()
    answers = [get("127.0.0.1", port)[0] for _ in range(50)]
    assert wait_for(lambda: len(plane.ready()) == 2)
    assert answers.count(200) == 50, answers
    assert {i["id"] for i in plane.ready()} == before
    assert plane.reasons().count("Started") == started
    assert all(i["probes"].get("liveness", {}).get("ok") for i in plane.ready())


def test_autoscaler_scales_out_on_cpu(plane: Plane) -> None:
    doc = app_doc(replicas=1, autoscale={
        "minReplicas": 1, "maxReplicas": 3,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": 40}}}]})
    plane.apply(doc)
    assert wait_for(lambda: len(plane.ready()) == 1)
    from flatstack.engine.containers import ExecOptions

    busy = plane.ready()[0]
    plane.node.engine.exec(busy["id"], ExecOptions(command=["sh", "-c", "while :; do :; done"],
                                                   detach=True))
    assert wait_for(lambda: plane.store.get("web").replicas >= 2, timeout=20)
    event = next(e for e in plane.store.events(app="web") if e.reason == "ScaledUp")
    cpu = event.numbers["metrics"][0]
    assert event.numbers["from"] == 1 and event.numbers["to"] >= 2
    assert cpu["value"] > 60, event.numbers
    assert wait_for(lambda: len(plane.ready()) >= 2)


#: A CPU burner that runs while /tmp/burn exists (the square wave's high half).
BURN_WHILE_FLAG = ["sh", "-c", "touch /tmp/burn; while [ -f /tmp/burn ]; do :; done"]


def test_square_wave_scales_out_once_and_in_after_the_window(plane: Plane) -> None:
    """Load alternates high (4 s) and low (3 s) three times, then stays low. The scale-down
    window (8 s) is longer than a low half: replicas go up and stay up through every low
    half, and come down once, a window after the last high half."""
    window = 8
    plane.apply(app_doc(replicas=1, readinessProbe=READY, autoscale={
        "minReplicas": 1, "maxReplicas": 3,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": 40}}}],
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": window}}}))
    assert wait_for(lambda: len(plane.ready()) == 1)
    time.sleep(3.5)  # past the autoscaler's warm-up
    from flatstack.engine.containers import ExecOptions

    busy = plane.ready()[0]["id"]
    for _ in range(3):
        plane.node.engine.exec(busy, ExecOptions(command=BURN_WHILE_FLAG, detach=True))
        time.sleep(4)
        plane.node.engine.exec(busy, ExecOptions(command=["rm", "/tmp/burn"]))
        dropped = time.time()
        time.sleep(3)
    assert wait_for(lambda: plane.store.get("web").replicas == 1, timeout=window + 10)
    scaling = [e for e in plane.store.events(app="web")
               if e.reason in ("ScaledUp", "ScaledDown")]
    reasons = [e.reason for e in scaling]
    assert reasons[0] == "ScaledUp" and reasons[-1] == "ScaledDown", reasons
    first_down = reasons.index("ScaledDown")
    assert "ScaledUp" not in reasons[first_down:], reasons  # no oscillation
    # nothing came down before the window after the last high half had passed
    assert scaling[first_down].time >= dropped + window - 2, (
        scaling[first_down].time - dropped, reasons)
    assert scaling[first_down].numbers["to"] < scaling[first_down].numbers["from"]


SLA = {"latencyP99Ms": 150, "window": 3, "minSamples": 10,
       "synthetic": {"httpGet": {"path": "/cgi-bin/work", "port": "http"},
                     "ratePerSecond": 10}}


def test_slow_instance_is_ejected_then_replaced(plane: Plane) -> None:
    port = free_port()
    plane.apply(app_doc(replicas=3, host_port=port, readinessProbe=READY, sla=SLA))
    assert wait_for(lambda: len(plane.ready()) == 3)
    assert wait_for(lambda: get("127.0.0.1", port, "/cgi-bin/work") == (200, "ok"))
    from flatstack.engine.containers import ExecOptions

    slow = plane.ready()[0]
    plane.node.engine.exec(slow["id"], ExecOptions(command=["touch", "/tmp/slow"]))
    began = time.monotonic()
    results = []
    while "Ejected" not in plane.reasons() and time.monotonic() - began < 15:
        results.append(get("127.0.0.1", port, "/cgi-bin/work")[0])
    assert "Ejected" in plane.reasons(), plane.control.monitor.last.get("web")
    ejected_after = time.monotonic() - began
    event = next(e for e in plane.store.events(app="web") if e.reason == "Ejected")
    assert event.instance == slow["name"] and event.numbers["kind"] == "eject"
    figures = {v["instance"]: v for v in event.numbers["instances"]}
    assert figures[slow["name"]]["p99Ms"] >= 300 and figures[slow["name"]]["outlier"]
    assert f"{slow['ip']}:8080" not in plane.nat_rules()
    while time.monotonic() - began < ejected_after + 2:
        results.append(get("127.0.0.1", port, "/cgi-bin/work")[0])
    assert set(results) == {200}  # no client-visible error
    assert wait_for(lambda: slow["id"] not in {c["id"] for c in plane.containers()})
    assert wait_for(lambda: len(plane.ready()) == 3)
    assert "Replaced" in plane.reasons()
    assert ejected_after < 10
    print(f"slow instance ejected after {ejected_after:.2f} s, {len(results)} requests, "
          "0 failed")


def test_rolling_update_without_failed_requests(plane: Plane) -> None:
    port = free_port()
    doc = app_doc(replicas=2, host_port=port, readinessProbe=READY,
                  strategy={"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    plane.apply(doc)
    assert wait_for(lambda: len(plane.ready()) == 2)
    assert wait_for(lambda: get("127.0.0.1", port)[0] == 200)
    old = {i["id"] for i in plane.ready()}
    doc["spec"]["env"] = [{"name": "VERSION", "value": "2"}]
    plane.apply(doc)
    results = []

    def done() -> bool:
        ready = plane.ready()
        return (len(ready) == 2 and {i["generation"] for i in ready} == {2}
                and not old & {c["id"] for c in plane.containers()})

    began = time.monotonic()
    while not done() and time.monotonic() - began < 30:
        results.append(get("127.0.0.1", port)[0])
    assert done(), plane.reconciler.snapshot()
    assert len(results) > 50 and set(results) == {200}, collections.Counter(results)
    assert plane.reasons().count("Replaced") == 2
    assert all(c["labels"]["flatstack.generation"] == "2" for c in plane.containers())


def test_tcp_startup_and_exec_liveness(plane: Plane) -> None:
    plane.apply(app_doc(replicas=1, startupProbe={
        "tcpSocket": {"port": 8080}, "periodSeconds": 0.1, "failureThreshold": 50},
        livenessProbe={"exec": {"command": ["test", "-f", "/tmp/www/alive"]},
                       "periodSeconds": 0.3, "failureThreshold": 2}))
    assert wait_for(lambda: len(plane.ready()) == 1)
    first = plane.ready()[0]
    assert first["probes"]["started"]
    assert wait_for(lambda: plane.ready() and plane.ready()[0]["probes"].get(
        "liveness", {}).get("ok"))
    from flatstack.engine.containers import ExecOptions

    plane.node.engine.exec(first["id"], ExecOptions(command=["rm", "/tmp/www/alive"]))
    assert wait_for(lambda: "LivenessFailed" in plane.reasons(), timeout=10)
    event = next(e for e in plane.store.events(app="web") if e.reason == "LivenessFailed")
    assert "exit code 1" in event.message and event.numbers["failures"] == 2
    assert wait_for(lambda: len(plane.ready()) == 1 and plane.ready()[0]["id"] != first["id"])


def test_startup_probe_failure_is_classified(plane: Plane) -> None:
    plane.apply(app_doc(replicas=1, command=["sleep", "60"], startupProbe={
        "tcpSocket": {"port": "http"}, "periodSeconds": 0.1, "timeoutSeconds": 0.2,
        "failureThreshold": 3}))
    assert wait_for(lambda: "StartupFailed" in plane.reasons(), timeout=10)
    event = next(e for e in plane.store.events(app="web") if e.reason == "StartupFailed")
    assert "startup probe failed 3 times" in event.message
    assert "connection refused" in event.message
    assert not plane.ready()
