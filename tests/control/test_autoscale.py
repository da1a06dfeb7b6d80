"""The HPA rule against the worked examples of the Kubernetes documentation
("Horizontal Pod Autoscaling": algorithm details, scaling policies, stabilisation window,
default behaviour), plus flatstack's handling of unready and warming instances."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import Any

from flatstack.control.autoscale import (
    AutoscalerState,
    InstanceMetrics,
    ScaleDecision,
    decide,
    replicas_for_ratio,
)
from flatstack.control.models import Autoscale, ResourceList

REQUESTS = ResourceList.model_validate({"cpu": "500m"})


def auto(max_replicas: int = 100, min_replicas: int = 1, metrics: Any = None,
         behavior: Any = None) -> Autoscale:
    data: dict[str, Any] = {"minReplicas": min_replicas, "maxReplicas": max_replicas}
    data["metrics"] = metrics or [cpu_utilisation(50)]
    if behavior is not None:
        data["behavior"] = behavior
    return Autoscale.model_validate(data)


def cpu_utilisation(percent: int) -> dict[str, Any]:
    return {"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": percent}}}


def cpu_value(value: str) -> dict[str, Any]:
    return {"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "AverageValue", "averageValue": value}}}


def rps(value: float) -> dict[str, Any]:
    return {"type": "Pods", "pods": {"metric": {"name": "requests_per_second"},
                                     "target": {"type": "AverageValue", "averageValue": value}}}


def fleet(n: int, cpu_millis: float | None = None, **kw: Any) -> list[InstanceMetrics]:
    return [InstanceMetrics(f"i{k}", cpu_millis=cpu_millis, **kw) for k in range(n)]


def at_ratio(n: int, ratio: float) -> list[InstanceMetrics]:
    """n instances at ``ratio`` times the 50% target of a 500m request."""
    return fleet(n, cpu_millis=250 * ratio)


# ----------------------------------------------------------------- algorithm details


def test_doubling_and_halving_on_average_value() -> None:
    """200m against a 100m target doubles the replicas; 50m halves them."""
    spec = auto(metrics=[cpu_value("100m")])
    up = decide(spec, AutoscalerState(), 0, 3, fleet(3, cpu_millis=200))
    assert (up.desired, up.reason) == (6, "ScaledUp")
    assert up.proposals[0].ratio == 2.0
    quick = auto(metrics=[cpu_value("100m")],
                 behavior={"scaleDown": {"stabilizationWindowSeconds": 0}})
    down = decide(quick, AutoscalerState(), 0, 4, fleet(4, cpu_millis=50))
    assert (down.desired, down.reason) == (2, "ScaledDown")


def test_a_fresh_autoscaler_does_not_scale_down_at_once() -> None:
    """No history (first pass, daemon restart): the current count counts as a recent
    recommendation, so the scale-down window has to pass first."""
    spec = auto(metrics=[cpu_value("100m")])
    first = decide(spec, AutoscalerState(), 0, 4, fleet(4, cpu_millis=50))
    assert (first.desired, first.limited_by) == (4, "scaleDown stabilizationWindowSeconds")
    later = decide(spec, first.state, 300, 4, fleet(4, cpu_millis=50))
    assert later.desired == 2


def test_tolerance() -> None:
    """A ratio within 0.1 of 1.0 skips scaling."""
    assert replicas_for_ratio(10, {f"i{k}": 105.0 for k in range(10)}, 100.0)[0] == 10
    assert replicas_for_ratio(10, {f"i{k}": 91.0 for k in range(10)}, 100.0)[0] == 10
    assert replicas_for_ratio(10, {f"i{k}": 111.0 for k in range(10)}, 100.0)[0] == 12
    d = decide(auto(), AutoscalerState(), 0, 4, at_ratio(4, 1.08), REQUESTS)
    assert (d.desired, d.reason, d.proposals[0].note) == (4, "Unchanged", "within tolerance")


def test_multiple_metrics_take_the_largest_proposal() -> None:
    spec = auto(metrics=[cpu_utilisation(50), rps(100)])
    insts = [InstanceMetrics(f"i{k}", cpu_millis=250, requests_per_second=300)
             for k in range(2)]
    d = decide(spec, AutoscalerState(), 0, 2, insts, REQUESTS)
    assert [p.replicas for p in d.proposals] == [2, 6]
    assert d.desired == 6


def test_unready_and_warming_instances_are_ignored() -> None:
    """Unready pods count as 0 when scaling up; the direction reversal cancels the change."""
    spec = auto()
    hot = [InstanceMetrics("new0", ready=False, cpu_millis=1000),
           InstanceMetrics("new1", warm=False, cpu_millis=1000)]
    d = decide(spec, AutoscalerState(), 0, 4, at_ratio(2, 1.2) + hot, REQUESTS)
    assert d.desired == 4
    assert d.proposals[0].unready == ("new0", "new1") and d.proposals[0].counted == 2
    assert "cancel" in d.proposals[0].note
    # Once warm and measured, the same figures scale up.
    warm = [InstanceMetrics("new0", cpu_millis=1000), InstanceMetrics("new1", cpu_millis=1000)]
    assert decide(spec, AutoscalerState(), 0, 4, at_ratio(2, 1.2) + warm, REQUESTS).desired > 4


def test_missing_figures_count_as_target_when_scaling_down() -> None:
    spec = auto(behavior={"scaleDown": {"stabilizationWindowSeconds": 0}})
    insts = [*at_ratio(2, 0.4), InstanceMetrics("m0"), InstanceMetrics("m1")]
    d = decide(spec, AutoscalerState(), 0, 4, insts, REQUESTS)
    assert d.proposals[0].missing == ("m0", "m1")
    assert d.desired == 3  # ceil(4 * (20+20+50+50)/4/50), not ceil(2 * 0.4)


def test_min_max_and_no_metrics() -> None:
    d = decide(auto(max_replicas=10), AutoscalerState(), 0, 6, at_ratio(6, 5.0), REQUESTS)
    assert (d.desired, d.limited_by) == (10, "maxReplicas")
    quick = {"scaleDown": {"stabilizationWindowSeconds": 0}}
    d = decide(auto(min_replicas=3, behavior=quick), AutoscalerState(), 0, 6, at_ratio(6, 0.1),
               REQUESTS)
    assert (d.desired, d.limited_by) == (3, "minReplicas")
    d = decide(auto(), AutoscalerState(), 0, 4, fleet(4), REQUESTS)
    assert (d.desired, d.reason) == (4, "NoMetrics")


# ------------------------------------------------------------------- scaling policies


def run(spec: Autoscale, start: int, steps: Sequence[tuple[float, list[InstanceMetrics]]],
        ) -> list[ScaleDecision]:
    """Apply each decision, as the controller would, at the given times."""
    state, current, out = AutoscalerState(), start, []
    for now, insts in steps:
        d = decide(spec, state, now, current, insts, REQUESTS)
        state, current = d.state, d.desired
        out.append(d)
    return out


def test_scale_down_policies_from_the_documentation() -> None:
    """Pods 4/60s and Percent 10/60s, selectPolicy Max: 80 -> 72 -> 64 (7.2 rounds up to 8),
    and 4 at a time once below 40."""
    spec = auto(behavior={"scaleDown": {"stabilizationWindowSeconds": 0, "policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 60},
        {"type": "Percent", "value": 10, "periodSeconds": 60}]}})
    # The load wants 10 replicas throughout (ratio 1/8 of 80).
    counts = [80]
    decisions = []
    for minute in range(20):
        current = counts[-1]
        d = run_once(spec, decisions, minute * 60.0, current, at_ratio(current, 10 / current))
        counts.append(d.desired)
    assert counts[:4] == [80, 72, 64, 57]
    steps = [a - b for a, b in itertools.pairwise(counts)]
    below_40 = [s for c, s in zip(counts, steps, strict=False) if 10 + 4 <= c <= 40]
    assert below_40 and set(below_40) == {4}
    assert counts[-1] == 10
    assert decisions[1].limited_by == "scaleDown policies"


def run_once(spec: Autoscale, history: list[ScaleDecision], now: float, current: int,
             insts: list[InstanceMetrics]) -> ScaleDecision:
    state = history[-1].state if history else AutoscalerState()
    d = decide(spec, state, now, current, insts, REQUESTS)
    history.append(d)
    return d


def test_policies_hold_for_their_whole_period() -> None:
    """periodSeconds is the length of time in the past for which the policy must hold."""
    spec = auto(behavior={"scaleDown": {"stabilizationWindowSeconds": 0, "policies": [
        {"type": "Percent", "value": 10, "periodSeconds": 60}]}})
    history: list[ScaleDecision] = []
    d = run_once(spec, history, 0, 80, at_ratio(80, 0.125))
    assert d.desired == 72
    d = run_once(spec, history, 15, 72, at_ratio(72, 10 / 72))
    assert (d.desired, d.limited_by) == (72, "scaleDown policies")  # 8 already removed
    d = run_once(spec, history, 61, 72, at_ratio(72, 10 / 72))
    assert d.desired == 64


def test_default_scale_up_behaviour() -> None:
    """4 pods or 100% of the current replicas, whichever is more, every 15 seconds."""
    spec = auto()
    history: list[ScaleDecision] = []
    counts = [1]
    for now in (0, 5, 15, 30, 45, 60):
        current = counts[-1]
        counts.append(run_once(spec, history, now, current, at_ratio(current, 40 / current))
                      .desired)
    assert counts == [1, 5, 5, 10, 20, 40, 40]
    assert history[1].limited_by == "scaleUp policies"


def test_select_policy_min_and_disabled() -> None:
    both = [{"type": "Pods", "value": 4, "periodSeconds": 60},
            {"type": "Percent", "value": 50, "periodSeconds": 60}]
    most = decide(auto(behavior={"scaleUp": {"policies": both}}), AutoscalerState(), 0, 10,
                  at_ratio(10, 4.0), REQUESTS)
    least = decide(auto(behavior={"scaleUp": {"policies": both, "selectPolicy": "Min"}}),
                   AutoscalerState(), 0, 10, at_ratio(10, 4.0), REQUESTS)
    assert (most.desired, least.desired) == (15, 14)
    off = decide(auto(behavior={"scaleDown": {"selectPolicy": "Disabled"}}), AutoscalerState(),
                 0, 10, at_ratio(10, 0.1), REQUESTS)
    assert off.desired == 10


def test_percent_scale_up_rounds_up() -> None:
    """Percent 900 per minute: 1 -> 10 -> 100."""
    spec = auto(max_replicas=1000, behavior={"scaleUp": {"policies": [
        {"type": "Percent", "value": 900, "periodSeconds": 60}]}})
    history: list[ScaleDecision] = []
    counts = [1]
    for now in (0, 60, 120):
        current = counts[-1]
        counts.append(run_once(spec, history, now, current, at_ratio(current, 500 / current))
                      .desired)
    assert counts == [1, 10, 100, 500]


# -------------------------------------------------------------- stabilisation windows


def test_scale_down_waits_for_the_window() -> None:
    """Default 300 s: the highest recommendation of the last five minutes wins."""
    spec = auto()
    history: list[ScaleDecision] = []
    current = 8
    run_once(spec, history, 0, current, at_ratio(8, 1.0))
    held = []
    for now in range(15, 300, 15):  # load drops to a quarter
        d = run_once(spec, history, now, current, at_ratio(current, 0.25))
        held.append(d.desired)
        current = d.desired
    assert set(held) == {8}
    assert history[-1].limited_by == "scaleDown stabilizationWindowSeconds"
    d = run_once(spec, history, 300, current, at_ratio(current, 0.25))
    assert d.desired == 2  # the 8-replica recommendation at t=0 has left the window


def test_scale_up_window_ignores_a_short_spike() -> None:
    spec = auto(behavior={"scaleUp": {"stabilizationWindowSeconds": 60}})
    history: list[ScaleDecision] = []
    for now in range(0, 61, 15):
        ratio = 3.0 if now == 30 else 1.0
        assert run_once(spec, history, now, 4, at_ratio(4, ratio)).desired == 4
    current, counts = 4, {}
    for now in range(75, 181, 15):  # sustained from t=75: acts once the window is all high
        current = run_once(spec, history, now, current, at_ratio(current, 12 / current)).desired
        counts[now] = current
    assert counts == {75: 4, 90: 4, 105: 4, 120: 8, 135: 12, 150: 12, 165: 12, 180: 12}
    assert history[4].limited_by is None and history[5].limited_by == (
        "scaleUp stabilizationWindowSeconds")


def test_square_wave_load_does_not_oscillate() -> None:
    """Load alternates between 3x and 0.5x every minute for ten minutes, then stays low."""
    spec = auto(max_replicas=20)
    history: list[ScaleDecision] = []
    current, counts = 2, [2]
    demand = 6.0  # replicas' worth of work when high
    for now in range(0, 1500, 15):
        high = now < 600 and (now // 60) % 2 == 0
        work = demand if high else 1.0
        d = run_once(spec, history, now, current, at_ratio(current, work / current))
        current = d.desired
        counts.append(current)
    # Up to the high-load size at once, held through every low half-minute, then one
    # step down when the last high recommendation (t=525) leaves the 300 s window.
    ups = counts.count(6)
    assert counts == [2] + [6] * ups + [1] * (len(counts) - 1 - ups)
    assert 15 * ups == 525 + 300


def test_sla_overload_is_one_more_proposal() -> None:
    d = decide(auto(), AutoscalerState(), 0, 3, at_ratio(3, 1.0), REQUESTS,
               overload_replicas=5)
    assert (d.desired, d.reason) == (5, "ScaledUp")
    assert d.numbers()["slaOverloadReplicas"] == 5


def test_decision_numbers_are_json() -> None:
    d = decide(auto(metrics=[cpu_utilisation(50), rps(10)]), AutoscalerState(), 0, 3,
               at_ratio(3, 2.0), REQUESTS)
    numbers = json.loads(json.dumps(d.numbers()))
    assert numbers["current"] == 3 and numbers["desired"] == 6
    assert numbers["metrics"][0]["ratio"] == 2.0 and numbers["metrics"][1]["value"] is None
    assert d.message.startswith("3 -> 6 replicas; cpu utilisation 100 vs target 50")
