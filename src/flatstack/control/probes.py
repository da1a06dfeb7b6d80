"""Probes from outside the instance: httpGet and tcpSocket to its bridge address, exec
through the engine; startup first, then liveness and readiness, each on its own period.

One :class:`Prober` thread per instance. It reports through two callbacks: ``changed()``
when readiness flips (the endpoint follows it), and ``failed(reason, message, numbers)``
once, when the startup or liveness probe has failed ``failureThreshold`` times in a row
(the caller kills and replaces the instance). Every probe's duration is kept (the SLA
monitor's "probe timings").
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flatstack.control.models import ExecAction, HTTPGetAction, Probe, TCPSocketAction


@dataclass(frozen=True)
class Result:
    """One probe: passed or not, how long it took, why it failed."""

    ok: bool
    seconds: float
    message: str = ""


@dataclass
class Target:
    """Where an instance is: bridge address, named ports, engine container id."""

    ip: str
    container: str
    ports: Mapping[str, int] = field(default_factory=dict)
    engine: Any = None

    def port(self, value: int | str) -> int:
        return value if isinstance(value, int) else int(self.ports[value])


def check(probe: Probe, target: Target) -> Result:
    """Run ``probe`` once against ``target`` within its timeout."""
    handler = probe.handler
    timeout = float(probe.timeout_seconds)
    start = time.monotonic()
    try:
        if isinstance(handler, HTTPGetAction):
            message = _http(handler, target, timeout)
        elif isinstance(handler, TCPSocketAction):
            with socket.create_connection((target.ip, target.port(handler.port)), timeout):
                message = ""
        elif isinstance(handler, ExecAction):
            message = _exec(handler, target, timeout)
        else:  # validation makes this unreachable
            message = "probe has no handler"
    except TimeoutError:
        message = f"timed out after {timeout:g} s"
    except OSError as err:
        message = (err.strerror or str(err)).lower()
    except Exception as err:  # an engine or protocol error is a failed probe
        message = str(err) or type(err).__name__
    return Result(not message, time.monotonic() - start, message)


def _http(handler: HTTPGetAction, target: Target, timeout: float) -> str:
    cls = http.client.HTTPSConnection if handler.scheme == "HTTPS" else http.client.HTTPConnection
    conn = cls(target.ip, target.port(handler.port), timeout=timeout)
    try:
        headers = {h.name: h.value for h in handler.http_headers}
        headers.setdefault("User-Agent", "flatstack-probe")
        conn.request("GET", handler.path, headers=headers)
        resp = conn.getresponse()
        resp.read()
    finally:
        conn.close()
    if 200 <= resp.status < 400:
        return ""
    return f"HTTP {resp.status} from {handler.path}"


def _exec(handler: ExecAction, target: Target, timeout: float) -> str:
    from flatstack.engine.containers import ExecOptions

    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = target.engine.exec(target.container,
                                               ExecOptions(command=list(handler.command)))
        except Exception as err:  # reported as the probe's failure
            out["error"] = err

    worker = threading.Thread(target=run, name="probe-exec", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        return f"timed out after {timeout:g} s"
    if "error" in out:
        return str(out["error"])
    code, _, err = out["result"]
    return "" if code == 0 else f"exit code {code}: {err.decode(errors='replace').strip()[:200]}"


class _Track:
    """Schedule and counters of one probe."""

    def __init__(self, kind: str, probe: Probe, start: float) -> None:
        self.kind = kind
        self.probe = probe
        self.due = start + float(probe.initial_delay_seconds)
        self.successes = 0
        self.failures = 0
        self.last: Result | None = None

    def record(self, result: Result, begun: float) -> None:
        self.last = result
        if result.ok:
            self.successes, self.failures = self.successes + 1, 0
        else:
            self.successes, self.failures = 0, self.failures + 1
        self.due = begun + float(self.probe.period_seconds)


class Prober:
    """The probes of one instance, run by a daemon thread until :meth:`stop`."""

    def __init__(self, name: str, target: Target, *, startup: Probe | None,
                 liveness: Probe | None, readiness: Probe | None,
                 changed: Callable[[], None],
                 failed: Callable[[str, str, dict[str, Any]], None],
                 adopted: bool = False) -> None:
        self.name = name
        self.target = target
        now = time.monotonic()
        self.startup = _Track("startup", startup, now) if startup else None
        self.liveness = _Track("liveness", liveness, now) if liveness else None
        self.readiness = _Track("readiness", readiness, now) if readiness else None
        # an instance found running (the daemon restarted) keeps serving until a probe
        # says otherwise: the endpoint must not drop it while the probes catch up
        self.started = startup is None or adopted
        self.ready = adopted or (self.started and readiness is None)
        self.ready_since: float | None = now if self.ready else None
        self.failure: str | None = None
        self.failure_numbers: dict[str, Any] = {}
        self.timings: deque[tuple[float, float, bool]] = deque(maxlen=1000)
        self._changed = changed
        self._failed = failed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"probe-{name}", daemon=True)

    def start(self) -> Prober:
        if self.startup or self.liveness or self.readiness:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def state(self) -> dict[str, Any]:
        """Readiness and the last result of each probe (for ``describe``)."""
        out: dict[str, Any] = {"started": self.started, "ready": self.ready,
                               "failure": self.failure}
        for track in (self.startup, self.liveness, self.readiness):
            if track is not None and track.last is not None:
                out[track.kind] = {"ok": track.last.ok, "ms": round(track.last.seconds * 1e3, 2),
                                   "message": track.last.message,
                                   "failures": track.failures}
        return out

    def _loop(self) -> None:
        """Startup first; then liveness and readiness each in its own thread, so a probe
        that hangs until its timeout never delays the other."""
        if self.startup is not None and not self.started and not self._run(self.startup):
            return
        tracks = [t for t in (self.liveness, self.readiness) if t is not None]
        if len(tracks) == 2:
            threading.Thread(target=self._run, args=(tracks[1],), daemon=True,
                             name=f"probe-{self.name}-{tracks[1].kind}").start()
        if tracks:
            self._run(tracks[0])

    def _run(self, track: _Track) -> bool:
        """Probe on ``track``'s schedule; True when the startup probe passed."""
        while not self._stop.is_set() and self.failure is None:
            wait = track.due - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                return False
            begun = time.monotonic()
            result = check(track.probe, self.target)
            if self._stop.is_set() or self.failure is not None:
                return False
            now = time.monotonic()
            track.record(result, begun)  # the period runs from the probe's start
            self.timings.append((time.time(), result.seconds, result.ok))
            if not self._after(track, now):
                return False
            if track.kind == "startup" and self.started:
                return True
        return False

    def _after(self, track: _Track, now: float) -> bool:
        """Act on a probe's new counters; False once the instance has failed."""
        probe = track.probe
        if track.kind in ("startup", "liveness") and track.failures >= probe.failure_threshold:
            reason = "StartupFailed" if track.kind == "startup" else "LivenessFailed"
            assert track.last is not None
            self.failure = (f"{track.kind} probe failed {track.failures} times in a row "
                            f"(every {probe.period_seconds:g} s): {track.last.message}")
            if self.ready:
                self._set_ready(False)
            self.failure_numbers = {"failures": track.failures,
                                    "period_s": probe.period_seconds,
                                    "timeout_s": probe.timeout_seconds,
                                    "last_ms": round(track.last.seconds * 1e3, 2)}
            self._failed(reason, self.failure, self.failure_numbers)
            return False
        if track.kind == "startup" and track.successes >= 1:
            self.started = True
            for other in (self.liveness, self.readiness):
                if other is not None:
                    other.due = max(other.due, now)
            if self.readiness is None:
                self._set_ready(True)
        elif track.kind == "readiness":
            if track.successes >= probe.success_threshold:
                self._set_ready(True)
            elif track.failures >= probe.failure_threshold:
                self._set_ready(False)
        return True

    def _set_ready(self, ready: bool) -> None:
        if ready != self.ready:
            self.ready = ready
            self.ready_since = time.monotonic() if ready else None
            self._changed()
