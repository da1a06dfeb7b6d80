"""The horizontal autoscaling rule, as pure functions over explicit time.

This is Kubernetes' HPA algorithm (autoscaling/v2, with ``behavior``):

1. Per metric: ``desired = ceil(ready * value / target)`` over the instances that are
   ready, warmed up and measured; a ratio within the tolerance (0.1) changes nothing.
   Instances not ready or still warming up are ignored, and count as 0 when the rule
   would scale up; ready instances without a figure count as the target when scaling
   down and as 0 when scaling up. If that rebalancing flips the direction or lands in
   the tolerance, nothing changes.
2. Several metrics: the largest proposal wins (a metric without figures blocks a
   scale-down).
3. Stabilisation: every raw recommendation is remembered; a scale-up takes the minimum
   over the scale-up window, a scale-down the maximum over the scale-down window.
4. Rate policies (``Pods`` / ``Percent`` per ``periodSeconds``, counted from the scale
   events in that period; ``selectPolicy`` Max, Min or Disabled), then
   ``minReplicas``/``maxReplicas``.

:func:`decide` takes the state left by the previous call and returns the next one
inside the decision; the caller owns it (one autoscaler per app owns the replica count).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from flatstack.control.models import (
    Autoscale,
    HPAScalingPolicy,
    HPAScalingRules,
    MetricSpec,
    ResourceList,
)

TOLERANCE = 0.1
DEFAULT_SCALE_UP = HPAScalingRules.model_validate(
    {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
     "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                  {"type": "Percent", "value": 100, "periodSeconds": 15}]})
DEFAULT_SCALE_DOWN = HPAScalingRules.model_validate(
    {"stabilizationWindowSeconds": 300, "selectPolicy": "Max",
     "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]})


@dataclass(frozen=True)
class InstanceMetrics:
    """What was measured of one instance over the last interval (None: no figure)."""

    name: str
    ready: bool = True
    warm: bool = True
    cpu_millis: float | None = None
    memory_bytes: float | None = None
    requests_per_second: float | None = None
    latency_p99_ms: float | None = None


@dataclass(frozen=True)
class MetricProposal:
    """One metric's recommendation and the figures behind it."""

    metric: str
    target: float
    value: float | None
    ratio: float | None
    replicas: int | None
    counted: int
    unready: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    note: str = ""

    def numbers(self) -> dict[str, Any]:
        return {"metric": self.metric, "target": self.target, "value": _round(self.value),
                "ratio": _round(self.ratio), "replicas": self.replicas,
                "counted": self.counted, "unready": list(self.unready),
                "missing": list(self.missing)}


@dataclass(frozen=True)
class AutoscalerState:
    """Remembered between calls: raw recommendations and past scale events (time, count)."""

    recommendations: tuple[tuple[float, int], ...] = ()
    scale_ups: tuple[tuple[float, int], ...] = ()
    scale_downs: tuple[tuple[float, int], ...] = ()
    started: bool = False


@dataclass(frozen=True)
class ScaleDecision:
    """The outcome of one autoscaler pass."""

    current: int
    desired: int
    recommended: int
    stabilized: int
    reason: str
    message: str
    proposals: tuple[MetricProposal, ...]
    state: AutoscalerState
    limited_by: str | None = None
    numbers_extra: dict[str, Any] = field(default_factory=dict)

    @property
    def direction(self) -> Literal["up", "down", "none"]:
        if self.desired > self.current:
            return "up"
        return "down" if self.desired < self.current else "none"

    def numbers(self) -> dict[str, Any]:
        """The figures for the decision's event."""
        return {"current": self.current, "desired": self.desired,
                "recommended": self.recommended, "stabilized": self.stabilized,
                "limitedBy": self.limited_by, "metrics": [p.numbers() for p in self.proposals],
                **self.numbers_extra}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


# ---------------------------------------------------------------------- step 1: one metric


def replicas_for_ratio(current: int, values: dict[str, float], target: float,
                       unready: Sequence[str] = (), missing: Sequence[str] = (),
                       tolerance: float = TOLERANCE) -> tuple[int | None, float | None, str]:
    """The HPA rule for one metric: (replicas, usage ratio, note). None: no figures."""
    if not values:
        return None, None, "no figures from ready instances"
    ratio = sum(values.values()) / len(values) / target
    scale_up_unready = bool(unready) and ratio > 1.0
    if not scale_up_unready and not missing:
        if abs(1.0 - ratio) <= tolerance:
            return current, ratio, "within tolerance"
        return _ceil(ratio * len(values)), ratio, ""
    filled = list(values.values())
    filled += [target if ratio < 1.0 else 0.0] * len(missing)
    if scale_up_unready:
        filled += [0.0] * len(unready)
    new_ratio = sum(filled) / len(filled) / target
    if abs(1.0 - new_ratio) <= tolerance or (ratio < 1.0 < new_ratio) or \
            (ratio > 1.0 > new_ratio):
        return current, new_ratio, "unready or unmeasured instances cancel the change"
    replicas = _ceil(new_ratio * len(filled))
    if (new_ratio < 1.0 and replicas > current) or (new_ratio > 1.0 and replicas < current):
        return current, new_ratio, "unready or unmeasured instances cancel the change"
    return replicas, new_ratio, ""


def _ceil(value: float) -> int:
    """Ceiling that ignores float noise (0.2 / 0.1 * 3 is 6, not 7)."""
    return math.ceil(round(value, 9))


def metric_value(metric: MetricSpec, inst: InstanceMetrics,
                 requests: ResourceList | None) -> float | None:
    """The figure ``metric`` compares with its target for one instance."""
    if metric.type == "Resource":
        used = inst.cpu_millis if metric.name == "cpu" else inst.memory_bytes
        if used is None:
            return None
        if metric.target.type == "Utilization":
            request = None
            if requests is not None:
                request = requests.cpu_millis if metric.name == "cpu" else requests.memory_bytes
            if not request:
                return None
            return 100.0 * used / request
        return used
    return getattr(inst, metric.name)


def propose(metric: MetricSpec, current: int, instances: Sequence[InstanceMetrics],
            requests: ResourceList | None, tolerance: float = TOLERANCE) -> MetricProposal:
    """Step 1 for one metric over the app's instances."""
    target_spec = metric.target
    if target_spec.type == "Utilization":
        target = float(target_spec.average_utilization or 0)
    else:  # cpu figures are millicores, so is the target
        scale = 1000.0 if metric.type == "Resource" and metric.name == "cpu" else 1.0
        target = float(target_spec.average_value or 0.0) * scale
    values: dict[str, float] = {}
    unready: list[str] = []
    missing: list[str] = []
    for inst in instances:
        if not (inst.ready and inst.warm):
            unready.append(inst.name)
            continue
        value = metric_value(metric, inst, requests)
        if value is None:
            missing.append(inst.name)
        else:
            values[inst.name] = value
    label = f"{metric.name}{' utilisation' if target_spec.type == 'Utilization' else ''}"
    replicas, ratio, note = replicas_for_ratio(current, values, target, unready, missing,
                                               tolerance)
    average = sum(values.values()) / len(values) if values else None
    return MetricProposal(label, target, average, ratio, replicas, len(values),
                          tuple(unready), tuple(missing), note)


def recommend(auto: Autoscale, current: int, instances: Sequence[InstanceMetrics],
              requests: ResourceList | None,
              tolerance: float = TOLERANCE) -> tuple[int | None, tuple[MetricProposal, ...]]:
    """Step 2: the largest proposal over all metrics (None when no metric has figures)."""
    proposals = tuple(propose(m, current, instances, requests, tolerance)
                      for m in auto.effective_metrics)
    valid = [p.replicas for p in proposals if p.replicas is not None]
    if not valid:
        return None, proposals
    best = max(valid)
    if len(valid) < len(proposals) and best < current:
        best = current  # a blind metric might want more: never scale down on partial data
    return best, proposals


# ------------------------------------------------------------- steps 3 and 4: behaviour


def effective_rules(rules: HPAScalingRules | None, up: bool) -> HPAScalingRules:
    """A direction's rules with Kubernetes' defaults filled in."""
    default = DEFAULT_SCALE_UP if up else DEFAULT_SCALE_DOWN
    if rules is None:
        return default
    return HPAScalingRules.model_construct(
        stabilization_window_seconds=(default.stabilization_window_seconds
                                      if rules.stabilization_window_seconds is None
                                      else rules.stabilization_window_seconds),
        select_policy=rules.select_policy or "Max",
        policies=default.policies if rules.policies is None else rules.policies)


def stabilize(state: AutoscalerState, now: float, current: int, recommended: int,
              up: HPAScalingRules, down: HPAScalingRules) -> tuple[int, AutoscalerState]:
    """Step 3: the safest recommendation over the windows; remembers ``recommended``."""
    up_window = up.stabilization_window_seconds or 0
    down_window = down.stabilization_window_seconds or 0
    up_rec = down_rec = recommended
    for at, rec in state.recommendations:
        if at > now - up_window:
            up_rec = min(up_rec, rec)
        if at > now - down_window:
            down_rec = max(down_rec, rec)
    result = min(max(current, up_rec), down_rec)
    keep = max(up_window, down_window)
    history = tuple((at, r) for at, r in state.recommendations if at > now - keep)
    return result, replace(state, recommendations=(*history, (now, recommended)))


def _changed(events: Sequence[tuple[float, int]], now: float, period: float) -> int:
    return sum(n for at, n in events if at > now - period)


def scale_limit(rules: HPAScalingRules, state: AutoscalerState, now: float, current: int,
                up: bool) -> int:
    """Step 4: how far the policies let the count go this pass (``current`` if Disabled)."""
    if rules.select_policy == "Disabled" or not rules.policies:
        return current
    proposals = []
    for policy in rules.policies:
        start = current - _changed(state.scale_ups, now, policy.period_seconds) \
            + _changed(state.scale_downs, now, policy.period_seconds)
        proposals.append(_policy_limit(policy, start, up))
    # "Max" is the policy allowing the biggest change, "Min" the smallest.
    biggest = max if up else min
    smallest = min if up else max
    limit = (biggest if rules.select_policy == "Max" else smallest)(proposals)
    return max(limit, current) if up else min(limit, current)


def _policy_limit(policy: HPAScalingPolicy, start: int, up: bool) -> int:
    if policy.type == "Pods":
        return start + policy.value if up else start - policy.value
    if up:  # rounded up, or a small app would never grow
        return math.ceil(start * (1 + policy.value / 100))
    return int(start * (1 - policy.value / 100))


def decide(auto: Autoscale, state: AutoscalerState, now: float, current: int,
           instances: Sequence[InstanceMetrics], requests: ResourceList | None = None, *,
           overload_replicas: int | None = None,
           tolerance: float = TOLERANCE) -> ScaleDecision:
    """One autoscaler pass at time ``now`` (seconds, any monotonic origin).

    ``overload_replicas`` is the SLA monitor's request when most instances breach
    their SLA (see :mod:`flatstack.control.sla`); it counts as one more proposal.
    The returned state already holds this pass's scale event: store it and pass it
    to the next call. A fresh ``AutoscalerState()`` (first pass, or after a daemon
    restart) counts the current replicas as a recommendation made ``now``.
    """
    if not state.started:
        # A fresh (or restarted) autoscaler has no history: treat the current count as
        # its last recommendation, so it does not scale down before a window has passed.
        state = replace(state, recommendations=((now, current),), started=True)
    behavior = auto.behavior
    up_rules = effective_rules(behavior.scale_up if behavior else None, up=True)
    down_rules = effective_rules(behavior.scale_down if behavior else None, up=False)
    recommended, proposals = recommend(auto, current, instances, requests, tolerance)
    extra: dict[str, Any] = {}
    if overload_replicas is not None:
        extra["slaOverloadReplicas"] = overload_replicas
        recommended = max(recommended or current, overload_replicas)
    if recommended is None:
        desired = min(max(current, auto.min_replicas), auto.max_replicas)
        reason = "NoMetrics" if desired == current else _direction_reason(current, desired)
        return ScaleDecision(current, desired, current, current, reason,
                             "no metric has figures from ready instances; count kept",
                             proposals, _record(state, now, current, desired),
                             "minReplicas/maxReplicas" if desired != current else None, extra)

    stabilized, state = stabilize(state, now, current, recommended, up_rules, down_rules)
    desired, limited_by = stabilized, None
    if recommended > current and stabilized < recommended:
        limited_by = "scaleUp stabilizationWindowSeconds"
    elif recommended < current and stabilized > recommended:
        limited_by = "scaleDown stabilizationWindowSeconds"
    if desired > current:
        limit = scale_limit(up_rules, state, now, current, up=True)
        allowed = min(auto.max_replicas, limit)
        if desired > allowed:
            desired = allowed
            limited_by = "maxReplicas" if limit >= auto.max_replicas else "scaleUp policies"
    elif desired < current:
        limit = scale_limit(down_rules, state, now, current, up=False)
        allowed = max(auto.min_replicas, limit)
        if desired < allowed:
            desired = allowed
            limited_by = "minReplicas" if limit <= auto.min_replicas else "scaleDown policies"
    if desired > auto.max_replicas:
        desired, limited_by = auto.max_replicas, "maxReplicas"
    elif desired < auto.min_replicas:
        desired, limited_by = auto.min_replicas, "minReplicas"

    reason = _direction_reason(current, desired)
    message = _message(current, desired, recommended, proposals, limited_by, overload_replicas)
    return ScaleDecision(current, desired, recommended, stabilized, reason, message, proposals,
                         _record(state, now, current, desired), limited_by, extra)


def _record(state: AutoscalerState, now: float, current: int, desired: int) -> AutoscalerState:
    keep = 1800.0  # the longest policy period allowed
    ups = tuple(e for e in state.scale_ups if e[0] > now - keep)
    downs = tuple(e for e in state.scale_downs if e[0] > now - keep)
    if desired > current:
        ups += ((now, desired - current),)
    elif desired < current:
        downs += ((now, current - desired),)
    return replace(state, scale_ups=ups, scale_downs=downs)


def _direction_reason(current: int, desired: int) -> str:
    if desired > current:
        return "ScaledUp"
    return "ScaledDown" if desired < current else "Unchanged"


def _message(current: int, desired: int, recommended: int,
             proposals: Sequence[MetricProposal], limited_by: str | None,
             overload: int | None) -> str:
    parts = []
    for p in proposals:
        if p.value is None:
            parts.append(f"{p.metric}: no figures")
        else:
            parts.append(f"{p.metric} {p.value:.4g} vs target {p.target:.4g} "
                         f"(ratio {p.ratio:.2f}) -> {p.replicas}"
                         + (f" ({p.note})" if p.note else ""))
    if overload is not None:
        parts.append(f"SLA overload -> {overload}")
    text = f"{current} -> {desired} replicas; " + "; ".join(parts)
    if limited_by is not None and desired != recommended:
        text += f"; recommendation {recommended} held by {limited_by}"
    return text
