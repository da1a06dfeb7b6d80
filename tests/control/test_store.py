"""Desired state in SQLite on disk: idempotent apply, dry-run, WAL, threads, events."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flatstack.control.errors import AppNotFound, ScaleConflict, SpecError
from flatstack.control.kube import load_apps
from flatstack.control.models import App
from flatstack.control.store import DB_NAME, Store
from flatstack.control.validate import parse_app
from tests.control._support import app_doc, minimal, text


class Clock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[Store]:
    s = Store(tmp_path / "state", clock=clock)
    yield s
    s.close()


def _rows(path: Path, table: str) -> list[tuple[Any, ...]]:
    """Read the database file with a separate connection, as another process would."""
    db = sqlite3.connect(path)
    try:
        return db.execute(f"SELECT * FROM {table}").fetchall()
    finally:
        db.close()


def _with_image(app: App, image: str) -> App:
    data = app.to_dict()
    data["spec"]["image"] = image
    return parse_app(data)


def test_database_is_on_disk_in_wal_mode(store: Store, tmp_path: Path) -> None:
    store.apply(parse_app(app_doc()))
    path = tmp_path / "state" / DB_NAME
    assert store.path == path and path.is_file()
    assert store.journal_mode() == "wal"
    assert (tmp_path / "state" / f"{DB_NAME}-wal").exists()
    db = sqlite3.connect(path)
    try:  # WAL is a property of the file: a new connection sees it
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


def test_apply_is_idempotent(store: Store, clock: Clock, tmp_path: Path) -> None:
    app = parse_app(app_doc())
    first = store.apply(app)
    assert (first.action, first.generation) == ("created", 1)
    assert "+  image: localhost/flatstack-example:latest" in first.diff
    clock.now += 10
    again = store.apply(parse_app(app_doc()))
    assert (again.action, again.generation, again.diff) == ("unchanged", 1, "")
    stored = store.get("echo")
    assert stored.generation == 1 and stored.updated == 1000.0 and stored.app == app
    assert stored.replicas == 2  # minReplicas
    # The same spec spelt differently is still unchanged.
    doc = app_doc()
    doc["spec"]["resources"]["requests"]["cpu"] = "250m"
    doc["spec"]["sla"]["window"] = "20000ms"
    assert store.apply(parse_app(doc)).action == "unchanged"
    assert [e.reason for e in store.events()] == ["Created"]
    assert len(_rows(tmp_path / "state" / DB_NAME, "apps")) == 1


def test_changed_spec_is_configured_with_a_diff(store: Store, clock: Clock) -> None:
    app = parse_app(app_doc())
    store.apply(app)
    clock.now += 5
    result = store.apply(_with_image(app, "localhost/flatstack-example:v2"))
    assert (result.action, result.generation) == ("configured", 2)
    assert result.diff.startswith("--- app/echo (generation 1)\n+++ app/echo\n")
    changed = [line for line in result.diff.splitlines()
               if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert changed == ["-  image: localhost/flatstack-example:latest",
                       "+  image: localhost/flatstack-example:v2"]
    stored = store.get("echo")
    assert stored.generation == 2 and stored.updated == 1005.0 and stored.created == 1000.0
    event = store.events()[-1]
    assert (event.reason, event.numbers["generation"]) == ("Configured", 2)


def test_dry_run_writes_nothing(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "state" / DB_NAME
    app = parse_app(app_doc())
    created = store.apply(app, dry_run=True)
    assert (created.action, created.generation, created.dry_run) == ("created", 1, True)
    assert created.diff.startswith("--- /dev/null\n+++ app/echo\n")
    assert _rows(path, "apps") == [] and _rows(path, "events") == []
    with pytest.raises(AppNotFound):
        store.get("echo")

    store.apply(app)
    before = (_rows(path, "apps"), _rows(path, "events"))
    changed = store.apply(_with_image(app, "other:1"), dry_run=True)
    assert (changed.action, changed.generation) == ("configured", 2)
    assert "+  image: other:1" in changed.diff
    assert (_rows(path, "apps"), _rows(path, "events")) == before
    assert store.get("echo").app == app


def test_bad_file_writes_nothing(store: Store, tmp_path: Path) -> None:
    source = text("app.yaml") + "---\n" + text("web-deployment-hpa.yaml").replace(
        "containerPort: 8080", "containerPort: 80800")
    with pytest.raises(SpecError, match=r"documents\[1\]\.spec\.template\.spec\.containers\[0\]"
                                        r"\.ports\[0\]\.containerPort"):
        store.apply_all(load_apps(source))
    assert _rows(tmp_path / "state" / DB_NAME, "apps") == []


def test_apply_all_is_all_or_nothing(tmp_path: Path) -> None:
    calls = []

    def failing_clock() -> float:
        calls.append(1)
        if len(calls) == 2:  # while writing the second app
            raise OSError("disk went away")
        return 1.0

    store = Store(tmp_path, clock=failing_clock)
    apps = load_apps(text("app.yaml") + "---\n" + text("web-deployment-hpa.yaml"))
    with pytest.raises(OSError, match="disk went away"):
        store.apply_all(apps)
    assert store.list() == [] and store.events() == []
    assert [r.action for r in store.apply_all(apps)] == ["created", "created"]
    assert [s.name for s in store.list()] == ["echo", "web"]
    with pytest.raises(ValueError, match="twice"):
        store.apply_all([apps[0], apps[0]])
    store.close()


def test_state_survives_a_new_store(tmp_path: Path) -> None:
    first = Store(tmp_path)
    first.apply_all(load_apps(text("web-deployment-hpa.yaml")))
    first.close()
    second = Store(tmp_path)
    stored = second.get("web")
    assert stored.generation == 1 and stored.replicas == 3
    assert stored.app.spec.autoscale is not None
    second.close()


def test_delete(store: Store) -> None:
    store.apply(parse_app(app_doc()))
    gone = store.delete("echo", dry_run=True)
    assert gone.name == "echo" and store.get("echo")
    store.delete("echo")
    with pytest.raises(AppNotFound, match="app 'echo' does not exist"):
        store.get("echo")
    with pytest.raises(AppNotFound):
        store.delete("echo")
    assert [e.reason for e in store.events(app="echo")] == ["Created", "Deleted"]
    assert store.apply(parse_app(app_doc())).action == "created"  # a fresh generation 1


def test_scale_fixed_and_autoscaled(store: Store) -> None:
    store.apply(parse_app(minimal(replicas=2)))
    result = store.scale("web", 4)
    assert (result.action, result.generation) == ("configured", 2)
    assert store.get("web").replicas == 4 and store.get("web").app.spec.replicas == 4
    assert "+  replicas: 4" in result.diff
    store.apply(parse_app(app_doc()))
    with pytest.raises(ScaleConflict, match="autoscaled"):
        store.scale("echo", 5)
    with pytest.raises(AppNotFound):
        store.scale("nope", 1)


def test_autoscaler_count_is_clamped_and_kept(store: Store) -> None:
    app = parse_app(app_doc())  # autoscale 2..8
    store.apply(app)
    assert store.set_replicas("echo", 5, reason="ScaledUp", message="cpu") == 5
    assert store.set_replicas("echo", 50, reason="ScaledUp", message="cpu") == 8
    event = store.events()[-1]
    assert (event.reason, event.numbers["from"], event.numbers["to"]) == ("ScaledUp", 5, 8)
    # A new spec keeps the autoscaler's count, clamped into the new range.
    doc = app.to_dict()
    doc["spec"]["autoscale"]["maxReplicas"] = 6
    store.apply(parse_app(doc))
    assert store.get("echo").replicas == 6 and store.get("echo").generation == 2
    store.apply(parse_app(minimal(replicas=1)))
    with pytest.raises(ScaleConflict):
        store.set_replicas("web", 3, reason="x", message="y")


def test_events_filters(store: Store, clock: Clock) -> None:
    for i in range(5):
        clock.now = 2000.0 + i
        store.record_event("a" if i % 2 == 0 else "b", "Probe", f"event {i}",
                           instance=f"a-{i}", numbers={"latencyMs": i * 1.5})
    events = store.events()
    assert [e.message for e in events] == [f"event {i}" for i in range(5)]
    assert events[1].to_dict() == {"id": 2, "time": 2001.0, "app": "b", "instance": "a-1",
                                   "reason": "Probe", "message": "event 1",
                                   "numbers": {"latencyMs": 1.5}}
    assert [e.message for e in store.events(app="a")] == ["event 0", "event 2", "event 4"]
    assert [e.message for e in store.events(since=2003.0)] == ["event 3", "event 4"]
    assert [e.message for e in store.events(after_id=3)] == ["event 3", "event 4"]
    assert [e.message for e in store.events(limit=2)] == ["event 3", "event 4"]
    assert [e.message for e in store.events(app="b", since=2002.0)] == ["event 3"]


def test_concurrent_applies_from_threads(tmp_path: Path) -> None:
    store = Store(tmp_path)
    base = parse_app(app_doc())
    same_results: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(12)

    def same() -> None:  # everyone applies the identical spec
        barrier.wait()
        same_results.append(store.apply(base).action)

    def changing(i: int) -> None:  # everyone applies a different image to one app
        barrier.wait()
        for j in range(5):
            store.apply(_with_image(parse_app(minimal()), f"img:{i}-{j}"))

    def reader() -> None:
        barrier.wait()
        for _ in range(50):
            store.list()
            store.events(limit=5)

    def guard(fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=guard, args=(same,)) for _ in range(6)]
    threads += [threading.Thread(target=guard, args=(changing, i)) for i in range(4)]
    threads += [threading.Thread(target=guard, args=(reader,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(same_results) == ["created"] + ["unchanged"] * 5
    assert store.get("echo").generation == 1
    web = store.get("web")
    assert web.generation == 20  # 4 threads x 5 distinct images, each one a new generation
    reasons = [e.reason for e in store.events(app="web")]
    assert reasons == ["Created"] + ["Configured"] * 19
    assert [e.numbers["generation"] for e in store.events(app="web")] == list(range(1, 21))
    store.close()


def test_host_port_clash_between_apps_is_refused(store: Store, tmp_path: Path) -> None:
    store.apply(parse_app(app_doc()))  # echo has host port 18080
    other = minimal(ports=[{"containerPort": 80, "hostPort": 18080}])
    for dry_run in (True, False):
        with pytest.raises(SpecError, match=r"^spec.ports\[0\].hostPort: app 'web': host port "
                                            r"18080/TCP is already the endpoint of app 'echo'"):
            store.apply(parse_app(other), dry_run=dry_run)
    assert [a.name for a in store.list()] == ["echo"]
    # UDP on the same number is another port; and an app may keep its own port.
    other["spec"]["ports"][0]["protocol"] = "UDP"
    assert store.apply(parse_app(other)).action == "created"
    assert store.apply(_with_image(parse_app(app_doc()), "v2:1")).action == "configured"
