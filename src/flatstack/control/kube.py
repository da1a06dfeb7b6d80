"""Kubernetes documents to Apps.

A file for ``flatstack apply -f`` holds YAML documents: flatstack ``App``, ``apps/v1
Deployment`` and ``autoscaling/v2 HorizontalPodAutoscaler`` (its ``scaleTargetRef``
naming a Deployment of the same file), written as for kubectl. Each Deployment becomes
one App: the first (only) container is the app, ``replicas`` is honoured, the HPA
becomes ``spec.autoscale``. Fields that only steer a multi-node scheduler are ignored;
fields that would change what runs and flatstack does not do are refused. Every error
names the document and the field path as the user wrote it, for example
``documents[1].spec.template.spec.containers[0].ports[0].containerPort``.

An SLA block, which Kubernetes has no field for, rides in the Deployment annotation
``flatstack.io/sla`` (YAML or JSON), so the same file still applies to a cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from flatstack.control.errors import FieldError, Loc, SpecError
from flatstack.control.models import API_VERSION, App
from flatstack.control.validate import validate_app

SLA_ANNOTATION = "flatstack.io/sla"
DEPLOYMENT = ("apps/v1", "Deployment")
HPA = ("autoscaling/v2", "HorizontalPodAutoscaler")
APP = (API_VERSION, "App")

# Written by the API server; present in `kubectl get -o yaml` output.
_SERVER_METADATA = {"uid", "resourceVersion", "creationTimestamp", "generation",
                    "managedFields", "selfLink", "namespace", "generateName"}
_TOP = {"apiVersion", "kind", "metadata", "spec", "status"}
_DEPLOYMENT_SPEC = {"replicas", "selector", "template", "strategy"}
_DEPLOYMENT_IGNORED = {"revisionHistoryLimit", "progressDeadlineSeconds"}
_DEPLOYMENT_UNSUPPORTED = {
    "minReadySeconds": "minReadySeconds (an instance serves once it is ready)",
    "paused": "paused rollouts",
}
# Pod fields that only place pods on nodes: meaningless on one node.
_POD_IGNORED = {"dnsPolicy", "schedulerName", "serviceAccountName", "serviceAccount",
                "automountServiceAccountToken", "enableServiceLinks", "priorityClassName",
                "priority", "nodeSelector", "nodeName", "affinity", "tolerations",
                "topologySpreadConstraints", "preemptionPolicy", "schedulingGates"}
_POD_MAPPED = {"containers", "restartPolicy", "terminationGracePeriodSeconds"}
_POD_UNSUPPORTED = {
    "initContainers": "init containers", "ephemeralContainers": "ephemeral containers",
    "volumes": "volumes", "hostNetwork": "hostNetwork", "hostPID": "hostPID",
    "hostIPC": "hostIPC", "hostUsers": "hostUsers", "securityContext": "a pod securityContext",
    "hostAliases": "hostAliases", "dnsConfig": "dnsConfig", "runtimeClassName":
    "runtimeClassName", "shareProcessNamespace": "shareProcessNamespace",
    "imagePullSecrets": "imagePullSecrets", "readinessGates": "readinessGates",
    "overhead": "overhead", "os": "os", "hostname": "hostname", "subdomain": "subdomain",
    "setHostnameAsFQDN": "setHostnameAsFQDN", "resourceClaims": "resourceClaims",
    "activeDeadlineSeconds": "activeDeadlineSeconds",
}
_CONTAINER_MAPPED = {"image", "command", "args", "workingDir", "env", "ports", "resources",
                     "startupProbe", "readinessProbe", "livenessProbe", "imagePullPolicy"}
_CONTAINER_IGNORED = {"name", "terminationMessagePath", "terminationMessagePolicy"}
_CONTAINER_UNSUPPORTED = {
    "volumeMounts": "volumeMounts", "volumeDevices": "volumeDevices", "envFrom": "envFrom",
    "lifecycle": "lifecycle hooks", "securityContext": "a container securityContext",
    "stdin": "stdin", "stdinOnce": "stdinOnce", "tty": "tty", "resizePolicy": "resizePolicy",
    "restartPolicy": "a container restartPolicy",
}
_HPA_SPEC = {"scaleTargetRef", "minReplicas", "maxReplicas", "metrics", "behavior"}
_RESOURCE_NAMES = {"cpu", "memory"}
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: about 10 times faster


def load_documents(text: str) -> list[Any]:
    """Parse multi-document YAML; empty documents are dropped. Raise SpecError on bad YAML."""
    docs: list[Any] = []
    try:
        for doc in yaml.load_all(text, Loader=_LOADER):
            if doc is not None:
                docs.append(doc)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([FieldError(("documents", len(docs)),
                                    f"invalid YAML: {where}{problem}")]) from None
    if not docs:
        raise SpecError([FieldError(("documents",), "no documents")])
    return docs


def load_apps(text: str) -> list[App]:
    """Parse a file for ``apply -f`` into Apps; raise SpecError listing every bad field."""
    return apps_from_documents(load_documents(text))


def apps_from_documents(docs: Iterable[Any]) -> list[App]:
    """Convert parsed documents (Apps, Deployments, HPAs) into Apps, all or nothing."""
    docs = list(docs)
    errors: list[FieldError] = []
    deployments: dict[str, int] = {}
    hpas: dict[str, int] = {}
    apps: dict[str, tuple[int, dict[str, Any]]] = {}
    for i, doc in enumerate(docs):
        loc: Loc = ("documents", i)
        if not isinstance(doc, Mapping):
            errors.append(FieldError(loc, "a document must be a mapping"))
            continue
        kind = (doc.get("apiVersion"), doc.get("kind"))
        if kind not in (APP, DEPLOYMENT, HPA):
            errors.append(FieldError(loc, _unknown_kind(doc)))
            continue
        meta = doc.get("metadata")
        name = meta.get("name") if isinstance(meta, Mapping) else None
        if kind == HPA:
            _remember(hpas, _hpa_target(doc), i, errors, ("spec", "scaleTargetRef", "name"),
                      "another HorizontalPodAutoscaler targets the same Deployment")
            continue
        if isinstance(name, str):
            if name in apps:
                errors.append(FieldError((*loc, "metadata", "name"),
                                         f"app {name!r} is defined twice in this file"))
                continue
            if kind == DEPLOYMENT:
                deployments[name] = i
        apps[name if isinstance(name, str) else f"#{i}"] = (i, dict(doc))

    for target, j in hpas.items():
        if target not in deployments:
            errors.append(FieldError(("documents", j, "spec", "scaleTargetRef", "name"),
                                     f"no Deployment named {target!r} in this file"))
    result: list[App] = []
    for i, doc in apps.values():
        if (doc.get("apiVersion"), doc.get("kind")) == APP:
            app, errs = validate_app(doc)
            errors.extend(FieldError(("documents", i, *e.loc), e.reason) for e in errs)
        else:
            meta = doc.get("metadata")
            name = meta.get("name") if isinstance(meta, Mapping) else None
            hpa_index = hpas.get(name) if isinstance(name, str) else None
            hpa = docs[hpa_index] if hpa_index is not None else None
            app, errs = _convert(doc, i, hpa, hpa_index)
            errors.extend(errs)
        if app is not None:
            result.append(app)
    if errors:
        errors.sort(key=lambda e: e.loc[1] if len(e.loc) > 1 and isinstance(e.loc[1], int)
                    else -1)
        raise SpecError(errors)
    return result


def _unknown_kind(doc: Mapping[str, Any]) -> str:
    api, kind = doc.get("apiVersion"), doc.get("kind")
    if api is None or kind is None:
        return "apiVersion and kind are required"
    known = ", ".join(f"{a} {k}" for a, k in (APP, DEPLOYMENT, HPA))
    return f"unsupported kind {api} {kind} (flatstack takes {known})"


def _remember(table: dict[str, int], key: object, index: int, errors: list[FieldError],
              field: Loc, reason: str) -> None:
    if not isinstance(key, str):
        errors.append(FieldError(("documents", index, *field), "required field is missing"))
    elif key in table:
        errors.append(FieldError(("documents", index, *field), reason))
    else:
        table[key] = index


def _hpa_target(doc: Mapping[str, Any]) -> object:
    spec = doc.get("spec")
    ref = spec.get("scaleTargetRef") if isinstance(spec, Mapping) else None
    return ref.get("name") if isinstance(ref, Mapping) else None


class _Fields:
    """Collects errors for one document while the App dictionary is built."""

    def __init__(self, base: Loc) -> None:
        self.base = base
        self.errors: list[FieldError] = []

    def error(self, loc: Loc, reason: str) -> None:
        self.errors.append(FieldError((*self.base, *loc), reason))

    def mapping(self, value: object, loc: Loc) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.error(loc, f"must be a mapping (got {value!r})")
            return {}
        return dict(value)

    def sort(self, obj: Mapping[str, Any], loc: Loc, mapped: set[str], ignored: set[str],
             unsupported: Mapping[str, str]) -> dict[str, Any]:
        """Keep mapped keys; drop ignored ones; refuse unsupported (when set) and unknown."""
        kept = {}
        for key, value in obj.items():
            if key in mapped:
                kept[key] = value
            elif key in ignored:
                continue
            elif key in unsupported:
                if value not in (None, False, 0, {}, []):
                    self.error((*loc, key), f"not supported by flatstack: {unsupported[key]}")
            else:
                self.error((*loc, key), "unknown field")
        return kept


def _convert(doc: Mapping[str, Any], i: int, hpa: Mapping[str, Any] | None,
             j: int | None) -> tuple[App | None, list[FieldError]]:
    f = _Fields(("documents", i))
    f.sort(doc, (), _TOP, set(), {})
    meta = f.mapping(doc.get("metadata"), ("metadata",))
    meta = f.sort(meta, ("metadata",), {"name", "labels", "annotations"}, _SERVER_METADATA, {})
    spec = f.mapping(doc.get("spec"), ("spec",))
    spec = f.sort(spec, ("spec",), _DEPLOYMENT_SPEC, _DEPLOYMENT_IGNORED,
                  _DEPLOYMENT_UNSUPPORTED)
    template = f.mapping(spec.get("template"), ("spec", "template"))
    if "template" not in spec:
        f.error(("spec", "template"), "required field is missing")
    tmeta = f.mapping(template.get("metadata"), ("spec", "template", "metadata"))
    pod_loc: Loc = ("spec", "template", "spec")
    pod = f.sort(f.mapping(template.get("spec"), pod_loc), pod_loc, _POD_MAPPED, _POD_IGNORED,
                 _POD_UNSUPPORTED)
    _check_selector(f, spec.get("selector"), tmeta.get("labels"))
    containers = pod.get("containers")
    cloc: Loc = (*pod_loc, "containers")
    container: dict[str, Any] = {}
    if not isinstance(containers, list) or not containers:
        f.error(cloc, "give one container")
    else:
        if len(containers) > 1:
            f.error((*cloc, 1), "not supported by flatstack: more than one container per "
                    "instance (sidecars)")
        container = f.sort(f.mapping(containers[0], (*cloc, 0)), (*cloc, 0), _CONTAINER_MAPPED,
                           _CONTAINER_IGNORED, _CONTAINER_UNSUPPORTED)
        _check_resource_names(f, container.get("resources"), (*cloc, 0, "resources"))

    app_spec: dict[str, Any] = dict(container)
    for key in ("restartPolicy", "terminationGracePeriodSeconds"):
        if key in pod:
            app_spec[key] = pod[key]
    for key in ("replicas", "strategy"):
        if key in spec:
            app_spec[key] = spec[key]
    annotations = f.mapping(meta.get("annotations"), ("metadata", "annotations"))
    if SLA_ANNOTATION in annotations:
        app_spec["sla"] = _sla_annotation(f, annotations[SLA_ANNOTATION])
    hpa_errors: list[FieldError] = []
    if hpa is not None and j is not None:
        app_spec["autoscale"], hpa_errors = _autoscale(hpa, j)
    app_meta = {k: meta[k] for k in ("name", "labels") if k in meta}
    if annotations:
        app_meta["annotations"] = {k: v for k, v in annotations.items() if k != SLA_ANNOTATION}
    app_doc = {"apiVersion": API_VERSION, "kind": "App", "metadata": app_meta,
               "spec": app_spec}
    if f.errors or hpa_errors:
        return None, f.errors + hpa_errors
    app, errors = validate_app(app_doc)
    return app, [FieldError(_kube_loc(e.loc, i, j), e.reason) for e in errors]


def _check_selector(f: _Fields, selector: object, labels: object) -> None:
    loc: Loc = ("spec", "selector")
    if selector is None:
        f.error(loc, "required field is missing")
        return
    sel = f.sort(f.mapping(selector, loc), loc, {"matchLabels"}, set(),
                 {"matchExpressions": "matchExpressions"})
    match = f.mapping(sel.get("matchLabels"), (*loc, "matchLabels"))
    have = labels if isinstance(labels, Mapping) else {}
    for key, value in match.items():
        if have.get(key) != value:
            f.error((*loc, "matchLabels", key),
                    f"selector {key}={value} does not match the template labels")


def _check_resource_names(f: _Fields, resources: object, loc: Loc) -> None:
    res = f.mapping(resources, loc)
    for part in ("requests", "limits"):
        for name in f.mapping(res.get(part), (*loc, part)):
            if name not in _RESOURCE_NAMES:
                f.error((*loc, part, name), "not supported by flatstack: only cpu and memory")
    if res.get("claims"):
        f.error((*loc, "claims"), "not supported by flatstack: resource claims")


def _sla_annotation(f: _Fields, text: object) -> object:
    loc: Loc = ("metadata", "annotations", SLA_ANNOTATION)
    if not isinstance(text, str):
        f.error(loc, "must be a string holding a YAML or JSON mapping")
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        f.error(loc, f"invalid YAML: {getattr(exc, 'problem', exc)}")
        return None


def _autoscale(hpa: Mapping[str, Any], j: int) -> tuple[dict[str, Any], list[FieldError]]:
    f = _Fields(("documents", j))
    f.sort(hpa, (), _TOP, set(), {})
    meta = f.mapping(hpa.get("metadata"), ("metadata",))
    f.sort(meta, ("metadata",), {"name", "labels", "annotations"}, _SERVER_METADATA, {})
    spec = f.sort(f.mapping(hpa.get("spec"), ("spec",)), ("spec",), _HPA_SPEC, set(), {})
    ref = f.mapping(spec.get("scaleTargetRef"), ("spec", "scaleTargetRef"))
    f.sort(ref, ("spec", "scaleTargetRef"), {"apiVersion", "kind", "name"}, set(), {})
    if ref.get("kind") != "Deployment":
        f.error(("spec", "scaleTargetRef", "kind"),
                f"flatstack scales Deployments, not {ref.get('kind')!r}")
    elif ref.get("apiVersion", "apps/v1") != "apps/v1":
        f.error(("spec", "scaleTargetRef", "apiVersion"), "must be apps/v1")
    metrics = spec.get("metrics")
    if isinstance(metrics, list):
        for k, metric in enumerate(metrics):
            kind = metric.get("type") if isinstance(metric, Mapping) else None
            if kind in ("Object", "External", "ContainerResource"):
                f.error(("spec", "metrics", k, "type"),
                        f"not supported by flatstack: {kind} metrics (use Resource cpu/memory "
                        "or Pods requests_per_second/latency_p99_ms)")
    auto = {k: spec[k] for k in ("minReplicas", "maxReplicas", "metrics", "behavior")
            if k in spec}
    return auto, f.errors


def _kube_loc(loc: Loc, i: int, j: int | None) -> Loc:
    """Map an App field path back to where the user wrote it in the Kubernetes documents."""
    if loc[:2] == ("spec", "autoscale") and j is not None:
        return ("documents", j, "spec", *loc[2:])
    if loc[:2] == ("spec", "sla"):
        return ("documents", i, "metadata", "annotations", SLA_ANNOTATION, *loc[2:])
    if len(loc) >= 2 and loc[0] == "spec":
        if loc[1] in _CONTAINER_MAPPED:
            return ("documents", i, "spec", "template", "spec", "containers", 0, *loc[1:])
        if loc[1] in _POD_MAPPED:
            return ("documents", i, "spec", "template", "spec", *loc[1:])
    return ("documents", i, *loc)
