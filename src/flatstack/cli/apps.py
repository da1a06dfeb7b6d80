"""Apps: ``apply -f``, ``get apps|instances``, ``describe app``, ``delete app``, ``scale
app``, ``events [-f]``, all through the daemon's ``/v1/apps`` API."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from flatstack.api.client import path as _p
from flatstack.cli import _format as fmt
from flatstack.cli._api import client, errors
from flatstack.cli._params import Argument, Option, echo, to_typer
from flatstack.errors import ConfigError

_OUTPUTS = ("table", "wide", "json", "yaml")


def _dump(data: Any, output: str) -> None:
    if output == "json":
        echo(json.dumps(data, indent=2))
    else:
        import yaml

        echo(yaml.safe_dump(data, sort_keys=False).rstrip())


def _check_output(output: str) -> None:
    if output not in _OUTPUTS:
        raise ConfigError("--output", f"unknown output {output!r} (json, yaml or wide)")


def _kind(kind: str, allowed: tuple[str, ...]) -> str:
    word = {"app": "apps", "instance": "instances"}.get(kind, kind)
    if word not in allowed:
        raise ConfigError("kind", f"unknown resource {kind!r} ({' or '.join(allowed)})")
    return word


@errors
def apply(file: str = Option(..., "-f", "--filename", help="YAML file ('-': stdin)."),
          dry_run: bool = Option(False, "--dry-run", help="Show the diff; change "
                                       "nothing.")) -> None:
    """Create or update apps from a file (App, or Deployment + HorizontalPodAutoscaler)."""
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text()
    except OSError as err:
        raise ConfigError("--filename", f"{file}: {(err.strerror or str(err)).lower()}"
                          ) from None
    answer = client().call("POST", _p("apps"), body={"manifest": text, "dry_run": dry_run})
    for r in answer["results"]:
        suffix = " (dry run)" if dry_run else ""
        echo(f"app/{r['name']} {r['action']} (generation {r['generation']}){suffix}")
        if dry_run and r["diff"]:
            echo(r["diff"].rstrip())


@errors
def get(kind: str = Argument(..., help="apps or instances."),
        name: str = Argument(None, help="One app (its instances, for instances)."),
        output: str = Option("table", "-o", "--output", help="json, yaml or wide.")
        ) -> None:
    """List apps or instances."""
    _check_output(output)
    what = _kind(kind, ("apps", "instances"))
    api = client()
    if what == "apps":
        data = ([api.call("GET", _p("apps", name))] if name
                else api.call("GET", _p("apps")))
        if output in ("json", "yaml"):
            _dump(data, output)
            return
        header = ["NAME", "READY", "REPLICAS", "GENERATION", "PORTS", "AGE"]
        if output == "wide":
            header.append("IMAGE")
        rows = []
        for a in data:
            row = [a["name"], f"{a['ready']}/{a['replicas']}", str(a["replicas"]),
                   str(a["generation"]), ",".join(map(str, a["ports"])),
                   fmt.duration(time.time() - a["created"])]
            if output == "wide":
                row.append(a["image"])
            rows.append(row)
        echo(fmt.table(header, rows))
        return
    data = api.call("GET", _p("instances"), params={"app": name})
    if output in ("json", "yaml"):
        _dump(data, output)
        return
    header = ["NAME", "APP", "READY", "STATE", "GENERATION", "AGE"]
    if output == "wide":
        header += ["IP", "ID"]
    rows = []
    for i in data:
        row = [i["name"], i["app"], "yes" if i["ready"] else "no", i["state"],
               str(i["generation"]), fmt.duration(i["age_s"])]
        if output == "wide":
            row += [i["ip"], i["id"][:12]]
        rows.append(row)
    echo(fmt.table(header, rows))


@errors
def describe(kind: str = Argument(..., help="app."),
             name: str = Argument(...)) -> None:
    """An app's spec, instances (with probe state) and recent events."""
    _kind(kind, ("apps",))
    doc = client().call("GET", _p("apps", name))
    import yaml

    echo(f"Name:        {doc['name']}\nGeneration:  {doc['generation']}\n"
               f"Replicas:    {doc['replicas']} desired, {doc['instances']} running, "
               f"{doc['ready']} ready\nEndpoint:    "
               f"{', '.join(f'*:{p}' for p in doc['ports']) or '-'}\nSpec:")
    echo("  " + yaml.safe_dump(doc["spec"]["spec"], sort_keys=False).rstrip()
               .replace("\n", "\n  "))
    echo("Instances:")
    rows = [[i["name"], "yes" if i["ready"] else "no", i["state"], i["ip"],
             _probe_text(i.get("probes") or {})] for i in doc["instance_list"]]
    echo(_indent(fmt.table(["NAME", "READY", "STATE", "IP", "PROBES"], rows)))
    if doc.get("sla"):
        echo(f"SLA:         {doc['sla']['kind']}: {doc['sla']['message']}")
    if doc.get("autoscaler"):
        echo(f"Autoscaler:  {doc['autoscaler']['message']}")
    echo("Events:")
    echo(_indent(_events_table(doc["events"])))


def _probe_text(probes: dict[str, Any]) -> str:
    parts = []
    for kind in ("startup", "liveness", "readiness"):
        if kind in probes:
            p = probes[kind]
            parts.append(f"{kind} {'ok' if p['ok'] else 'FAIL'} {p['ms']}ms")
    return ", ".join(parts) or "-"


def _indent(text: str) -> str:
    return "  " + text.replace("\n", "\n  ")


def _event_row(e: dict[str, Any]) -> list[str]:
    when = datetime.fromtimestamp(e["time"]).strftime("%H:%M:%S")
    return [when, e["app"], e["reason"], e.get("instance") or "", e["message"]]


def _events_table(events: list[dict[str, Any]]) -> str:
    return fmt.table(["TIME", "APP", "REASON", "INSTANCE", "MESSAGE"],
                     [_event_row(e) for e in events])


@errors
def delete(kind: str = Argument(..., help="app."),
           name: str = Argument(...),
           dry_run: bool = Option(False, "--dry-run")) -> None:
    """Delete an app: its instances are stopped and its endpoint removed."""
    _kind(kind, ("apps",))
    answer = client().call("DELETE", _p("apps", name), params={"dry_run": dry_run})
    echo(f"app/{answer['name']} deleted" + (" (dry run)" if dry_run else ""))


@errors
def scale(kind: str = Argument(..., help="app."), name: str = Argument(...),
          replicas: int = Option(..., "--replicas", min=0, help="The new count.")
          ) -> None:
    """Set a fixed-size app's replica count."""
    _kind(kind, ("apps",))
    answer = client().call("POST", _p("apps", name, "scale"), body={"replicas": replicas})
    echo(f"app/{answer['name']} scaled to {replicas} (generation "
               f"{answer['generation']})")


@errors
def events(follow: bool = Option(False, "-f", "--follow", help="Keep printing new "
                                       "events."),
           app: str = Option(None, "--app", help="Only this app's events."),
           output: str = Option("table", "-o", "--output", help="table or json "
                                      "(one document a line)."),
           limit: int = Option(100, "--limit", min=1, help="The newest N.")) -> None:
    """Decisions and failures with their reasons and numbers (-f: follow)."""
    if output not in ("table", "json"):
        raise ConfigError("--output", f"unknown output {output!r} (table or json)")
    api = client()
    batch = api.call("GET", _p("events"), params={"app": app, "limit": limit})
    last = batch[-1]["id"] if batch else 0
    if output == "json":
        for e in batch:
            echo(json.dumps(e))
    else:
        echo(_events_table(batch))
    while follow:
        time.sleep(0.5)
        batch = api.call("GET", _p("events"), params={"app": app, "after_id": last})
        for e in batch:
            echo(json.dumps(e) if output == "json" else
                       "   ".join(_event_row(e)), nl=True)
            last = e["id"]
        sys.stdout.flush()


def register(app: Any) -> None:
    """Add the app commands to the ``flatstack`` command."""
    for fn in (apply, get, describe, delete, scale, events):
        app.command()(to_typer(fn))
