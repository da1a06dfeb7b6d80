"""SLA decisions on constructed sample sets: a bad instance is ejected, overload scales out."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from flatstack.control.models import SLA
from flatstack.control.sla import (
    InstanceWindow,
    evaluate,
    median_mad,
    percentile,
    summarize,
)

SPEC = SLA.model_validate({"latencyP99Ms": 200, "errorRate": 0.01, "window": "30s",
                           "replacementBudget": {"maxReplacements": 1, "period": "1m"}})


def latencies(rng: random.Random, median_ms: float, n: int = 300) -> list[float]:
    """Per-request latencies with a log-normal body and a few slow requests."""
    return [rng.lognormvariate(0, 0.3) * median_ms for _ in range(n)]


def healthy_fleet(n: int, seed: int = 1, median_ms: float = 40.0) -> list[InstanceWindow]:
    rng = random.Random(seed)
    return [summarize(f"web-{k}", latencies(rng, median_ms)) for k in range(n)]


def slow(name: str, median_ms: float, seed: int = 9, errors: int = 0) -> InstanceWindow:
    return summarize(name, latencies(random.Random(seed), median_ms), errors)


def test_percentile_and_robust_spread() -> None:
    assert percentile(list(range(1, 101)), 0.99) == 99
    assert percentile([5.0], 0.99) == 5.0
    assert percentile([3, 1, 2], 0.5) == 2
    assert median_mad([1, 2, 3, 4, 100]) == (3, 1)
    with pytest.raises(ValueError):
        percentile([], 0.99)
    window = summarize("a", [10.0] * 98 + [500.0, 900.0], errors=2)
    assert (window.p99_ms, window.error_rate, window.samples) == (500.0, 0.02, 100)


def test_healthy_fleet() -> None:
    d = evaluate(SPEC, healthy_fleet(5), [], now=100)
    assert (d.kind, d.eject, d.scale_out_to) == ("healthy", (), None)


def test_one_slow_instance_is_ejected() -> None:
    windows = [*healthy_fleet(4), slow("web-bad", 150.0)]
    d = evaluate(SPEC, windows, [], now=100)
    assert (d.kind, d.eject, d.deferred, d.scale_out_to) == ("eject", ("web-bad",), (), None)
    bad = next(v for v in d.verdicts if v.name == "web-bad")
    assert bad.breaching and bad.outlier and bad.latency_score is not None
    assert bad.latency_score > SPEC.outlier_mads
    assert bad.sibling_p99_ms is not None and bad.sibling_p99_ms < 100
    assert "MADs above siblings" in d.message and "web-bad" in d.message
    assert not any(v.outlier for v in d.verdicts if v.name != "web-bad")
    numbers = json.loads(json.dumps(d.numbers()))
    assert numbers["eject"] == ["web-bad"] and numbers["breachingFraction"] == 0.2


def test_everyone_slow_is_overload() -> None:
    rng = random.Random(3)
    windows = [summarize(f"web-{k}", latencies(rng, 150.0)) for k in range(4)]
    d = evaluate(SPEC, windows, [], now=100)
    assert (d.kind, d.eject) == ("overload", ())
    assert d.breaching_fraction == 1.0
    assert d.scale_out_to is not None and 5 <= d.scale_out_to <= 8
    assert "overload" in d.message


def test_most_slow_is_overload_even_with_a_fast_one() -> None:
    rng = random.Random(4)
    windows = [summarize(f"web-{k}", latencies(rng, 150.0)) for k in range(3)]
    windows += healthy_fleet(2, seed=5)
    d = evaluate(SPEC, windows, [], now=100)
    assert (d.kind, d.eject) == ("overload", ())
    assert d.breaching_fraction == pytest.approx(0.6)


def test_two_instances_one_slow() -> None:
    """With leave-one-out siblings, two instances are enough to tell."""
    d = evaluate(SPEC, [*healthy_fleet(1), slow("web-bad", 150.0)], [], now=100)
    assert (d.kind, d.eject) == ("eject", ("web-bad",))


def test_a_lone_slow_instance_is_treated_as_load() -> None:
    d = evaluate(SPEC, [slow("web-0", 150.0)], [], now=100)
    assert (d.kind, d.scale_out_to) == ("overload", 2)


def test_breaching_close_to_siblings_is_watched() -> None:
    """Two of five just over the SLA, like their siblings: no ejection, no scale-out."""
    windows = [InstanceWindow(f"web-{k}", p99, 0.0, 300)
               for k, p99 in enumerate([190.0, 195.0, 198.0, 204.0, 206.0])]
    d = evaluate(SPEC, windows, [], now=100)
    assert (d.kind, d.eject) == ("watch", ())
    assert "close to their siblings" in d.message


def test_slow_but_within_sla_is_healthy() -> None:
    windows = [*healthy_fleet(4), slow("web-slower", 60.0)]
    d = evaluate(SPEC, windows, [], now=100)
    assert d.kind == "healthy"
    assert next(v for v in d.verdicts if v.name == "web-slower").outlier is False


def test_error_rate_outlier() -> None:
    windows = [*healthy_fleet(4), slow("web-err", 40.0, errors=60)]
    d = evaluate(SPEC, windows, [], now=100)
    assert (d.kind, d.eject) == ("eject", ("web-err",))
    assert "error rate 20.00% > SLA 1.00%" in d.message


def test_budget_defers_and_refills() -> None:
    windows = [*healthy_fleet(6), slow("web-bad1", 300.0), slow("web-bad2", 150.0, seed=8)]
    d = evaluate(SPEC, windows, [], now=100)
    assert (d.kind, d.eject, d.deferred) == ("eject", ("web-bad1",), ("web-bad2",))
    assert "replacement budget (1 per 60s) defers web-bad2" in d.message
    spent = evaluate(SPEC, windows, [90.0], now=100)
    assert (spent.eject, spent.deferred, spent.budget_left) == ((), ("web-bad1", "web-bad2"), 0)
    refilled = evaluate(SPEC, windows, [39.0], now=100)
    assert refilled.eject == ("web-bad1",)


def test_unjudged_instances() -> None:
    few = summarize("web-new", [900.0] * 5)  # fewer than minSamples
    unready = InstanceWindow("web-starting", 900.0, 0.0, 500, ready=False)
    d = evaluate(SPEC, [*healthy_fleet(3), few, unready], [], now=100)
    assert d.kind == "healthy"
    reasons: dict[str, Any] = {v.name: v.reasons for v in d.verdicts if not v.judged}
    assert reasons == {"web-new": ("not judged: 5 < minSamples 20",),
                       "web-starting": ("not judged: not ready",)}
    assert evaluate(SPEC, [few, unready], [], now=100).kind == "insufficient"


def test_identical_siblings_do_not_make_every_wobble_an_outlier() -> None:
    """Siblings all at exactly 100 ms (MAD 0): the floor keeps 104 ms from being 'far'."""
    spec = SLA.model_validate({"latencyP99Ms": 102})
    windows = [InstanceWindow(f"web-{k}", 100.0, 0.0, 100) for k in range(4)]
    windows.append(InstanceWindow("web-4", 104.0, 0.0, 100))
    assert evaluate(spec, windows, [], now=0).kind == "watch"
    windows[-1] = InstanceWindow("web-4", 160.0, 0.0, 100)
    assert evaluate(spec, windows, [], now=0).eject == ("web-4",)
