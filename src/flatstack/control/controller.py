"""The control plane of one daemon: the desired-state store, the endpoints, the replica
controller, the autoscaler and the SLA monitor, started and stopped together
(``api/daemon.py``)."""

from __future__ import annotations

import os
from typing import Any

from flatstack.control.endpoint import Endpoints, tag_of
from flatstack.control.monitor import SlaMonitor
from flatstack.control.reconciler import Reconciler
from flatstack.control.scaler import Autoscaler
from flatstack.control.store import Store


class Controller:
    """Store + endpoints + reconciler over ``engine`` (its state directory holds the db)."""

    def __init__(self, engine: Any, *, state_dir: str | None = None, period: float = 0.5,
                 endpoints: bool = True, warmup: float = 3.0) -> None:
        state = os.path.abspath(state_dir or engine.state_dir)
        self.store = Store(state)
        self.endpoints = Endpoints(tag_of(state)) if endpoints else None
        self.reconciler = Reconciler(self.store, engine, self.endpoints, period=period)
        self.autoscaler = Autoscaler(self.store, engine, self.reconciler, warmup=warmup)
        self.monitor = SlaMonitor(self.store, self.reconciler, self.autoscaler)

    def start(self) -> Controller:
        self.reconciler.start()
        self.autoscaler.start()
        self.monitor.start()
        return self

    def stop(self) -> None:
        """Stop the loops; instances and endpoint rules keep serving."""
        self.monitor.stop()
        self.autoscaler.stop()
        self.reconciler.stop()
        self.store.close()

    def poke(self) -> None:
        """Run a pass now (after an apply, delete or scale)."""
        self.reconciler.wake.set()
