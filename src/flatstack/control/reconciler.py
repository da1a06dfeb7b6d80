"""The replica controller: level-triggered, desired (the store) against observed (the
engine's containers labelled ``flatstack.app`` / ``flatstack.generation``).

Each pass (every ``period`` seconds, and at once when a probe flips readiness or fails):

- containers of apps no longer in the store are stopped and removed;
- an exited instance is classified (``OOMKilled``, ``Crashed`` with its exit code,
  ``Completed``), recorded as an event, removed and replaced per the restart policy,
  after an exponential back-off (none for the first failure, then 1 s doubling to
  5 min; reset once an instance has run for ``HEALTHY_AFTER`` s). From the third
  failure in a row a ``CrashLoopBackOff`` (or ``OOMLoop``) event names the reason and
  the next retry time;
- an instance whose liveness (or startup) probe failed is taken out of the endpoint,
  killed and replaced (``LivenessFailed``);
- missing instances are created, extras removed (unready ones first); instances of an
  older generation are replaced by a rolling update within ``maxSurge`` /
  ``maxUnavailable`` (``Recreate``: all at once);
- the endpoint rules are rebuilt from the ready set.

Creation and removal run on a small thread pool, so a slow ``stop`` never holds the loop.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flatstack.control._loop import BackgroundLoop
from flatstack.control.endpoint import Backend, Endpoints, Port
from flatstack.control.models import App
from flatstack.control.probes import Prober, Target
from flatstack.control.store import Store, StoredApp
from flatstack.errors import FlatstackError

log = logging.getLogger("flatstack.control")

LABEL_APP = "flatstack.app"
LABEL_GENERATION = "flatstack.generation"
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 300.0
HEALTHY_AFTER = 60.0
LOOP_AFTER = 3
DRAIN = 1.0
DEFAULT_GRACE = 30.0


@dataclass
class Instance:
    """One container of an app, as the controller knows it."""

    id: str
    name: str
    app: str
    generation: int
    ip: str
    started: float
    prober: Prober | None = None
    doomed: str = ""          # why it is being removed ("" while it serves)
    ejected: str = ""         # out of the endpoint (SLA); removed once replaced
    exited: dict[str, Any] | None = None

    @property
    def ready(self) -> bool:
        if self.doomed or self.ejected or self.exited is not None:
            return False
        return self.prober.ready if self.prober is not None else True

    def to_dict(self) -> dict[str, Any]:
        probes = self.prober.state() if self.prober is not None else {}
        state = "exited" if self.exited else ("terminating" if self.doomed else (
            "ejected" if self.ejected else "running"))
        return {"name": self.name, "id": self.id, "app": self.app,
                "generation": self.generation, "ip": self.ip, "state": state,
                "ready": self.ready, "age_s": round(time.monotonic() - self.started, 1),
                "probes": probes, "reason": self.doomed or self.ejected or None,
                "exit_code": (self.exited or {}).get("exit_code")}


@dataclass
class Backoff:
    """Consecutive failures of an app's instances and when the next start may happen."""

    failures: int = 0
    not_before: float = 0.0
    reasons: list[str] = field(default_factory=list)

    def fail(self, reason: str, now: float, ran: float) -> float:
        if ran >= HEALTHY_AFTER:
            self.failures, self.reasons = 0, []
        self.failures += 1
        self.reasons = [*self.reasons[-(LOOP_AFTER - 1):], reason]
        delay = 0.0 if self.failures == 1 else min(
            BACKOFF_FIRST * 2 ** (self.failures - 2), BACKOFF_MAX)
        self.not_before = max(self.not_before, now + delay)
        return delay


def clock_text(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S")


def run_options(app: App, generation: int, name: str) -> Any:
    """The engine's RunOptions for one instance of ``app``."""
    from flatstack.engine.containers import RunOptions

    spec = app.spec
    limits = spec.resources.limits if spec.resources else None
    cpu = limits.cpu_millis if limits else None
    return RunOptions(
        image=spec.image, entrypoint=list(spec.command) if spec.command is not None else None,
        command=list(spec.args) if spec.args is not None else None, name=name,
        env=[f"{e.name}={e.value}" for e in spec.env], workdir=spec.working_dir,
        memory=limits.memory_bytes if limits else None,
        cpus=None if cpu is None else cpu / 1000, network="bridge",
        labels={LABEL_APP: app.name, LABEL_GENERATION: str(generation),
                **{f"flatstack.label.{k}": v for k, v in app.metadata.labels.items()}})


class Reconciler(BackgroundLoop):
    """Keeps every app's instances and endpoint in line with the store."""

    def __init__(self, store: Store, engine: Any, endpoints: Endpoints | None, *,
                 period: float = 0.5, workers: int = 4) -> None:
        self.store = store
        self.engine = engine
        self.endpoints = endpoints
        self.period = period
        self.instances: dict[str, Instance] = {}
        self.backoff: dict[str, Backoff] = {}
        self.pending: dict[str, int] = {}
        self.starting: set[str] = set()
        self._removals: list[tuple[Instance, float, float]] = []
        self._first_run = threading.Lock()
        self._ran_once = False
        self._gone: dict[str, float] = {}   # removed by us: a stale listing must not revive
        self.wake = threading.Event()
        self._lock = threading.RLock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile")
        BackgroundLoop.__init__(self)
        self._reported: dict[str, str] = {}

    # -- lifecycle ---------------------------------------------------------------------
    thread_name = "control"

    def stop(self) -> None:
        """Stop the loop and the probers; instances and rules stay (they keep serving)."""
        self._stop.set()
        self.wake.set()
        self._join()
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for inst in self.instances.values():
                if inst.prober is not None:
                    inst.prober.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.wake.clear()
            try:
                self.run_once()
            except Exception as err:  # the loop must go on
                log.exception("reconcile pass failed: %s", err)
            self.wake.wait(self.period)

    # -- queries -----------------------------------------------------------------------
    def snapshot(self, app: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [i.to_dict() for i in sorted(self.instances.values(),
                                                key=lambda i: (i.app, i.name))
                    if app is None or i.app == app]

    def ready(self, app: str) -> list[Instance]:
        with self._lock:
            return [i for i in self.instances.values() if i.app == app and i.ready]

    def serving(self, app: str) -> list[Instance]:
        """Running instances of ``app`` that are not being removed (ready or not)."""
        with self._lock:
            return [i for i in self.instances.values() if i.app == app and not i.doomed
                    and not i.ejected and i.exited is None]

    def eject(self, app: str, name: str, reason: str, message: str,
              numbers: dict[str, Any] | None = None) -> bool:
        """Take instance ``name`` out of the endpoint now; a replacement is started and
        the ejected instance is removed once the app has its ready count again."""
        with self._lock:
            found = [i for i in self.instances.values() if i.app == app and i.name == name
                     and not i.doomed and not i.ejected]
            if not found:
                return False
            found[0].ejected = reason
            apps = {s.name: s for s in self.store.list()}
            self._sync_endpoints(apps)  # out of traffic before anything else happens
        self.store.record_event(app, reason, message, instance=name, numbers=numbers)
        self.wake.set()
        return True

    # -- one pass ----------------------------------------------------------------------
    def run_once(self) -> None:
        apps = {s.name: s for s in self.store.list()}
        listed = time.monotonic()
        observed = [c for c in self.engine.list(all=True)
                    if (c.get("labels") or {}).get(LABEL_APP)]
        now = time.monotonic()
        with self._lock:
            seen = set()
            for info in observed:
                seen.add(info["id"])
                self._observe(info, apps.get(info["labels"][LABEL_APP]), now)
            for cid in [c for c, i in self.instances.items()  # registered before the listing
                        if c not in seen and not i.doomed and i.started < listed]:
                inst = self.instances.pop(cid)  # removed behind our back
                if inst.prober is not None:
                    inst.prober.stop()
            for stored in apps.values():
                self._converge(stored, now)
            for name in [n for n in self.backoff if n not in apps]:
                del self.backoff[name]
            for cid in [c for c, at in self._gone.items() if now - at > 300]:
                del self._gone[cid]
            self._sync_endpoints(apps)
            removals, self._removals = self._removals, []
        for inst, grace, drain in removals:  # only once they are out of the endpoint
            self._pool.submit(self._remove, inst, grace, drain)

    def _observe(self, info: dict[str, Any], stored: StoredApp | None, now: float) -> None:
        cid = info["id"]
        inst = self.instances.get(cid)
        if inst is None and cid in self._gone:
            return
        if inst is None and info["name"] in self.starting:
            return  # _start_one registers it when run() returns
        if inst is not None and not inst.ip:
            inst.ip = (info.get("network") or {}).get("ip") or ""
        if inst is None:
            labels = info.get("labels") or {}
            try:
                generation = int(labels.get(LABEL_GENERATION, "0"))
            except ValueError:
                generation = 0
            inst = Instance(cid, info["name"], labels[LABEL_APP], generation,
                            (info.get("network") or {}).get("ip") or "", now)
            self.instances[cid] = inst
            if stored is not None and info["state"] == "running":
                inst.prober = self._prober(stored.app, inst, adopted=True)
        if inst.doomed:
            return
        if stored is None:
            self._doom(inst, "AppDeleted", "", event=False)
            return
        if info["state"] == "exited" and inst.exited is None:
            self._exited(stored.app, inst, info, now)
        elif inst.prober is not None and inst.prober.failure and inst.exited is None:
            reason = "LivenessFailed" if inst.prober.started else "StartupFailed"
            delay = self._backoff(stored.name, reason, now, now - inst.started)
            self._doom(inst, reason, f"instance {inst.name}: {inst.prober.failure}; killed "
                       f"and replaced{self._retry_text(delay)}",
                       numbers={**inst.prober.failure_numbers,
                                "restarts": self.backoff[stored.name].failures,
                                "backoff_s": delay})

    def _exited(self, app: App, inst: Instance, info: dict[str, Any], now: float) -> None:
        inst.exited = info
        if inst.prober is not None:
            inst.prober.stop()
        code = info.get("exit_code")
        if info.get("oom_killed"):
            reason = "OOMKilled"
            limit = app.spec.resources.limits.memory if (
                app.spec.resources and app.spec.resources.limits) else None
            what = f"killed by the kernel's OOM killer (memory limit {limit or 'none'})"
        elif code == 0:
            reason, what = "Completed", "exited with code 0"
        else:
            reason, what = "Crashed", f"exited with code {code}"
        policy = app.spec.restart_policy
        keep = policy == "Never" or (policy == "OnFailure" and reason == "Completed")
        ran = now - inst.started
        numbers: dict[str, Any] = {"exit_code": code, "oom_killed": bool(info.get("oom_killed")),
                                   "ran_s": round(ran, 3)}
        if keep:
            self.store.record_event(app.name, reason, f"instance {inst.name} {what}; not "
                                    f"restarted (restartPolicy {policy})",
                                    instance=inst.name, numbers=numbers)
            return
        delay = self._backoff(app.name, reason, now, ran)
        numbers.update(restarts=self.backoff[app.name].failures, backoff_s=delay)
        self._doom(inst, reason, f"instance {inst.name} {what} after {ran:.1f} s; replaced"
                   f"{self._retry_text(delay)}", numbers=numbers)

    def _backoff(self, app: str, reason: str, now: float, ran: float) -> float:
        backoff = self.backoff.setdefault(app, Backoff())
        delay = backoff.fail(reason, now, ran)
        if backoff.failures >= LOOP_AFTER:
            loop = ("OOMLoop" if all(r == "OOMKilled" for r in backoff.reasons)
                    else "CrashLoopBackOff")
            at = time.time() + delay
            self.store.record_event(
                app, loop, f"{backoff.failures} failures in a row (last: {reason}; recent: "
                f"{', '.join(backoff.reasons)}); next start at {clock_text(at)} UTC "
                f"(in {delay:g} s)" + (": raise the memory limit" if loop == "OOMLoop" else ""),
                numbers={"failures": backoff.failures, "backoff_s": delay, "next_start": at,
                         "reason": reason})
        return delay

    @staticmethod
    def _retry_text(delay: float) -> str:
        return " now" if delay <= 0 else f" in {delay:g} s (back-off)"

    def _doom(self, inst: Instance, reason: str, message: str, *, event: bool = True,
              numbers: dict[str, Any] | None = None, grace: float = 0.0) -> None:
        """Take ``inst`` out of service now; once the pass has rebuilt the endpoint, it is
        stopped (after ``DRAIN`` s if it was serving, or was until it was ejected, and
        has a grace period: connections in flight finish) and removed in the
        background."""
        drain = min(DRAIN, grace) if (inst.ready or inst.ejected) and grace > 0 else 0.0
        inst.doomed = reason
        if inst.prober is not None:
            inst.prober.stop()
        if event:
            self.store.record_event(inst.app, reason, message, instance=inst.name,
                                    numbers=numbers)
        self._removals.append((inst, grace, drain))

    def _remove(self, inst: Instance, grace: float, drain: float = 0.0) -> None:
        try:
            if drain > 0:
                time.sleep(drain)
            if grace > 0 and inst.exited is None:
                with contextlib.suppress(FlatstackError):
                    self.engine.stop(inst.id, timeout=grace)
            self.engine.remove(inst.id, force=True)
        except FlatstackError as err:
            if "no such container" not in str(err).lower() and "not found" not in str(
                    err).lower():
                log.warning("removing %s: %s", inst.name, err)
                inst.doomed = ""  # retried by the next pass
                inst.exited = None
                return
        with self._lock:
            self.instances.pop(inst.id, None)
            self._gone[inst.id] = time.monotonic()
        self.wake.set()

    # -- converge one app --------------------------------------------------------------
    def _converge(self, stored: StoredApp, now: float) -> None:
        name, app, generation = stored.name, stored.app, stored.generation
        mine = [i for i in self.instances.values() if i.app == name and not i.doomed]
        kept = [i for i in mine if i.exited is not None]          # restartPolicy said keep
        ejected = [i for i in mine if i.ejected and i.exited is None]
        mine = [i for i in mine if not i.ejected]
        current = [i for i in mine if i.generation == generation and i.exited is None]
        old = [i for i in mine if i.generation != generation and i.exited is None]
        grace = float(DEFAULT_GRACE if app.spec.termination_grace_period_seconds is None
                      else app.spec.termination_grace_period_seconds)
        if ejected and sum(1 for i in current + old if i.ready) >= stored.replicas:
            for inst in ejected:  # requests it took before it was ejected still finish
                self._doom(inst, "Replaced", f"ejected instance {inst.name} stopped: its "
                           "replacement is ready", grace=grace)
        pending = self.pending.get(name, 0)
        want = stored.replicas
        rolling = app.spec.rolling_update
        have = len(current) + len(kept) + pending
        if old and rolling is None:  # Recreate: everything old goes first
            for inst in old:
                self._doom(inst, "Replaced", f"instance {inst.name} (generation "
                           f"{inst.generation}) stopped for generation {generation} "
                           "(Recreate)", grace=grace)
            return
        surge, unavailable = rolling.resolve(want) if rolling else (0, 0)
        if old:
            total = have + len(old)
            room = max(0, want + surge - total)
            self._create(stored, min(room, max(0, want - have)), now)
            ready = sum(1 for i in current + old if i.ready)
            removable = ready - (want - unavailable)
            # unready old ones first; never below the availability floor for ready ones
            for inst in sorted(old, key=lambda i: i.ready):
                if not inst.ready or removable > 0:
                    if inst.ready:
                        removable -= 1
                    self._doom(inst, "Replaced", f"instance {inst.name} (generation "
                               f"{inst.generation}) replaced by generation {generation}",
                               grace=grace)
            return
        if have < want:
            self._create(stored, want - have, now)
        elif len(current) > want:
            extra = sorted(current, key=lambda i: (i.ready, i.started), reverse=False)
            for inst in extra[: len(current) - want]:
                self._doom(inst, "Removed", f"instance {inst.name} removed "
                           f"({len(current)} -> {want} replicas)", grace=grace)

    def _create(self, stored: StoredApp, count: int, now: float) -> None:
        if count <= 0:
            return
        backoff = self.backoff.get(stored.name)
        if backoff is not None and now < backoff.not_before:
            return
        self.pending[stored.name] = self.pending.get(stored.name, 0) + count
        for _ in range(count):
            self._pool.submit(self._start_one, stored)

    def _start_one(self, stored: StoredApp) -> None:
        try:
            self._start(stored)
        except Exception:  # a bug: keep the loop's counters right and say so
            log.exception("starting an instance of %s", stored.name)

    def _start(self, stored: StoredApp) -> None:
        app, name = stored.app, stored.name
        inst_name = f"{name}-{stored.generation}-{secrets.token_hex(3)}"
        with self._lock:
            self.starting.add(inst_name)
        info: dict[str, Any] | None = None
        try:
            info = self._run(run_options(app, stored.generation, inst_name))
        except Exception as err:  # an engine refusal is an event, then a back-off
            with self._lock:
                delay = self._backoff(name, "CreateFailed", time.monotonic(), 0.0)
            self.store.record_event(name, "CreateFailed", f"cannot start an instance: {err}"
                                    f"{self._retry_text(delay)}", instance=inst_name,
                                    numbers={"backoff_s": delay})
            return
        finally:
            with self._lock:
                self.starting.discard(inst_name)
                self.pending[name] -= 1
                if info is not None:
                    inst = Instance(info["id"], info["name"], name, stored.generation,
                                    (info.get("network") or {}).get("ip") or "",
                                    time.monotonic())
                    inst.prober = self._prober(app, inst)
                    self.instances[inst.id] = inst
        self.store.record_event(name, "Started", f"instance {inst.name} started (generation "
                                f"{stored.generation}, {inst.ip})", instance=inst.name,
                                numbers={"generation": stored.generation})
        self.wake.set()

    def _run(self, opts: Any) -> dict[str, Any]:
        """``Engine.run``; the first one alone (concurrent first runs race while the engine
        writes the default network's configuration)."""
        if self._ran_once:
            return self.engine.run(opts)  # type: ignore[no-any-return]
        with self._first_run:
            info = self.engine.run(opts)
            self._ran_once = True
            return info  # type: ignore[no-any-return]

    def _prober(self, app: App, inst: Instance, adopted: bool = False) -> Prober:
        spec = app.spec
        target = Target(inst.ip, inst.id, {p.name: p.container_port for p in spec.ports
                                           if p.name}, self.engine)

        def failed(reason: str, message: str, numbers: dict[str, Any]) -> None:
            self.wake.set()

        return Prober(inst.name, target, startup=spec.startup_probe,
                      liveness=spec.liveness_probe, readiness=spec.readiness_probe,
                      changed=self.wake.set, failed=failed, adopted=adopted).start()

    # -- endpoints ---------------------------------------------------------------------
    def _sync_endpoints(self, apps: dict[str, StoredApp]) -> None:
        if self.endpoints is None:
            return
        wanted: dict[Port, list[Backend]] = {}
        for stored in apps.values():
            ready = [i for i in self.instances.values() if i.app == stored.name and i.ready
                     and i.ip]
            for port in stored.app.spec.ports:
                if port.host_port is None:
                    continue
                key = Port(stored.name, port.host_port, port.protocol)
                wanted[key] = [Backend(i.ip, port.container_port) for i in ready]
        try:
            self.endpoints.sync(wanted)
        except FlatstackError as err:
            text = str(err)
            if self._reported.get("endpoint") != text:
                self._reported["endpoint"] = text
                log.error("%s", text)


def wait_until(predicate: Callable[[], Any], timeout: float, step: float = 0.05) -> Any:
    """Poll ``predicate`` until it is truthy (returns its value) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)
