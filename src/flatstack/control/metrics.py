"""The control plane's figures in Prometheus' text format (``GET /metrics``).

A ``prometheus_client`` custom collector reads, at scrape time, what the controllers
already hold: the store (desired replicas; counters from the events table, so they
survive a daemon restart), the reconciler (instances by state, ready, serving), the SLA
monitor's last judgement (p99 and error rate per instance as the monitor sees them), the
autoscaler's last decision (its recommendation), the endpoint rules (backends) and the
engine (containers by state). Nothing is counted twice: there is no second bookkeeping.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from flatstack import __version__
from flatstack.control.endpoint import Port
from flatstack.errors import FlatstackError

log = logging.getLogger("flatstack.control")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SCALE_DIRECTIONS = {"ScaledUp": "up", "ScaledDown": "down"}
INSTANCE_STATES = ("running", "ejected", "terminating", "exited")


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"flatstack_{name}", doc, labels=labels)


def _counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(f"flatstack_{name}", doc, labels=labels)


class ControlCollector(Collector):
    """Every flatstack metric, read from ``control`` (a Controller) and ``engine``."""

    def __init__(self, control: Any, engine: Any) -> None:
        self.control = control
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        yield from self._apps()
        yield from self._events()
        yield from self._engine()

    # -- per app -----------------------------------------------------------------------
    def _apps(self) -> Iterator[Metric]:
        control = self.control
        stored_apps = control.store.list()
        info = _gauge("info", "The daemon's version (value 1).", ["version"])
        info.add_metric([__version__], 1)
        yield info
        desired = _gauge("app_replicas_desired", "Instances the controllers work towards.",
                         ["app"])
        generation = _gauge("app_generation", "The app's spec generation.", ["app"])
        ready = _gauge("app_instances_ready", "Ready instances (in the endpoint).", ["app"])
        serving = _gauge("app_instances_serving", "Running instances not being removed "
                         "(ready or not).", ["app"])
        states = _gauge("app_instances", "Instances the reconciler knows, by state.",
                        ["app", "state"])
        backends = _gauge("endpoint_backends", "Backends the endpoint's rules spread "
                          "connections over.", ["app", "host_port", "protocol"])
        recommended = _gauge("app_autoscaler_recommended_replicas", "The autoscaler's last "
                             "recommendation (before stabilisation and rate policies).", ["app"])
        sla = self._sla_families()
        for stored in stored_apps:
            name = stored.name
            desired.add_metric([name], stored.replicas)
            generation.add_metric([name], stored.generation)
            ready.add_metric([name], len(control.reconciler.ready(name)))
            serving.add_metric([name], len(control.reconciler.serving(name)))
            by_state = collections.Counter(i["state"] for i in control.reconciler.snapshot(name))
            for state in INSTANCE_STATES:
                states.add_metric([name, state], by_state.get(state, 0))
            if control.endpoints is not None:
                for port in stored.app.spec.ports:
                    if port.host_port is not None:
                        key = Port(name, port.host_port, port.protocol)
                        backends.add_metric([name, str(port.host_port), port.protocol],
                                            len(control.endpoints.backends(key)))
            decision = control.autoscaler.last.get(name)
            if stored.app.spec.autoscale is not None and decision is not None:
                recommended.add_metric([name], decision.recommended)
            self._sla(stored, sla)
        yield from (desired, generation, ready, serving, states, backends, recommended,
                    *sla.values())

    @staticmethod
    def _sla_families() -> dict[str, GaugeMetricFamily]:
        return {
            "p99": _gauge("sla_p99_latency_seconds", "p99 latency of an instance over the "
                          "SLA window, as the monitor measures it.", ["app", "instance"]),
            "errors": _gauge("sla_error_ratio", "Error rate of an instance over the SLA "
                             "window (0..1).", ["app", "instance"]),
            "breaching": _gauge("sla_breaching", "1 when the instance breaches its SLA.",
                                ["app", "instance"]),
            "target_p99": _gauge("sla_target_p99_latency_seconds", "The SLA's p99 latency.",
                                 ["app"]),
            "target_errors": _gauge("sla_target_error_ratio", "The SLA's error rate.",
                                    ["app"]),
            "decision": _gauge("sla_decision", "The monitor's last judgement of the app "
                               "(1 for the current kind).", ["app", "kind"]),
        }

    def _sla(self, stored: Any, families: dict[str, GaugeMetricFamily]) -> None:
        spec = stored.app.spec.sla
        if spec is None:
            return
        name = stored.name
        if spec.latency_p99_ms is not None:
            families["target_p99"].add_metric([name], float(spec.latency_p99_ms) / 1000)
        if spec.error_rate is not None:
            families["target_errors"].add_metric([name], float(spec.error_rate))
        decision = self.control.monitor.last.get(name)
        if decision is None:
            return
        families["decision"].add_metric([name, decision.kind], 1)
        for verdict in decision.verdicts:
            if verdict.p99_ms is not None:
                families["p99"].add_metric([name, verdict.name], verdict.p99_ms / 1000)
            if verdict.error_rate is not None:
                families["errors"].add_metric([name, verdict.name], verdict.error_rate)
            families["breaching"].add_metric([name, verdict.name], int(verdict.breaching))

    # -- counters from the events table ------------------------------------------------
    def _events(self) -> Iterator[Metric]:
        events = _counter("app_events", "Events recorded, by reason.", ["app", "reason"])
        restarts = _counter("app_restarts", "Instances replaced after a failure, by reason "
                            "(Crashed, OOMKilled, LivenessFailed, StartupFailed...).",
                            ["app", "reason"])
        ejections = _counter("app_ejections", "Instances ejected from the endpoint for "
                             "their SLA.", ["app"])
        scaling = _counter("app_scaling_decisions", "Replica count changes by the "
                           "autoscaler, by direction.", ["app", "direction"])
        ejected: dict[str, int] = {}
        scaled: dict[tuple[str, str], int] = {}
        for stored in self.control.store.list():  # 0, not absent, for the apps there are
            ejected[stored.name] = 0
            if stored.app.spec.autoscale is not None:
                scaled.update({(stored.name, d): 0 for d in SCALE_DIRECTIONS.values()})
        for app, reason, count, restarted in self.control.store.event_counts():
            events.add_metric([app, reason], count)
            if restarted:
                restarts.add_metric([app, reason], restarted)
            if reason == "Ejected":
                ejected[app] = count
            if reason in SCALE_DIRECTIONS:
                scaled[app, SCALE_DIRECTIONS[reason]] = count
        for app, count in sorted(ejected.items()):
            ejections.add_metric([app], count)
        for (app, direction), count in sorted(scaled.items()):
            scaling.add_metric([app, direction], count)
        yield from (events, restarts, ejections, scaling)

    # -- the engine --------------------------------------------------------------------
    def _engine(self) -> Iterator[Metric]:
        family = _gauge("engine_containers", "The engine's containers, by state.", ["state"])
        try:
            listed = self.engine.list(all=True)
        except FlatstackError as err:
            log.warning("metrics: listing containers: %s", err)
            return
        for state, count in sorted(collections.Counter(c["state"] for c in listed).items()):
            family.add_metric([state], count)
        yield family


def exposition(control: Any, engine: Any) -> bytes:
    """The text format of every flatstack metric, now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ControlCollector(control, engine))
    return generate_latest(registry)
