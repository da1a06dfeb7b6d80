"""The flatstack ``App`` (``apiVersion: flatstack.io/v1``, ``kind: App``).

Field names follow Kubernetes (container, probe, HPA v2 and Deployment strategy
spelling) so that a Deployment plus HorizontalPodAutoscaler converts field by field
(:mod:`flatstack.control.kube`). The models check shape and types (strict: ``"3"`` is
not an integer, unknown fields are refused); rules spanning fields live in
:mod:`flatstack.control.validate`, whose ``parse_app`` is the way in.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
)
from pydantic.alias_generators import to_camel

from flatstack.control import quantity

API_VERSION = "flatstack.io/v1"
MIN_MEMORY = 6 * 2**20  # the engine's minimum (podman's and docker's)
MIN_CPU_MILLIS = 10  # the engine's smallest CPU quota: 0.01 cores
MAX_REPLICAS = 10_000
METRIC_NAMES = ("requests_per_second", "latency_p99_ms")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_PERCENT = re.compile(r"^(\d+)%$")


def _cpu(value: object) -> str:
    millis = quantity.cpu_millis(value)
    if millis < MIN_CPU_MILLIS:
        raise ValueError(f"cpu {value!r} is below the minimum of 10m")
    return quantity.format_cpu(millis)


def _memory(value: object) -> str:
    nbytes = quantity.memory_bytes(value)
    if nbytes < MIN_MEMORY:
        raise ValueError(f"memory {value!r} is below the minimum of 6Mi")
    return quantity.format_memory(nbytes)


def _average_value(value: object) -> float:
    amount = quantity.parse_quantity(value)
    if amount <= 0:
        raise ValueError(f"{value!r} must be positive")
    return float(amount)


def _duration(value: object) -> float | int:
    return _whole(quantity.parse_duration(value))


def _whole(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def _seconds(minimum: float, inclusive: bool) -> Any:
    def check(value: object) -> float | int:
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise ValueError(f"{value!r} is not a number of seconds")
        if value < minimum or (value == minimum and not inclusive):
            raise ValueError(f"{value} must be {'at least' if inclusive else 'more than'} "
                             f"{minimum}")
        return _whole(value)

    return AfterValidator(check)


def _port(value: object) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= 65535:
            raise ValueError(f"port {value} is out of range 1-65535")
        return value
    if isinstance(value, str) and len(value) <= 15 and _PORT_NAME.match(value):
        return value
    raise ValueError(f"{value!r} is neither a port number nor a port name")


def _int_or_percent(value: object) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and _PERCENT.match(value) and int(value[:-1]) <= 100:
        return value
    raise ValueError(f"{value!r} is neither a non-negative integer nor a percentage like 25%")


def _dns_label(value: str) -> str:
    if len(value) > 63 or not _DNS_LABEL.match(value):
        raise ValueError(
            f"{value!r} is not a valid name (lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters)"
        )
    return value


def _not_supported(what: str) -> Any:
    def check(value: object) -> object:
        if value is not None:
            raise ValueError(f"not supported: {what}")
        return value

    return AfterValidator(check)


Cpu = Annotated[str, BeforeValidator(_cpu)]
Memory = Annotated[str, BeforeValidator(_memory)]
AverageValue = Annotated[float, BeforeValidator(_average_value)]
Duration = Annotated[Any, AfterValidator(_duration)]
NonNegativeSeconds = Annotated[Any, _seconds(0, inclusive=True)]
PositiveSeconds = Annotated[Any, _seconds(0, inclusive=False)]
Port = Annotated[Any, AfterValidator(_port)]
IntOrPercent = Annotated[Any, AfterValidator(_int_or_percent)]
Name = Annotated[str, AfterValidator(_dns_label)]


class Model(BaseModel):
    """Strict, closed, immutable; camelCase on the wire."""

    model_config = ConfigDict(
        strict=True, extra="forbid", frozen=True, alias_generator=to_camel, validate_by_name=False
    )


class Metadata(Model):
    name: Name
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class EnvVar(Model):
    name: str
    value: str = ""
    value_from: Annotated[Any, _not_supported("valueFrom; give the value inline")] = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _ENV_NAME.match(value):
            raise ValueError(f"{value!r} is not a valid environment variable name")
        return value


class ContainerPort(Model):
    container_port: Annotated[int, Field(ge=1, le=65535)]
    name: str | None = None
    protocol: Literal["TCP", "UDP"] = "TCP"
    host_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    host_ip: Annotated[Any, _not_supported("hostIP; the endpoint listens on all addresses")] = (
        None
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 15 or not _PORT_NAME.match(value)):
            raise ValueError(
                f"{value!r} is not a valid port name (at most 15 lowercase letters, digits "
                "and '-', with at least one letter)"
            )
        return value


class ResourceList(Model):
    cpu: Cpu | None = None
    memory: Memory | None = None

    @property
    def cpu_millis(self) -> int | None:
        return None if self.cpu is None else quantity.cpu_millis(self.cpu)

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory is None else quantity.memory_bytes(self.memory)


class ResourceRequirements(Model):
    requests: ResourceList | None = None
    limits: ResourceList | None = None

    @property
    def effective_requests(self) -> ResourceList:
        """Requests, each missing one taken from the limit (as Kubernetes defaults them)."""
        req, lim = self.requests or ResourceList(), self.limits or ResourceList()
        return ResourceList.model_construct(cpu=req.cpu or lim.cpu,
                                            memory=req.memory or lim.memory)


class HTTPHeader(Model):
    name: str
    value: str


class HTTPGetAction(Model):
    path: str = "/"
    port: Port
    scheme: Literal["HTTP", "HTTPS"] = "HTTP"
    http_headers: list[HTTPHeader] = Field(default_factory=list)
    host: Annotated[Any, _not_supported("host; probes go to the instance's own address")] = None

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"{value!r} must start with '/'")
        return value


class TCPSocketAction(Model):
    port: Port
    host: Annotated[Any, _not_supported("host; probes go to the instance's own address")] = None


class ExecAction(Model):
    command: Annotated[list[str], Field(min_length=1)]


class Probe(Model):
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    exec: ExecAction | None = None
    grpc: Annotated[Any, _not_supported("grpc probes; use httpGet, tcpSocket or exec")] = None
    initial_delay_seconds: NonNegativeSeconds = 0
    period_seconds: PositiveSeconds = 10
    timeout_seconds: PositiveSeconds = 1
    success_threshold: Annotated[int, Field(ge=1, le=1000)] = 1
    failure_threshold: Annotated[int, Field(ge=1, le=1000)] = 3
    termination_grace_period_seconds: Annotated[
        Any, _not_supported("a probe-level terminationGracePeriodSeconds")
    ] = None

    @property
    def handler(self) -> HTTPGetAction | TCPSocketAction | ExecAction | None:
        return self.http_get or self.tcp_socket or self.exec


class MetricTarget(Model):
    type: Literal["Utilization", "AverageValue"]
    average_utilization: Annotated[int, Field(ge=1, le=100_000)] | None = None
    average_value: AverageValue | None = None
    value: Annotated[Any, _not_supported("target.value; use averageValue")] = None


class ResourceMetricSource(Model):
    name: Literal["cpu", "memory"]
    target: MetricTarget


class MetricIdentifier(Model):
    name: Literal["requests_per_second", "latency_p99_ms"]
    selector: Annotated[Any, _not_supported("metric selectors")] = None


class PodsMetricSource(Model):
    metric: MetricIdentifier
    target: MetricTarget


class MetricSpec(Model):
    """An HPA v2 metric: ``Resource`` (cpu, memory) or ``Pods`` (request rate, p99 latency)."""

    type: Literal["Resource", "Pods"]
    resource: ResourceMetricSource | None = None
    pods: PodsMetricSource | None = None

    @property
    def name(self) -> str:
        if self.resource is not None:
            return self.resource.name
        assert self.pods is not None
        return self.pods.metric.name

    @property
    def target(self) -> MetricTarget:
        source = self.resource or self.pods
        assert source is not None
        return source.target


class HPAScalingPolicy(Model):
    type: Literal["Pods", "Percent"]
    value: Annotated[int, Field(ge=1, le=100_000)]
    period_seconds: Annotated[int, Field(ge=1, le=1800)]


class HPAScalingRules(Model):
    stabilization_window_seconds: Annotated[int, Field(ge=0, le=3600)] | None = None
    select_policy: Literal["Max", "Min", "Disabled"] | None = None
    policies: list[HPAScalingPolicy] | None = None


class Behavior(Model):
    scale_up: HPAScalingRules | None = None
    scale_down: HPAScalingRules | None = None


DEFAULT_METRICS = (
    MetricSpec.model_validate(
        {"type": "Resource",
         "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}
    ),
)


class Autoscale(Model):
    min_replicas: Annotated[int, Field(ge=1, le=MAX_REPLICAS)] = 1
    max_replicas: Annotated[int, Field(ge=1, le=MAX_REPLICAS)]
    metrics: list[MetricSpec] | None = None
    behavior: Behavior | None = None

    @property
    def effective_metrics(self) -> tuple[MetricSpec, ...]:
        """The metrics, or Kubernetes' default (80% average CPU utilisation)."""
        return tuple(self.metrics) if self.metrics else DEFAULT_METRICS


class ReplacementBudget(Model):
    max_replacements: Annotated[int, Field(ge=0, le=MAX_REPLICAS)] = 1
    period: Duration = 300


class SyntheticRequests(Model):
    http_get: HTTPGetAction
    rate_per_second: Annotated[float, Field(gt=0, le=1000)] = 2.0


class SLA(Model):
    """What an instance must deliver, measured over ``window`` seconds."""

    latency_p99_ms: Annotated[float, Field(gt=0)] | None = None
    error_rate: Annotated[float, Field(ge=0, le=1)] | None = None
    window: Duration = 30
    min_samples: Annotated[int, Field(ge=1, le=10**9)] = 20
    outlier_mads: Annotated[float, Field(gt=0)] = 3.0
    overload_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.5
    replacement_budget: ReplacementBudget = Field(default_factory=ReplacementBudget)
    synthetic: SyntheticRequests | None = None


class RollingUpdate(Model):
    max_surge: IntOrPercent = "25%"
    max_unavailable: IntOrPercent = "25%"

    def resolve(self, replicas: int) -> tuple[int, int]:
        """(surge, unavailable) for ``replicas``: surge rounds up, unavailable down (as k8s)."""
        surge = _scaled(self.max_surge, replicas, math.ceil)
        unavailable = _scaled(self.max_unavailable, replicas, math.floor)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        return surge, unavailable


def _scaled(value: int | str, replicas: int, rounding: Any) -> int:
    if isinstance(value, int):
        return value
    return int(rounding(replicas * int(value[:-1]) / 100))


class Strategy(Model):
    type: Literal["RollingUpdate", "Recreate"] = "RollingUpdate"
    rolling_update: RollingUpdate | None = None


class AppSpec(Model):
    image: Annotated[str, Field(min_length=1)]
    command: list[str] | None = None
    args: list[str] | None = None
    working_dir: str | None = None
    env: list[EnvVar] = Field(default_factory=list)
    ports: list[ContainerPort] = Field(default_factory=list)
    resources: ResourceRequirements | None = None
    replicas: Annotated[int, Field(ge=0, le=MAX_REPLICAS)] | None = None
    autoscale: Autoscale | None = None
    startup_probe: Probe | None = None
    readiness_probe: Probe | None = None
    liveness_probe: Probe | None = None
    sla: SLA | None = None
    restart_policy: Literal["Always", "OnFailure", "Never"] = "Always"
    strategy: Strategy | None = None
    termination_grace_period_seconds: Annotated[int, Field(ge=0, le=86400)] | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None

    @property
    def initial_replicas(self) -> int:
        """Replicas to start with: ``replicas`` (default 1), clamped into the autoscale range."""
        wanted = 1 if self.replicas is None else self.replicas
        if self.autoscale is None:
            return wanted
        return min(max(wanted, self.autoscale.min_replicas), self.autoscale.max_replicas)

    @property
    def rolling_update(self) -> RollingUpdate | None:
        """The rolling-update bounds, or None for ``Recreate``."""
        strategy = self.strategy or Strategy()
        if strategy.type == "Recreate":
            return None
        return strategy.rolling_update or RollingUpdate()


class App(Model):
    api_version: Literal["flatstack.io/v1"]
    kind: Literal["App"]
    metadata: Metadata
    spec: AppSpec

    @property
    def name(self) -> str:
        return self.metadata.name

    def to_dict(self) -> dict[str, Any]:
        """The canonical wire form (camelCase, unset fields left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
