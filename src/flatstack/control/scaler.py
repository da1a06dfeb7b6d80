"""The autoscaler controller: the HPA rule (``control/autoscale.py``) fed with each
instance's CPU and memory from the engine's cgroup counters, once a second.

It is the one owner of an autoscaled app's replica count (``Store.set_replicas``, which
writes the decision's event with its numbers). An instance counts once it is ready, and
its figures once it has been ready for ``warmup`` seconds (``warm``). The SLA monitor's
overload request (``request_overload``) is one more proposal for the next pass. History
lives in memory; a fresh state never scales down at once (see ``autoscale.decide``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flatstack.control._loop import BackgroundLoop
from flatstack.control.autoscale import AutoscalerState, InstanceMetrics, ScaleDecision, decide
from flatstack.control.reconciler import Reconciler
from flatstack.control.store import Store, StoredApp
from flatstack.errors import FlatstackError

log = logging.getLogger("flatstack.control")


class Autoscaler(BackgroundLoop):
    """One loop for every autoscaled app."""

    def __init__(self, store: Store, engine: Any, reconciler: Reconciler, *,
                 period: float = 1.0, warmup: float = 3.0) -> None:
        self.store = store
        self.engine = engine
        self.reconciler = reconciler
        self.period = period
        self.warmup = warmup
        self.states: dict[str, AutoscalerState] = {}
        self.last: dict[str, ScaleDecision] = {}
        self._overload: dict[str, int] = {}
        BackgroundLoop.__init__(self)

    thread_name = "autoscale"

    def request_overload(self, app: str, replicas: int) -> None:
        """The SLA monitor saw most instances breach: ask for ``replicas`` next pass."""
        self._overload[app] = max(replicas, self._overload.get(app, 0))

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.run_once(time.monotonic())
            except Exception as err:  # the loop must go on
                log.exception("autoscaler pass failed: %s", err)

    def run_once(self, now: float) -> None:
        apps = {s.name: s for s in self.store.list() if s.app.spec.autoscale is not None}
        for name in [n for n in self.states if n not in apps]:
            del self.states[name]
            self.last.pop(name, None)
        for stored in apps.values():
            self._one(stored, now)

    def metrics(self, name: str, now: float) -> list[InstanceMetrics]:
        """CPU (millicores over the last interval) and memory of each running instance."""
        out = []
        for inst in self.reconciler.serving(name):
            prober = inst.prober
            ready = inst.ready
            since = prober.ready_since if prober is not None else None
            warm = ready and since is not None and now - since >= self.warmup
            cpu = memory = None
            if ready:
                try:
                    stats = self.engine.stats(inst.id)
                    cpu = float(stats["cpu_percent"]) * 10.0  # 100 % = one core = 1000m
                    memory = float(stats["memory_bytes"])
                except (FlatstackError, KeyError):
                    pass
            out.append(InstanceMetrics(inst.name, ready, warm, cpu, memory))
        return out

    def _one(self, stored: StoredApp, now: float) -> None:
        spec = stored.app.spec
        assert spec.autoscale is not None
        state = self.states.get(stored.name, AutoscalerState())
        requests = spec.resources.effective_requests if spec.resources else None
        decision = decide(spec.autoscale, state, now, stored.replicas,
                          self.metrics(stored.name, now), requests,
                          overload_replicas=self._overload.pop(stored.name, None))
        self.states[stored.name] = decision.state
        self.last[stored.name] = decision
        if decision.desired != stored.replicas:
            self.store.set_replicas(stored.name, decision.desired, reason=decision.reason,
                                    message=decision.message, numbers=decision.numbers())
            self.reconciler.wake.set()
