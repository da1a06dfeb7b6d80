"""Desired state and events in SQLite (WAL) under the state directory.

``apps`` holds one row per app: the canonical spec JSON, a ``generation`` bumped only
when the spec changes, and ``replicas``, the replica count the controllers work towards
(the spec's for a fixed app; the autoscaler's, kept within ``minReplicas..maxReplicas``,
for an autoscaled one). ``events`` records every decision with its reason and numbers.

Every write is one ``BEGIN IMMEDIATE`` transaction, so applying a multi-document file is
all or nothing and concurrent applies of the same app serialise. Each thread gets its
own connection; the store object may be shared between threads.
"""

from __future__ import annotations

import difflib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from flatstack.control.errors import AppNotFound, FieldError, ScaleConflict, SpecError
from flatstack.control.models import App
from flatstack.control.validate import parse_app

DB_NAME = "control.db"
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS apps (
    name TEXT PRIMARY KEY,
    generation INTEGER NOT NULL,
    spec TEXT NOT NULL,
    replicas INTEGER NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    app TEXT NOT NULL,
    instance TEXT,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    numbers TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_app_time ON events (app, time);
CREATE INDEX IF NOT EXISTS events_time ON events (time);
"""

Action = Literal["created", "configured", "unchanged"]


@dataclass(frozen=True)
class StoredApp:
    """An app as the desired state holds it."""

    app: App
    generation: int
    replicas: int
    created: float
    updated: float

    @property
    def name(self) -> str:
        return self.app.name


@dataclass(frozen=True)
class ApplyResult:
    """What ``apply`` did (or, with ``dry_run``, would do) to one app."""

    name: str
    action: Action
    generation: int
    diff: str
    dry_run: bool = False


@dataclass(frozen=True)
class Event:
    """One decision or observation, with the numbers behind it."""

    id: int
    time: float
    app: str
    reason: str
    message: str
    instance: str | None = None
    numbers: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "time": self.time, "app": self.app, "instance": self.instance,
                "reason": self.reason, "message": self.message, "numbers": dict(self.numbers)}


def spec_json(app: App) -> str:
    """The canonical JSON stored for an app; equal specs give equal text."""
    return json.dumps(app.to_dict(), sort_keys=True, separators=(",", ":"))


def spec_diff(name: str, old: App | None, new: App | None, old_generation: int = 0) -> str:
    """Unified diff of the YAML of two specs (empty when they are equal)."""
    def lines(app: App | None) -> list[str]:
        if app is None:
            return []
        return yaml.safe_dump(app.to_dict(), sort_keys=False).splitlines(keepends=True)

    before = f"app/{name} (generation {old_generation})" if old else "/dev/null"
    after = f"app/{name}" if new else "/dev/null"
    return "".join(difflib.unified_diff(lines(old), lines(new), before, after))


def _replicas_for(app: App, current: int | None) -> int:
    spec = app.spec
    if spec.autoscale is None:
        return spec.initial_replicas
    if current is None:
        return spec.initial_replicas
    return min(max(current, spec.autoscale.min_replicas), spec.autoscale.max_replicas)


class Store:
    """The control plane's desired state: apps and events in ``<state_dir>/control.db``."""

    def __init__(self, state_dir: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(state_dir) / DB_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        db = self._db()
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: schema {version} is newer than this flatstack")
        db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION};"
                         " COMMIT;")

    # ------------------------------------------------------------------ connections

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0,
                                 check_same_thread=False)  # used by one thread; closed by any
            db.execute("PRAGMA busy_timeout = 30000")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise RuntimeError(f"{self.path}: cannot use WAL journal mode (got {mode})")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA foreign_keys = ON")
            self._local.db = db
            with self._lock:
                self._all.append(db)
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def journal_mode(self) -> str:
        """The database's journal mode (``wal``)."""
        return str(self._db().execute("PRAGMA journal_mode").fetchone()[0])

    def close(self) -> None:
        """Close every thread's connection (call when no thread uses the store any more)."""
        with self._lock:
            for db in self._all:
                db.close()
            self._all.clear()
        self._local = threading.local()

    # ------------------------------------------------------------------ apps

    def apply(self, app: App, *, dry_run: bool = False) -> ApplyResult:
        """Make ``app`` the desired state: created, configured or unchanged (idempotent)."""
        return self.apply_all([app], dry_run=dry_run)[0]

    def apply_all(self, apps: Sequence[App], *, dry_run: bool = False) -> list[ApplyResult]:
        """Apply several apps in one transaction: all are applied or none.

        With ``dry_run`` nothing is written; the results carry the diff that applying
        would make.
        """
        names = [a.name for a in apps]
        if len(set(names)) != len(names):
            raise ValueError("the same app name appears twice")
        if dry_run:
            db = self._db()
            _raise_port_clashes(db, apps)
            return [self._apply_one(db, app, dry_run=True) for app in apps]
        with self._write() as db:
            _raise_port_clashes(db, apps)
            return [self._apply_one(db, app, dry_run=False) for app in apps]

    def _apply_one(self, db: sqlite3.Connection, app: App, *, dry_run: bool) -> ApplyResult:
        text = spec_json(app)
        row = db.execute("SELECT generation, spec, replicas FROM apps WHERE name = ?",
                         (app.name,)).fetchone()
        now = self._clock()
        if row is None:
            result = ApplyResult(app.name, "created", 1, spec_diff(app.name, None, app), dry_run)
            if not dry_run:
                db.execute("INSERT INTO apps VALUES (?, 1, ?, ?, ?, ?)",
                           (app.name, text, _replicas_for(app, None), now, now))
                self._event(db, now, app.name, "Created", "app created (generation 1)",
                            numbers={"generation": 1, "replicas": app.spec.initial_replicas})
            return result
        generation, old_text, replicas = row
        if old_text == text:
            return ApplyResult(app.name, "unchanged", generation, "", dry_run)
        old = parse_app(json.loads(old_text))
        diff = spec_diff(app.name, old, app, generation)
        result = ApplyResult(app.name, "configured", generation + 1, diff, dry_run)
        if not dry_run:
            new_replicas = _replicas_for(app, replicas)
            db.execute("UPDATE apps SET generation = ?, spec = ?, replicas = ?, updated = ? "
                       "WHERE name = ?", (generation + 1, text, new_replicas, now, app.name))
            self._event(db, now, app.name, "Configured",
                        f"spec changed (generation {generation} -> {generation + 1})",
                        numbers={"generation": generation + 1, "replicas": new_replicas})
        return result

    def get(self, name: str) -> StoredApp:
        """The stored app called ``name``; raise AppNotFound."""
        row = self._db().execute(
            "SELECT spec, generation, replicas, created, updated FROM apps WHERE name = ?",
            (name,)).fetchone()
        if row is None:
            raise AppNotFound(name)
        return _stored(row)

    def list(self) -> list[StoredApp]:
        """Every stored app, by name."""
        rows = self._db().execute(
            "SELECT spec, generation, replicas, created, updated FROM apps ORDER BY name")
        return [_stored(row) for row in rows]

    def delete(self, name: str, *, dry_run: bool = False) -> StoredApp:
        """Remove an app from the desired state (its events stay); raise AppNotFound."""
        if dry_run:
            return self.get(name)
        with self._write() as db:
            row = db.execute("SELECT spec, generation, replicas, created, updated FROM apps "
                             "WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise AppNotFound(name)
            db.execute("DELETE FROM apps WHERE name = ?", (name,))
            self._event(db, self._clock(), name, "Deleted",
                        f"app deleted (generation {row[1]})", numbers={"generation": row[1]})
        return _stored(row)

    def scale(self, name: str, replicas: int) -> ApplyResult:
        """``flatstack scale``: set ``spec.replicas`` of a fixed-size app (a new generation).

        An autoscaled app's count belongs to the autoscaler: raise ScaleConflict.
        """
        if replicas < 0:
            raise ValueError("replicas must be at least 0")
        with self._write() as db:
            row = db.execute("SELECT spec FROM apps WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise AppNotFound(name)
            app = parse_app(json.loads(row[0]))
            if app.spec.autoscale is not None:
                raise ScaleConflict(
                    f"app {name!r} is autoscaled ({app.spec.autoscale.min_replicas}-"
                    f"{app.spec.autoscale.max_replicas}); change minReplicas/maxReplicas")
            data = app.to_dict()
            data["spec"]["replicas"] = replicas
            return self._apply_one(db, parse_app(data), dry_run=False)

    def set_replicas(self, name: str, replicas: int, *, reason: str, message: str,
                     numbers: Mapping[str, Any] | None = None) -> int:
        """The autoscaler's write: the replica count to work towards, with its event.

        The count is clamped into the app's autoscale range; returns the stored count.
        """
        with self._write() as db:
            row = db.execute("SELECT spec, replicas FROM apps WHERE name = ?",
                             (name,)).fetchone()
            if row is None:
                raise AppNotFound(name)
            app = parse_app(json.loads(row[0]))
            if app.spec.autoscale is None:
                raise ScaleConflict(f"app {name!r} is not autoscaled")
            count = _replicas_for(app, replicas)
            if count != row[1]:
                now = self._clock()
                db.execute("UPDATE apps SET replicas = ?, updated = ? WHERE name = ?",
                           (count, now, name))
                self._event(db, now, name, reason, message,
                            numbers={"from": row[1], "to": count, **(numbers or {})})
        return count

    # ------------------------------------------------------------------ events

    def record_event(self, app: str, reason: str, message: str, *, instance: str | None = None,
                     numbers: Mapping[str, Any] | None = None,
                     at: float | None = None) -> Event:
        """Append an event (``numbers`` must be JSON-serialisable)."""
        with self._write() as db:
            return self._event(db, self._clock() if at is None else at, app, reason, message,
                               instance, numbers)

    def _event(self, db: sqlite3.Connection, at: float, app: str, reason: str, message: str,
               instance: str | None = None,
               numbers: Mapping[str, Any] | None = None) -> Event:
        nums = dict(numbers or {})
        cur = db.execute(
            "INSERT INTO events (time, app, instance, reason, message, numbers) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (at, app, instance, reason, message, json.dumps(nums, sort_keys=True)))
        return Event(int(cur.lastrowid or 0), at, app, reason, message, instance, nums)

    def event_counts(self) -> list[tuple[str, str, int, int]]:
        """``(app, reason, events, restarts)`` over every event kept (``/metrics``);
        ``restarts`` counts those whose numbers carry ``restarts`` (a failure replaced)."""
        sql = ("SELECT app, reason, COUNT(*), SUM(json_extract(numbers, '$.restarts') "
               "IS NOT NULL) FROM events GROUP BY app, reason ORDER BY app, reason")
        return [(r[0], r[1], int(r[2]), int(r[3] or 0)) for r in self._db().execute(sql)]

    def events(self, *, since: float | None = None, app: str | None = None,
               after_id: int | None = None, limit: int | None = None) -> list[Event]:
        """Events, oldest first: at or after ``since``, of ``app``, with id > ``after_id``.

        ``limit`` keeps the newest ``limit`` of them; ``after_id`` is for following.
        """
        where, args = [], []
        for cond, value in (("time >= ?", since), ("app = ?", app), ("id > ?", after_id)):
            if value is not None:
                where.append(cond)
                args.append(value)
        sql = "SELECT id, time, app, instance, reason, message, numbers FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self._db().execute(sql, args).fetchall()
        return [Event(r[0], r[1], r[2], r[4], r[5], r[3], json.loads(r[6]))
                for r in reversed(rows)]


def _raise_port_clashes(db: sqlite3.Connection, apps: Sequence[App]) -> None:
    """Refuse a host (endpoint) port that another app already has."""
    batch = {a.name for a in apps}
    taken: dict[tuple[int, str], str] = {}
    for name, text in db.execute("SELECT name, spec FROM apps"):
        if name not in batch:
            for port in json.loads(text)["spec"].get("ports", []):
                if "hostPort" in port:
                    taken[(port["hostPort"], port.get("protocol", "TCP"))] = name
    errors = []
    for app in apps:
        for i, port in enumerate(app.spec.ports):
            if port.host_port is None:
                continue
            key = (port.host_port, port.protocol)
            owner = taken.setdefault(key, app.name)
            if owner != app.name:
                errors.append(FieldError(
                    ("spec", "ports", i, "hostPort"),
                    f"app {app.name!r}: host port {port.host_port}/{port.protocol} is "
                    f"already the endpoint of app {owner!r}"))
    if errors:
        raise SpecError(errors)


def _stored(row: Sequence[Any]) -> StoredApp:
    spec, generation, replicas, created, updated = row
    return StoredApp(parse_app(json.loads(spec)), generation, replicas, created, updated)
