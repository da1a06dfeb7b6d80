"""Kubernetes Deployment + HPA files (as kubectl users write them) converted to Apps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from flatstack.control.errors import SpecError
from flatstack.control.kube import load_apps, load_documents
from tests.control._support import text

PAIR = "web-deployment-hpa.yaml"


def _docs() -> list[dict[str, Any]]:
    return load_documents(text(PAIR))


def _dump(docs: list[Any]) -> str:
    return yaml.dump_all(docs, Dumper=yaml.CSafeDumper, sort_keys=False)


def _errors(source: str) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        load_apps(source)
    return {e.path: e.reason for e in info.value.errors}


def test_deployment_and_hpa_become_one_app() -> None:
    [app] = load_apps(text(PAIR))
    spec = app.spec
    assert app.name == "web" and app.metadata.labels == {"app": "web"}
    assert spec.image == "registry.example.com/web:1.4.2"
    assert spec.command == ["/usr/bin/python3", "-m", "web"]
    assert spec.args == ["--port", "8080"]
    assert [(e.name, e.value) for e in spec.env] == [("LOG_LEVEL", "info")]
    assert [(p.name, p.container_port, p.protocol) for p in spec.ports] == [
        ("http", 8080, "TCP")]
    assert spec.resources is not None and spec.resources.requests is not None
    assert spec.resources.requests.cpu_millis == 250
    assert spec.resources.limits is not None
    assert spec.resources.limits.memory_bytes == 512 * 2**20
    assert spec.replicas == 3 and spec.initial_replicas == 3  # replicas honoured
    assert spec.image_pull_policy == "IfNotPresent"
    assert spec.termination_grace_period_seconds == 10
    assert spec.strategy is not None and spec.strategy.rolling_update is not None
    assert spec.strategy.rolling_update.resolve(3) == (1, 0)
    # probes, field by field
    assert spec.startup_probe is not None and spec.startup_probe.failure_threshold == 30
    assert spec.readiness_probe is not None and spec.readiness_probe.success_threshold == 2
    assert spec.liveness_probe is not None and spec.liveness_probe.tcp_socket is not None
    assert spec.liveness_probe.tcp_socket.port == 8080
    assert spec.liveness_probe.initial_delay_seconds == 5
    # the HPA
    auto = spec.autoscale
    assert auto is not None and (auto.min_replicas, auto.max_replicas) == (2, 10)
    assert [m.name for m in auto.effective_metrics] == ["cpu", "requests_per_second"]
    assert auto.effective_metrics[1].target.average_value == 100.0
    assert auto.behavior is not None and auto.behavior.scale_down is not None
    assert auto.behavior.scale_down.stabilization_window_seconds == 60
    assert auto.behavior.scale_up is not None and auto.behavior.scale_up.policies is not None
    assert [p.type for p in auto.behavior.scale_up.policies] == ["Pods", "Percent"]
    # the SLA from the annotation, which leaves metadata
    assert spec.sla is not None
    assert (spec.sla.latency_p99_ms, spec.sla.error_rate, spec.sla.window) == (250, 0.01, 30)
    assert "flatstack.io/sla" not in app.metadata.annotations


def test_replicas_without_hpa_are_honoured() -> None:
    deployment = _docs()[0]
    deployment["spec"]["replicas"] = 5
    [app] = load_apps(_dump([deployment]))
    assert app.spec.autoscale is None and app.spec.initial_replicas == 5


def test_kubectl_get_output_is_accepted() -> None:
    """Server-written fields (uid, status, managedFields...) and scheduling hints pass."""
    deployment = _docs()[0]
    deployment["metadata"].update(uid="5b0c", resourceVersion="412", generation=3,
                                  creationTimestamp="2026-01-01T00:00:00Z")
    deployment["status"] = {"replicas": 3, "readyReplicas": 3}
    deployment["spec"]["progressDeadlineSeconds"] = 600
    pod = deployment["spec"]["template"]["spec"]
    pod.update(dnsPolicy="ClusterFirst", schedulerName="default-scheduler",
               nodeSelector={"disk": "ssd"}, tolerations=[{"operator": "Exists"}],
               securityContext={})
    pod["containers"][0].update(terminationMessagePath="/dev/termination-log",
                                terminationMessagePolicy="File")
    [app] = load_apps(_dump([deployment]))
    assert app.spec.replicas == 3


def test_mixed_file_with_app_and_empty_documents() -> None:
    source = text(PAIR) + "\n---\n---\n" + text("app.yaml")
    apps = load_apps(source)
    assert [a.name for a in apps] == ["web", "echo"]


def _mutated(mutate: Callable[[list[dict[str, Any]]], None]) -> str:
    docs = _docs()
    mutate(docs)
    return _dump(docs)


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return docs[0]["spec"]["template"]["spec"]["containers"][0]


C0 = "documents[0].spec.template.spec.containers[0]"
BAD: list[tuple[str, Callable[[list[dict[str, Any]]], None], str, str]] = [
    ("port out of range", lambda d: _container(d)["ports"][0].update(containerPort=0),
     f"{C0}.ports[0].containerPort", "greater than or equal to 1"),
    ("port as string", lambda d: _container(d)["ports"][0].update(containerPort="8080"),
     f"{C0}.ports[0].containerPort", "valid integer (got '8080')"),
    ("typo in a container field", lambda d: _container(d).update(imagePullPolice="Always"),
     f"{C0}.imagePullPolice", "unknown field"),
    ("volume mounts", lambda d: _container(d).update(volumeMounts=[{"name": "x"}]),
     f"{C0}.volumeMounts", "not supported by flatstack: volumeMounts"),
    ("sidecar", lambda d: d[0]["spec"]["template"]["spec"]["containers"].append(
        {"name": "log", "image": "busybox"}),
     "documents[0].spec.template.spec.containers[1]", "more than one container"),
    ("volumes", lambda d: d[0]["spec"]["template"]["spec"].update(volumes=[{"name": "x"}]),
     "documents[0].spec.template.spec.volumes", "not supported by flatstack: volumes"),
    ("gpu", lambda d: _container(d)["resources"]["limits"].update({"nvidia.com/gpu": 1}),
     f"{C0}.resources.limits.nvidia.com/gpu", "only cpu and memory"),
    ("request above limit", lambda d: _container(d)["resources"]["requests"].update(cpu=2),
     f"{C0}.resources.requests.cpu", "request 2 is more than the limit 1"),
    ("probe port name", lambda d: _container(d)["readinessProbe"]["httpGet"].update(
        port="admin"), f"{C0}.readinessProbe.httpGet.port", "no port is named 'admin'"),
    ("probe without handler", lambda d: _container(d)["livenessProbe"].pop("tcpSocket"),
     f"{C0}.livenessProbe", "needs one of httpGet, tcpSocket or exec"),
    ("selector mismatch", lambda d: d[0]["spec"]["selector"]["matchLabels"].update(app="api"),
     "documents[0].spec.selector.matchLabels.app", "does not match the template labels"),
    ("min reready", lambda d: d[0]["spec"].update(minReadySeconds=10),
     "documents[0].spec.minReadySeconds", "not supported by flatstack"),
    ("strategy", lambda d: d[0]["spec"]["strategy"].update(type="BlueGreen"),
     "documents[0].spec.strategy.type", "'RollingUpdate' or 'Recreate'"),
    ("replicas", lambda d: d[0]["spec"].update(replicas=-2),
     "documents[0].spec.replicas", "greater than or equal to 0"),
    ("restart policy", lambda d: d[0]["spec"]["template"]["spec"].update(
        restartPolicy="Sometimes"), "documents[0].spec.template.spec.restartPolicy", "'Never'"),
    ("hpa min > max", lambda d: d[1]["spec"].update(minReplicas=12),
     "documents[1].spec.minReplicas", "12 is more than maxReplicas (10)"),
    ("hpa external metric", lambda d: d[1]["spec"]["metrics"].append(
        {"type": "External", "external": {}}),
     "documents[1].spec.metrics[2].type", "not supported by flatstack: External metrics"),
    ("hpa policy period", lambda d: d[1]["spec"]["behavior"]["scaleUp"]["policies"][0].update(
        periodSeconds=3600), "documents[1].spec.behavior.scaleUp.policies[0].periodSeconds",
     "less than or equal to 1800"),
    ("hpa target", lambda d: d[1]["spec"]["scaleTargetRef"].update(name="api"),
     "documents[1].spec.scaleTargetRef.name", "no Deployment named 'api' in this file"),
    ("hpa target kind", lambda d: d[1]["spec"]["scaleTargetRef"].update(kind="StatefulSet"),
     "documents[1].spec.scaleTargetRef.kind", "scales Deployments, not 'StatefulSet'"),
    ("sla annotation", lambda d: d[0]["metadata"]["annotations"].update(
        {"flatstack.io/sla": "latencyP99Ms: fast"}),
     "documents[0].metadata.annotations.flatstack.io/sla.latencyP99Ms", "valid number"),
    ("unknown kind", lambda d: d.append({"apiVersion": "v1", "kind": "Service",
                                         "metadata": {"name": "web"}}),
     "documents[2]", "unsupported kind v1 Service"),
    ("old hpa api", lambda d: d[1].update(apiVersion="autoscaling/v1"),
     "documents[1]", "unsupported kind autoscaling/v1 HorizontalPodAutoscaler"),
    ("duplicate", lambda d: d.append(d[0]),
     "documents[2].metadata.name", "app 'web' is defined twice"),
]


@pytest.mark.parametrize(("what", "mutate", "path", "reason"), BAD, ids=[b[0] for b in BAD])
def test_bad_document_field_is_named(what: str, mutate: Callable[[list[dict[str, Any]]], None],
                                     path: str, reason: str) -> None:
    errors = _errors(_mutated(mutate))
    assert path in errors, errors
    assert reason in errors[path]


def test_path_names_the_document_index() -> None:
    """With the HPA first, the Deployment is documents[1] and errors say so."""
    docs = _docs()
    _container(docs)["ports"][0]["containerPort"] = 70000
    source = _dump([docs[1], docs[0]])
    with pytest.raises(SpecError) as info:
        load_apps(source)
    assert str(info.value) == ("documents[1].spec.template.spec.containers[0].ports[0]"
                               ".containerPort: input should be less than or equal to 65535")


def test_invalid_yaml_names_the_line() -> None:
    source = text(PAIR) + "\n---\nkind: App\n  bad: [indent\n"
    errors = _errors(source)
    [(path, reason)] = errors.items()
    assert path == "documents[2]" and reason.startswith("invalid YAML: line ")


def test_empty_file() -> None:
    assert _errors("# nothing\n") == {"documents": "no documents"}


def test_mangled_documents_give_spec_errors_never_crashes() -> None:
    """Replace random fields with values of the wrong type or range: every outcome is an
    App or a SpecError whose every entry names a field and a reason."""
    import copy
    import random

    base = load_documents(text(PAIR) + "---\n" + text("app.yaml"))

    def paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        out = [path]
        items = node.items() if isinstance(node, dict) else (
            enumerate(node) if isinstance(node, list) else ())
        for key, child in items:
            out += paths(child, (*path, key))
        return out

    every = [p for p in paths(base) if len(p) > 1]
    junk: list[Any] = [None, 0, -1, 1.5, "x", "", [], {}, [1], {"a": 1}, True, "100%",
                       "1e999", 10**30, float("nan")]
    rng = random.Random(5)
    refused = 0
    for _ in range(400):
        docs = copy.deepcopy(base)
        for _ in range(rng.randint(1, 3)):
            path = rng.choice(every)
            node: Any = docs
            try:
                for key in path[:-1]:
                    node = node[key]
                node[path[-1]] = rng.choice(junk)
            except (KeyError, IndexError, TypeError):
                continue  # an earlier change removed the parent
        try:
            load_apps(_dump(docs))
        except SpecError as exc:
            refused += 1
            assert all(e.path.startswith("documents") and e.reason for e in exc.errors)
    assert refused > 300
