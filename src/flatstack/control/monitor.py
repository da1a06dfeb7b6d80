"""The SLA monitor: measures every ready instance from outside and acts on ``sla.py``.

Figures per instance over ``sla.window``: synthetic requests (``sla.synthetic``: an
httpGet at ``ratePerSecond``, from a thread per instance) or, without them, the probe
timings (a failed probe counts as an error). Every ``period`` seconds each app with an
``sla`` is judged (``sla.evaluate``):

- ``eject``: the instance leaves the endpoint at once (``Reconciler.eject``, event
  ``Ejected`` with the numbers), a replacement starts, and the ejected one is removed
  when the replacement is ready; its time counts against the replacement budget;
- ``overload``: an autoscaled app gets the proposed count (``Autoscaler.request_overload``);
  a fixed-size app gets an ``Overloaded`` event;
- ``deferred`` outliers (budget spent): an ``EjectionDeferred`` event.

Repeated events of the same kind are kept to one per window.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from collections import deque
from typing import Any

from flatstack.control import sla as rules
from flatstack.control._loop import BackgroundLoop
from flatstack.control.models import SLA
from flatstack.control.probes import Target
from flatstack.control.reconciler import Instance, Reconciler
from flatstack.control.store import Store, StoredApp

log = logging.getLogger("flatstack.control")


class Sampler:
    """Synthetic GETs to one instance at a fixed rate; (time, ms, error) samples."""

    def __init__(self, inst: Instance, sla: SLA, ports: dict[str, int]) -> None:
        assert sla.synthetic is not None
        self.inst = inst
        self.get = sla.synthetic.http_get
        self.interval = 1.0 / sla.synthetic.rate_per_second
        self.timeout = max(1.0, 4 * (sla.latency_p99_ms or 250) / 1000)
        self.target = Target(inst.ip, inst.id, ports)
        self.samples: deque[tuple[float, float, bool]] = deque(maxlen=100_000)
        self._stop = threading.Event()
        threading.Thread(target=self._loop, name=f"sla-{inst.name}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            start = time.monotonic()
            error = False
            try:
                conn = http.client.HTTPConnection(self.target.ip,
                                                  self.target.port(self.get.port),
                                                  timeout=self.timeout)
                try:
                    conn.request("GET", self.get.path, headers={"User-Agent": "flatstack-sla"})
                    resp = conn.getresponse()
                    resp.read()
                    error = resp.status >= 500
                finally:
                    conn.close()
            except (OSError, http.client.HTTPException):
                error = True
            self.samples.append((time.monotonic(), (time.monotonic() - start) * 1e3, error))
            next_at = max(next_at + self.interval, time.monotonic())
            self._stop.wait(next_at - time.monotonic())


class SlaMonitor(BackgroundLoop):
    """Judges every app with an ``sla`` each ``period`` seconds."""

    def __init__(self, store: Store, reconciler: Reconciler, autoscaler: Any = None, *,
                 period: float = 1.0) -> None:
        self.store = store
        self.reconciler = reconciler
        self.autoscaler = autoscaler
        self.period = period
        self.samplers: dict[str, Sampler] = {}
        self.replacements: dict[str, list[float]] = {}
        self.last: dict[str, rules.SlaDecision] = {}
        self._said: dict[tuple[str, str], float] = {}
        BackgroundLoop.__init__(self)

    thread_name = "sla"

    def stop(self) -> None:
        self._join()
        for sampler in self.samplers.values():
            sampler.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.run_once(time.monotonic())
            except Exception as err:  # the loop must go on
                log.exception("SLA pass failed: %s", err)

    def run_once(self, now: float) -> None:
        apps = [s for s in self.store.list() if s.app.spec.sla is not None]
        live: set[str] = set()
        for stored in apps:
            instances = self.reconciler.serving(stored.name)
            live.update(i.id for i in instances)
            self._one(stored, instances, now)
        for cid in [c for c in self.samplers if c not in live]:
            self.samplers.pop(cid).stop()

    def window(self, stored: StoredApp, inst: Instance, now: float) -> rules.InstanceWindow:
        """One instance's figures over the SLA window (synthetic, else probe timings)."""
        sla = stored.app.spec.sla
        assert sla is not None
        since = now - float(sla.window)
        if sla.synthetic is not None:
            sampler = self.samplers.get(inst.id)
            if sampler is None and inst.ready:
                ports = {p.name: p.container_port for p in stored.app.spec.ports if p.name}
                sampler = self.samplers[inst.id] = Sampler(inst, sla, ports)
            samples = [s for s in (sampler.samples if sampler else ()) if s[0] >= since]
        else:
            wall = time.time() - (now - since)
            timings = inst.prober.timings if inst.prober is not None else ()
            samples = [(t, sec * 1e3, not ok) for t, sec, ok in timings if t >= wall]
        return rules.summarize(inst.name, [s[1] for s in samples],
                               sum(1 for s in samples if s[2]), inst.ready)

    def _one(self, stored: StoredApp, instances: list[Instance], now: float) -> None:
        sla = stored.app.spec.sla
        assert sla is not None
        windows = [self.window(stored, i, now) for i in instances]
        done = self.replacements.setdefault(stored.name, [])
        decision = rules.evaluate(sla, windows, done, now)
        self.last[stored.name] = decision
        if decision.kind == "eject":
            for name in decision.eject:
                if self.reconciler.eject(stored.name, name, "Ejected",
                                         f"{name} ejected for its SLA: {decision.message}",
                                         numbers=decision.numbers()):
                    done.append(now)
            if decision.deferred:
                self._say(stored, "EjectionDeferred", decision, now)
        elif decision.kind == "overload" and decision.scale_out_to is not None:
            if stored.app.spec.autoscale is not None and self.autoscaler is not None:
                self.autoscaler.request_overload(stored.name, decision.scale_out_to)
            self._say(stored, "Overloaded", decision, now)

    def _say(self, stored: StoredApp, reason: str, decision: rules.SlaDecision,
             now: float) -> None:
        sla = stored.app.spec.sla
        assert sla is not None
        key = (stored.name, reason)
        if now - self._said.get(key, -1e18) < float(sla.window):
            return
        self._said[key] = now
        self.store.record_event(stored.name, reason, decision.message,
                                numbers=decision.numbers())
