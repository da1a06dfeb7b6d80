"""Bad instance or overload? Robust statistics over one SLA window.

Each instance's p99 latency and error rate over the window are compared with the SLA
and with its siblings (the other instances of the app): the sibling median and the
median absolute deviation (MAD, scaled by 1.4826 so it estimates a standard deviation
for normal data, with a floor so identical siblings do not make every wobble an
outlier). Leaving the instance itself out of its reference keeps the test sharp with
two or three instances.

- An instance breaching the SLA and more than ``outlierMads`` MADs above its siblings
  is an outlier: eject it from the endpoint and replace it.
- If more than ``overloadFraction`` of the judged instances breach, it is load, not a
  bad instance: eject nothing and ask for more replicas.
- Replacements are capped by a budget (``replacementBudget``: at most
  ``maxReplacements`` per ``period``); outliers beyond it are deferred, with a reason.

Instances that are not ready or have fewer than ``minSamples`` requests in the window
are not judged.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from flatstack.control.models import SLA

MAD_SCALE = 1.4826
LATENCY_FLOOR_MS = 1.0
LATENCY_FLOOR_REL = 0.05
ERROR_FLOOR = 0.005

Kind = Literal["healthy", "watch", "eject", "overload", "insufficient"]


@dataclass(frozen=True)
class InstanceWindow:
    """One instance's figures over the SLA window."""

    name: str
    p99_ms: float | None
    error_rate: float | None
    samples: int
    ready: bool = True


@dataclass(frozen=True)
class InstanceVerdict:
    """How one instance compares with the SLA and with its siblings."""

    name: str
    judged: bool
    breaching: bool
    outlier: bool
    p99_ms: float | None
    error_rate: float | None
    sibling_p99_ms: float | None = None
    sibling_mad_ms: float | None = None
    latency_score: float | None = None
    error_score: float | None = None
    reasons: tuple[str, ...] = ()

    @property
    def severity(self) -> float:
        return max(self.latency_score or 0.0, self.error_score or 0.0)

    def numbers(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 4)

        return {"instance": self.name, "judged": self.judged, "breaching": self.breaching,
                "outlier": self.outlier, "p99Ms": r(self.p99_ms),
                "errorRate": r(self.error_rate), "siblingP99Ms": r(self.sibling_p99_ms),
                "siblingMadMs": r(self.sibling_mad_ms), "latencyScore": r(self.latency_score),
                "errorScore": r(self.error_score)}


@dataclass(frozen=True)
class SlaDecision:
    """What the SLA monitor should do now, and why."""

    kind: Kind
    eject: tuple[str, ...]
    deferred: tuple[str, ...]
    scale_out_to: int | None
    breaching_fraction: float
    budget_left: int
    verdicts: tuple[InstanceVerdict, ...]
    message: str

    def numbers(self) -> dict[str, Any]:
        """The figures for the decision's event."""
        return {"kind": self.kind, "eject": list(self.eject), "deferred": list(self.deferred),
                "scaleOutTo": self.scale_out_to,
                "breachingFraction": round(self.breaching_fraction, 4),
                "budgetLeft": self.budget_left,
                "instances": [v.numbers() for v in self.verdicts]}


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest-rank method (an observed value)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def summarize(name: str, latencies_ms: Sequence[float], errors: int = 0,
              ready: bool = True) -> InstanceWindow:
    """One instance's window from per-request latencies (failed ones included) and errors."""
    n = len(latencies_ms)
    if errors > n:
        raise ValueError("more errors than requests")
    return InstanceWindow(name, percentile(latencies_ms, 0.99) if n else None,
                          errors / n if n else None, n, ready)


def median_mad(values: Sequence[float]) -> tuple[float, float]:
    """Median and (unscaled) median absolute deviation."""
    med = statistics.median(values)
    return med, statistics.median(abs(v - med) for v in values)


def _score(value: float, siblings: Sequence[float], floor_abs: float,
           floor_rel: float) -> tuple[float, float, float]:
    """(robust z-score, sibling median, scaled sibling MAD with floor)."""
    med, mad = median_mad(siblings)
    spread = max(MAD_SCALE * mad, floor_abs, floor_rel * abs(med))
    return (value - med) / spread, med, spread


def judge(sla: SLA, windows: Sequence[InstanceWindow]) -> tuple[InstanceVerdict, ...]:
    """Each instance against the SLA and its judged siblings."""
    judged = [w for w in windows if w.ready and w.samples >= sla.min_samples]
    out = []
    for w in windows:
        if w not in judged:
            why = "not ready" if not w.ready else f"{w.samples} < minSamples {sla.min_samples}"
            out.append(InstanceVerdict(w.name, False, False, False, w.p99_ms, w.error_rate,
                                       reasons=(f"not judged: {why}",)))
            continue
        reasons: list[str] = []
        lat_breach = (sla.latency_p99_ms is not None and w.p99_ms is not None
                      and w.p99_ms > sla.latency_p99_ms)
        err_breach = (sla.error_rate is not None and w.error_rate is not None
                      and w.error_rate > sla.error_rate)
        if lat_breach:
            reasons.append(f"p99 {w.p99_ms:.1f} ms > SLA {sla.latency_p99_ms:g} ms")
        if err_breach:
            reasons.append(f"error rate {w.error_rate:.2%} > SLA {sla.error_rate:.2%}")
        siblings = [s for s in judged if s is not w]
        lat_sib = [s.p99_ms for s in siblings if s.p99_ms is not None]
        err_sib = [s.error_rate for s in siblings if s.error_rate is not None]
        lat_score = err_score = sib_med = sib_mad = None
        if w.p99_ms is not None and lat_sib:
            lat_score, sib_med, sib_mad = _score(w.p99_ms, lat_sib, LATENCY_FLOOR_MS,
                                                 LATENCY_FLOOR_REL)
        if w.error_rate is not None and err_sib:
            err_score = _score(w.error_rate, err_sib, ERROR_FLOOR, 0.0)[0]
        k = sla.outlier_mads
        outlier = (lat_breach and lat_score is not None and lat_score > k) or \
            (err_breach and err_score is not None and err_score > k)
        if outlier:
            reasons.append(f"{max(lat_score or 0, err_score or 0):.1f} MADs above siblings "
                           f"(> {k:g})")
        elif lat_breach or err_breach:
            reasons.append("close to its siblings" if siblings else "no siblings to compare")
        out.append(InstanceVerdict(w.name, True, lat_breach or err_breach, outlier, w.p99_ms,
                                   w.error_rate, sib_med, sib_mad, lat_score, err_score,
                                   tuple(reasons)))
    return tuple(out)


def budget_left(sla: SLA, replacements: Sequence[float], now: float) -> int:
    """Replacements still allowed in the budget period ending at ``now``."""
    budget = sla.replacement_budget
    used = sum(1 for at in replacements if at > now - budget.period)
    return max(0, budget.max_replacements - used)


def evaluate(sla: SLA, windows: Sequence[InstanceWindow], replacements: Sequence[float],
             now: float) -> SlaDecision:
    """Decide for one window: eject outliers (within budget), scale out, or nothing.

    ``replacements`` are the times of earlier SLA replacements of this app; add ``now``
    for each instance in ``eject`` once it is acted on.
    """
    verdicts = judge(sla, windows)
    left = budget_left(sla, replacements, now)
    judged = [v for v in verdicts if v.judged]
    if not judged:
        return SlaDecision("insufficient", (), (), None, 0.0, left, verdicts,
                           "no instance has enough requests in the window to judge")
    breaching = [v for v in judged if v.breaching]
    fraction = len(breaching) / len(judged)
    if fraction > sla.overload_fraction:
        want = _scale_out(sla, len(windows), breaching)
        return SlaDecision(
            "overload", (), (), want, fraction, left, verdicts,
            f"{len(breaching)} of {len(judged)} instances breach the SLA "
            f"({fraction:.0%} > {sla.overload_fraction:.0%}): overload, scale out to {want}")
    outliers = sorted((v for v in breaching if v.outlier), key=lambda v: -v.severity)
    if not outliers:
        if breaching:
            names = ", ".join(v.name for v in breaching)
            return SlaDecision("watch", (), (), None, fraction, left, verdicts,
                               f"{names} breach the SLA but are close to their siblings")
        return SlaDecision("healthy", (), (), None, 0.0, left, verdicts,
                           f"all {len(judged)} judged instances meet the SLA")
    eject = tuple(v.name for v in outliers[:left])
    deferred = tuple(v.name for v in outliers[left:])
    parts = [f"{v.name}: {'; '.join(v.reasons)}" for v in outliers]
    message = "outliers " + " | ".join(parts)
    if deferred:
        message += (f"; replacement budget ({sla.replacement_budget.max_replacements} per "
                    f"{sla.replacement_budget.period:g}s) defers {', '.join(deferred)}")
    return SlaDecision("eject", eject, deferred, None, fraction, left, verdicts, message)


def _scale_out(sla: SLA, instances: int, breaching: Sequence[InstanceVerdict]) -> int:
    """Replicas for an overload: the HPA rule on the median breach ratio, at least +1."""
    ratios = []
    for v in breaching:
        r = 0.0
        if sla.latency_p99_ms and v.p99_ms is not None:
            r = max(r, v.p99_ms / sla.latency_p99_ms)
        if sla.error_rate and v.error_rate is not None:
            r = max(r, v.error_rate / sla.error_rate)
        ratios.append(r)
    ratio = statistics.median(ratios) if ratios else 1.0
    return max(instances + 1, math.ceil(instances * min(ratio, 2.0)))
