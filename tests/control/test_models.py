"""The App model: quantities, durations, defaults and precise errors for bad specs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from flatstack.control import quantity
from flatstack.control.errors import SpecError
from flatstack.control.models import App, RollingUpdate
from flatstack.control.validate import check_capacity, parse_app
from tests.control._support import app_doc, minimal


@pytest.mark.parametrize(("value", "millis"), [
    ("500m", 500), ("1.5", 1500), (2, 2000), (0.25, 250), ("100u", 1), ("1e3", 1_000_000),
    (".5", 500), ("2k", 2_000_000),
])
def test_cpu_quantities(value: object, millis: int) -> None:
    assert quantity.cpu_millis(value) == millis


@pytest.mark.parametrize(("value", "nbytes"), [
    ("256Mi", 256 * 2**20), ("1G", 10**9), ("1.5Gi", 3 * 2**29), ("128974848", 128974848),
    ("129e6", 129_000_000), (64 * 2**20, 64 * 2**20), ("1Ki", 1024),
])
def test_memory_quantities(value: object, nbytes: int) -> None:
    assert quantity.memory_bytes(value) == nbytes


@pytest.mark.parametrize("value", ["abc", "1.5.5", "5 Mi", "", "1Mb", "Mi", True, None, [1]])
def test_bad_quantities(value: object) -> None:
    with pytest.raises(ValueError, match="quantity"):
        quantity.parse_quantity(value)


@pytest.mark.parametrize(("value", "seconds"), [
    ("30s", 30), ("1m30s", 90), ("500ms", 0.5), ("2h", 7200), (45, 45), (2.5, 2.5),
])
def test_durations(value: object, seconds: float) -> None:
    assert quantity.parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["10x", "-5s", "0s", "s", "1m 30s", 0, False])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        quantity.parse_duration(value)


def test_example_app_file_parses_with_kubernetes_names() -> None:
    app = parse_app(app_doc())
    spec = app.spec
    assert app.name == "echo" and app.metadata.labels == {"tier": "front"}
    assert spec.ports[0].host_port == 18080
    assert spec.resources is not None and spec.resources.requests is not None
    assert spec.resources.requests.cpu == "250m"
    assert spec.resources.requests.memory_bytes == 64 * 2**20
    assert spec.resources.limits is not None and spec.resources.limits.memory == "512Mi"
    assert spec.autoscale is not None and spec.autoscale.max_replicas == 8
    assert [m.name for m in spec.autoscale.effective_metrics] == ["cpu", "latency_p99_ms"]
    assert spec.startup_probe is not None and spec.startup_probe.period_seconds == 0.5
    assert spec.liveness_probe is not None and spec.liveness_probe.http_get is not None
    assert spec.liveness_probe.http_get.port == "http"
    assert spec.sla is not None and spec.sla.window == 20
    assert spec.sla.replacement_budget.period == 60
    assert spec.initial_replicas == 2  # no replicas given: minReplicas
    assert spec.rolling_update is not None and spec.rolling_update.resolve(4) == (1, 0)
    wire = app.to_dict()
    assert wire["spec"]["livenessProbe"]["failureThreshold"] == 2
    assert "latencyP99Ms" in wire["spec"]["sla"]
    assert parse_app(wire) == app  # the stored form reads back to the same App


def test_equal_quantities_give_equal_specs() -> None:
    a = parse_app(minimal(resources={"requests": {"cpu": 0.5, "memory": "1Gi"}}))
    b = parse_app(minimal(resources={"requests": {"cpu": "500m", "memory": "1024Mi"}}))
    assert a.to_dict() == b.to_dict()


def test_defaults() -> None:
    app = parse_app(minimal(livenessProbe={"exec": {"command": ["true"]}}))
    probe = app.spec.liveness_probe
    assert probe is not None
    assert (probe.period_seconds, probe.timeout_seconds, probe.failure_threshold,
            probe.success_threshold, probe.initial_delay_seconds) == (10, 1, 3, 1, 0)
    assert app.spec.restart_policy == "Always"
    assert app.spec.initial_replicas == 1
    assert app.spec.rolling_update == RollingUpdate()
    auto = parse_app(minimal(replicas=20, autoscale={"maxReplicas": 5},
                             resources={"limits": {"cpu": 1}})).spec
    assert auto.initial_replicas == 5  # replicas clamped into the autoscale range
    assert auto.autoscale is not None
    assert auto.autoscale.effective_metrics[0].target.average_utilization == 80


@pytest.mark.parametrize(("replicas", "surge", "unavailable", "expect"), [
    (10, "25%", "25%", (3, 2)), (3, "25%", "25%", (1, 0)), (4, 1, 0, (1, 0)),
    (4, "0%", "10%", (0, 1)),
])
def test_rolling_update_bounds(replicas: int, surge: object, unavailable: object,
                               expect: tuple[int, int]) -> None:
    ru = RollingUpdate.model_validate({"maxSurge": surge, "maxUnavailable": unavailable})
    assert ru.resolve(replicas) == expect


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        node: Any = doc
        keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split(".")]
        for key in keys[:-1]:
            node = node[key]
        if value is _DELETE:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return mutate


_DELETE = object()

BAD: list[tuple[str, Any, str, str]] = [
    ("spec.replicas", "3", "spec.replicas", "valid integer (got '3')"),
    ("spec.replicas", -1, "spec.replicas", "greater than or equal to 0"),
    ("spec.ports.0.containerPort", 70000, "spec.ports[0].containerPort", "65535"),
    ("spec.ports.0.hostport", 80, "spec.ports[0].hostport", "unknown field"),
    ("spec.ports.0.name", "HTTP", "spec.ports[0].name", "not a valid port name"),
    ("spec.image", "", "spec.image", "at least 1 character"),
    ("spec.image", _DELETE, "spec.image", "required field is missing"),
    ("metadata.name", "Echo_1", "metadata.name", "not a valid name"),
    ("kind", "Deployment", "kind", "'App'"),
    ("spec.resources.requests.cpu", "lots", "spec.resources.requests.cpu", "not a quantity"),
    ("spec.resources.requests.cpu", 0, "spec.resources.requests.cpu", "must be positive"),
    ("spec.resources.limits.memory", "5Mi", "spec.resources.limits.memory", "minimum of 6Mi"),
    ("spec.resources.limits.cpu", "5m", "spec.resources.limits.cpu", "minimum of 10m"),
    ("spec.resources.requests.memory", "1Gi", "spec.resources.requests.memory",
     "more than the limit 512Mi"),
    ("spec.resources.requests.gpu", 1, "spec.resources.requests.gpu", "unknown field"),
    ("spec.autoscale.minReplicas", 9, "spec.autoscale.minReplicas",
     "9 is more than maxReplicas (8)"),
    ("spec.autoscale.maxReplicas", 0, "spec.autoscale.maxReplicas", "greater than or equal"),
    ("spec.autoscale.metrics.0.resource.target.type", "AverageValue",
     "spec.autoscale.metrics[0].resource.target.averageValue", "required when type is"),
    ("spec.autoscale.metrics.1.pods.metric.name", "queue_depth",
     "spec.autoscale.metrics[1].pods.metric.name", "'requests_per_second'"),
    ("spec.autoscale.behavior.scaleDown.stabilizationWindowSeconds", 7200,
     "spec.autoscale.behavior.scaleDown.stabilizationWindowSeconds", "3600"),
    ("spec.autoscale.behavior.scaleDown.selectPolicy", "Fastest",
     "spec.autoscale.behavior.scaleDown.selectPolicy", "'Disabled'"),
    ("spec.livenessProbe.httpGet.port", "web", "spec.livenessProbe.httpGet.port",
     "no port is named 'web'"),
    ("spec.livenessProbe.httpGet.port", 0, "spec.livenessProbe.httpGet.port", "out of range"),
    ("spec.livenessProbe.exec", {"command": ["true"]}, "spec.livenessProbe",
     "has httpGet and exec; give exactly one"),
    ("spec.livenessProbe.successThreshold", 2, "spec.livenessProbe.successThreshold",
     "must be 1"),
    ("spec.livenessProbe.periodSeconds", 0, "spec.livenessProbe.periodSeconds",
     "more than 0"),
    ("spec.readinessProbe.grpc", {"port": 9090}, "spec.readinessProbe.grpc",
     "not supported: grpc"),
    ("spec.readinessProbe.httpGet.path", "ready", "spec.readinessProbe.httpGet.path",
     "must start with '/'"),
    ("spec.sla.errorRate", 1.5, "spec.sla.errorRate", "less than or equal to 1"),
    ("spec.sla.window", "soon", "spec.sla.window", "not a duration"),
    ("spec.sla", {"window": "10s"}, "spec.sla", "give latencyP99Ms, errorRate or both"),
    ("spec.restartPolicy", "Sometimes", "spec.restartPolicy", "'Always'"),
    ("spec.strategy.rollingUpdate.maxSurge", "150%", "spec.strategy.rollingUpdate.maxSurge",
     "percentage"),
    ("spec.strategy.type", "Recreate", "spec.strategy.rollingUpdate",
     "may not be set when type is Recreate"),
    ("spec.ports", [{"containerPort": 80, "hostPort": 8080},
                    {"containerPort": 81, "hostPort": 8080}],
     "spec.ports[1].hostPort", "duplicate host port 8080/TCP"),
    ("spec.env.0.value", 8080, "spec.env[0].value", "valid string (got 8080)"),
    ("spec.env.0.valueFrom", {"secretKeyRef": {}}, "spec.env[0].valueFrom", "not supported"),
]


@pytest.mark.parametrize(("field", "value", "path", "reason"), BAD,
                         ids=[f"{b[0]}={b[1]!r}"[:60] for b in BAD])
def test_bad_field_is_named(field: str, value: Any, path: str, reason: str) -> None:
    doc = app_doc()
    _set(field, value)(doc)
    with pytest.raises(SpecError) as info:
        parse_app(doc)
    paths = {e.path: e.reason for e in info.value.errors}
    assert path in paths, str(info.value)
    assert reason in paths[path]
    assert str(info.value).startswith(f"{info.value.errors[0].path}: ")


def test_both_rolling_bounds_zero_is_refused() -> None:
    doc = minimal(strategy={"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}})
    with pytest.raises(SpecError, match=r"spec.strategy.rollingUpdate.maxUnavailable: "
                                        "may not be 0 when maxSurge is 0"):
        parse_app(doc)


def test_cpu_utilisation_needs_a_request() -> None:
    doc = minimal(autoscale={"maxReplicas": 3})  # default metric: 80% cpu
    with pytest.raises(SpecError) as info:
        parse_app(doc)
    assert info.value.errors[0].path == "spec.autoscale.metrics"
    assert "default metric is 80% cpu utilisation" in info.value.errors[0].reason
    # An explicit metric names its own target field.
    doc["spec"]["autoscale"]["metrics"] = [
        {"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": 50}}}]
    with pytest.raises(SpecError, match=r"metrics\[0\].resource.target.averageUtilization: "
                                        "cpu utilisation needs a cpu request"):
        parse_app(doc)


def test_every_error_is_reported_at_once() -> None:
    doc = app_doc()
    doc["spec"]["replicas"] = "two"
    doc["spec"]["ports"][0]["containerPort"] = 0
    doc["spec"]["colour"] = "blue"
    with pytest.raises(SpecError) as info:
        parse_app(doc)
    assert {e.path for e in info.value.errors} == {
        "spec.replicas", "spec.ports[0].containerPort", "spec.colour"}


def test_app_is_immutable() -> None:
    app = parse_app(minimal())
    with pytest.raises(Exception, match="frozen"):
        app.spec.image = "other"  # type: ignore[misc]
    assert isinstance(app, App)


def test_impossible_resources_for_the_node() -> None:
    app = parse_app(app_doc())  # requests 250m/64Mi, limits 1/512Mi, minReplicas 2
    assert check_capacity(app, cpus=2, memory_bytes=2 * 2**30) == []
    errors = {e.path: e.reason for e in check_capacity(app, cpus=2, memory_bytes=100 * 2**20)}
    assert errors == {
        "spec.resources.limits.memory": "512Mi is more than this node has (100Mi of memory)",
        "spec.resources.requests.memory": "2 instances x 64Mi do not fit on this node "
                                          "(100Mi of memory)"}
    big = parse_app(minimal(replicas=3, resources={"requests": {"cpu": "1"}}))
    assert [str(e) for e in check_capacity(big, cpus=2, memory_bytes=2**30)] == [
        "spec.resources.requests.cpu: 3 instances x 1 do not fit on this node (2 CPUs)"]
