"""Validation of Apps: pydantic's field checks, then the rules that span fields.

:func:`parse_app` is the way in for every App, wherever it comes from (a file, the
API, the store): it raises :class:`~flatstack.control.errors.SpecError` listing each
bad field with its path, e.g. ``spec.autoscale.minReplicas: 5 is more than maxReplicas
(2)``.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError
from pydantic.alias_generators import to_camel

from flatstack.control.errors import FieldError, Loc, SpecError
from flatstack.control.models import App, AppSpec, HPAScalingRules, Probe


def check_app(app: App) -> list[FieldError]:
    """Rules spanning several fields; each error carries the path of the field to fix."""
    spec = app.spec
    errors: list[FieldError] = []

    def err(loc: Loc, reason: str) -> None:
        errors.append(FieldError(("spec", *loc), reason))

    names: set[str] = set()
    seen: set[tuple[int, str]] = set()
    host_ports: set[tuple[int, str]] = set()
    for i, port in enumerate(spec.ports):
        if port.name is not None:
            if port.name in names:
                err(("ports", i, "name"), f"duplicate port name {port.name!r}")
            names.add(port.name)
        if (port.container_port, port.protocol) in seen:
            err(("ports", i, "containerPort"),
                f"duplicate port {port.container_port}/{port.protocol}")
        seen.add((port.container_port, port.protocol))
        if port.host_port is not None:
            if (port.host_port, port.protocol) in host_ports:
                err(("ports", i, "hostPort"), f"duplicate host port {port.host_port}/"
                    f"{port.protocol}")
            host_ports.add((port.host_port, port.protocol))

    if spec.resources and spec.resources.requests and spec.resources.limits:
        req, lim = spec.resources.requests, spec.resources.limits
        if req.cpu_millis and lim.cpu_millis and req.cpu_millis > lim.cpu_millis:
            err(("resources", "requests", "cpu"),
                f"request {req.cpu} is more than the limit {lim.cpu}")
        if req.memory_bytes and lim.memory_bytes and req.memory_bytes > lim.memory_bytes:
            err(("resources", "requests", "memory"),
                f"request {req.memory} is more than the limit {lim.memory}")

    for field in ("startup_probe", "readiness_probe", "liveness_probe"):
        probe: Probe | None = getattr(spec, field)
        if probe is not None:
            errors.extend(_check_probe(probe, ("spec", to_camel(field)), names))

    if spec.autoscale is not None:
        errors.extend(_check_autoscale(spec))

    if spec.sla is not None:
        if spec.sla.latency_p99_ms is None and spec.sla.error_rate is None:
            err(("sla",), "give latencyP99Ms, errorRate or both")
        if spec.sla.synthetic is not None:
            port = spec.sla.synthetic.http_get.port
            if isinstance(port, str) and port not in names:
                err(("sla", "synthetic", "httpGet", "port"), f"no port is named {port!r}")

    strategy = spec.strategy
    if strategy is not None and strategy.rolling_update is not None:
        if strategy.type == "Recreate":
            err(("strategy", "rollingUpdate"), "may not be set when type is Recreate")
        elif strategy.rolling_update.max_surge in (0, "0%") and \
                strategy.rolling_update.max_unavailable in (0, "0%"):
            err(("strategy", "rollingUpdate", "maxUnavailable"),
                "may not be 0 when maxSurge is 0")
    return errors


def _check_probe(probe: Probe, loc: Loc, port_names: set[str]) -> list[FieldError]:
    errors: list[FieldError] = []
    handlers = [n for n in ("httpGet", "tcpSocket", "exec")
                if getattr(probe, {"httpGet": "http_get", "tcpSocket": "tcp_socket"}.get(n, n))]
    if len(handlers) != 1:
        reason = ("needs one of httpGet, tcpSocket or exec" if not handlers
                  else f"has {' and '.join(handlers)}; give exactly one")
        errors.append(FieldError(loc, reason))
    for key, action in (("httpGet", probe.http_get), ("tcpSocket", probe.tcp_socket)):
        if action is not None and isinstance(action.port, str) and action.port not in port_names:
            errors.append(FieldError((*loc, key, "port"), f"no port is named {action.port!r}"))
    if loc[-1] in ("livenessProbe", "startupProbe") and probe.success_threshold != 1:
        errors.append(FieldError((*loc, "successThreshold"), "must be 1 for this probe"))
    return errors


def _check_autoscale(spec: AppSpec) -> list[FieldError]:
    auto = spec.autoscale
    assert auto is not None
    loc: Loc = ("spec", "autoscale")
    errors: list[FieldError] = []
    if auto.min_replicas > auto.max_replicas:
        errors.append(FieldError((*loc, "minReplicas"),
                                 f"{auto.min_replicas} is more than maxReplicas "
                                 f"({auto.max_replicas})"))
    requests = spec.resources.effective_requests if spec.resources else None
    if not auto.metrics and (requests is None or requests.cpu is None):
        errors.append(FieldError((*loc, "metrics"),
                                 "required unless there is a cpu request: the default metric "
                                 "is 80% cpu utilisation"))
    for i, metric in enumerate(auto.metrics or ()):
        mloc: Loc = (*loc, "metrics", i)
        source = {"Resource": metric.resource, "Pods": metric.pods}[metric.type]
        other = metric.pods if metric.type == "Resource" else metric.resource
        if source is None:
            errors.append(FieldError((*mloc, metric.type.lower()),
                                     f"required when type is {metric.type}"))
            continue
        if other is not None:
            key = "pods" if metric.type == "Resource" else "resource"
            errors.append(FieldError((*mloc, key), f"may not be set when type is {metric.type}"))
        tloc: Loc = (*mloc, metric.type.lower(), "target")
        target = source.target
        if target.type == "Utilization":
            if metric.type == "Pods":
                errors.append(FieldError((*tloc, "type"), "Pods metrics take AverageValue"))
            elif target.average_utilization is None:
                errors.append(FieldError((*tloc, "averageUtilization"),
                                         "required when type is Utilization"))
            elif requests is None or getattr(requests, metric.name) is None:
                errors.append(FieldError(
                    (*tloc, "averageUtilization"),
                    f"{metric.name} utilisation needs a {metric.name} request "
                    f"(resources.requests.{metric.name}, or a limit)"))
            if target.average_value is not None:
                errors.append(FieldError((*tloc, "averageValue"),
                                         "may not be set when type is Utilization"))
        else:
            if target.average_value is None:
                errors.append(FieldError((*tloc, "averageValue"),
                                         "required when type is AverageValue"))
            if target.average_utilization is not None:
                errors.append(FieldError((*tloc, "averageUtilization"),
                                         "may not be set when type is AverageValue"))
    if auto.behavior is not None:
        for key in ("scale_up", "scale_down"):
            rules: HPAScalingRules | None = getattr(auto.behavior, key)
            if rules is not None and rules.policies is not None and not rules.policies \
                    and rules.select_policy != "Disabled":
                errors.append(FieldError((*loc, "behavior", to_camel(key), "policies"),
                                         "give at least one policy"))
    return errors


# ---------------------------------------------------------------------------- parsing


def pydantic_errors(exc: ValidationError) -> list[FieldError]:
    """Turn pydantic's errors into :class:`FieldError` with clean paths and reasons."""
    out = []
    for item in exc.errors(include_url=False):
        loc = tuple(p for p in item["loc"] if isinstance(p, int) or "[" not in p)
        kind, msg = item["type"], item["msg"]
        if kind == "extra_forbidden":
            msg = "unknown field"
        elif kind == "missing":
            msg = "required field is missing"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        elif kind in ("int_type", "float_type", "string_type", "bool_type", "list_type",
                      "dict_type", "model_type", "literal_error"):
            msg = f"{msg[0].lower()}{msg[1:]} (got {item['input']!r})"
        else:
            msg = msg[0].lower() + msg[1:]
        out.append(FieldError(loc, msg))
    return out


def validate_app(data: object) -> tuple[App | None, list[FieldError]]:
    """Validate a mapping as an App; return the App or the list of errors (never both)."""
    if not isinstance(data, Mapping):
        return None, [FieldError((), "an App must be a mapping")]
    try:
        app = App.model_validate(dict(data))
    except ValidationError as exc:
        return None, pydantic_errors(exc)
    errors = check_app(app)
    return (None, errors) if errors else (app, [])


def parse_app(data: object) -> App:
    """Validate a mapping as an App or raise :class:`SpecError` naming each bad field."""
    app, errors = validate_app(data)
    if errors:
        raise SpecError(errors)
    assert app is not None
    return app


def check_capacity(app: App, cpus: int, memory_bytes: int) -> list[FieldError]:
    """Resources no instance, or not the minimum number of instances, could get on a node
    with ``cpus`` CPUs and ``memory_bytes`` of memory (the API calls this on apply)."""
    errors: list[FieldError] = []
    res = app.spec.resources
    if res is None:
        return errors
    need = app.spec.autoscale.min_replicas if app.spec.autoscale else app.spec.initial_replicas
    have = {"cpu": cpus * 1000, "memory": memory_bytes}
    shown = {"cpu": f"{cpus} CPUs", "memory": f"{memory_bytes / 2**20:.0f}Mi of memory"}
    for part, values in (("limits", res.limits), ("requests", res.requests)):
        if values is None:
            continue
        for name, amount in (("cpu", values.cpu_millis), ("memory", values.memory_bytes)):
            if amount is None:
                continue
            loc: Loc = ("spec", "resources", part, name)
            if amount > have[name]:
                errors.append(FieldError(loc, f"{getattr(values, name)} is more than this "
                                              f"node has ({shown[name]})"))
            elif part == "requests" and amount * need > have[name]:
                errors.append(FieldError(loc, f"{need} instances x {getattr(values, name)} do "
                                              f"not fit on this node ({shown[name]})"))
    return errors
