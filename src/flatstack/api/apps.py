"""``/v1/apps``, ``/v1/instances``, ``/v1/events``: the control plane's API.

Apply takes the file text (Apps, or Kubernetes Deployments + HPAs); invalid input is a
422 naming every bad field (``detail``), and nothing is written. The daemon's
:class:`~flatstack.control.controller.Controller` is ``app.state.control``.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from flatstack.control.errors import AppNotFound, FieldError, ScaleConflict, SpecError
from flatstack.errors import FlatstackError

router = APIRouter(tags=["apps"])


class ApplyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    manifest: str = Field(description="The file: YAML documents (App, Deployment, HPA).")
    dry_run: bool = Field(False, description="Validate and diff; write nothing.")


class ScaleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(ge=0, le=10000)


class _Unavailable(FlatstackError):
    http_status = 503


def _control(request: Request) -> Any:
    control = getattr(request.app.state, "control", None)
    if control is None:
        raise _Unavailable("the control plane is not running in this daemon")
    return control


def _spec_error(err: SpecError) -> JSONResponse:
    detail = [{"field": e.path, "error": e.reason} for e in err.errors]
    return JSONResponse({"error": str(err), "field": err.errors[0].path, "detail": detail},
                        status_code=422)


def _missing(err: AppNotFound) -> JSONResponse:
    return JSONResponse({"error": str(err), "field": "name"}, status_code=404)


def _memory_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _app_doc(control: Any, stored: Any) -> dict[str, Any]:
    instances = control.reconciler.snapshot(stored.name)
    return {"name": stored.name, "generation": stored.generation,
            "replicas": stored.replicas, "created": stored.created, "updated": stored.updated,
            "ready": sum(1 for i in instances if i["ready"]),
            "instances": len([i for i in instances if i["state"] == "running"]),
            "ports": [p.host_port for p in stored.app.spec.ports if p.host_port],
            "image": stored.app.spec.image, "spec": stored.app.to_dict()}


@router.post("/apps", summary="Apply a file of apps (all or nothing)")
def apply(body: ApplyRequest, request: Request) -> Any:
    from flatstack.control.kube import load_apps
    from flatstack.control.validate import check_capacity

    control = _control(request)
    try:
        apps = load_apps(body.manifest)
        if not apps:
            return JSONResponse({"error": "manifest: no documents", "field": "manifest"},
                                status_code=422)
        problems: list[FieldError] = []
        cpus, memory = os.cpu_count() or 1, _memory_total()
        for i, app in enumerate(apps):
            for e in check_capacity(app, cpus, memory):
                problems.append(FieldError(("documents", i, *e.loc) if len(apps) > 1
                                           else e.loc, e.reason))
        if problems:
            raise SpecError(problems)
        results = control.store.apply_all(apps, dry_run=body.dry_run)
    except SpecError as err:
        return _spec_error(err)
    except ValueError as err:
        return JSONResponse({"error": f"manifest: {err}", "field": "manifest"},
                            status_code=422)
    if not body.dry_run:
        control.poke()
    return {"results": [{"name": r.name, "action": r.action, "generation": r.generation,
                         "diff": r.diff, "dry_run": r.dry_run} for r in results]}


@router.get("/apps", summary="Every app with its replica and ready counts")
def list_apps(request: Request) -> Any:
    control = _control(request)
    return [_app_doc(control, s) for s in control.store.list()]


@router.get("/apps/{name}", summary="One app: spec, instances and recent events")
def get_app(name: str, request: Request,
            events: int = Query(20, ge=0, le=1000, description="Recent events to include")
            ) -> Any:
    control = _control(request)
    try:
        stored = control.store.get(name)
    except AppNotFound as err:
        return _missing(err)
    doc = _app_doc(control, stored)
    doc["instance_list"] = control.reconciler.snapshot(name)
    doc["events"] = [e.to_dict() for e in control.store.events(app=name, limit=events)]
    sla = control.monitor.last.get(name)
    doc["sla"] = None if sla is None else {"message": sla.message, **sla.numbers()}
    scale = control.autoscaler.last.get(name)
    doc["autoscaler"] = None if scale is None else {"reason": scale.reason,
                                                    "message": scale.message,
                                                    **scale.numbers()}
    return doc


@router.delete("/apps/{name}", summary="Delete an app (its instances and endpoint go)")
def delete_app(name: str, request: Request, dry_run: bool = False) -> Any:
    control = _control(request)
    try:
        stored = control.store.delete(name, dry_run=dry_run)
    except AppNotFound as err:
        return _missing(err)
    control.poke()
    return {"name": stored.name, "generation": stored.generation, "deleted": not dry_run}


@router.post("/apps/{name}/scale", summary="Set a fixed-size app's replicas")
def scale_app(name: str, body: ScaleRequest, request: Request) -> Any:
    control = _control(request)
    try:
        result = control.store.scale(name, body.replicas)
    except AppNotFound as err:
        return _missing(err)
    except ScaleConflict as err:
        return JSONResponse({"error": str(err), "field": "replicas"}, status_code=409)
    control.poke()
    return {"name": result.name, "action": result.action, "generation": result.generation,
            "replicas": body.replicas}


@router.get("/instances", summary="Instances of every app (or of one)")
def instances(request: Request, app: str | None = None) -> Any:
    return _control(request).reconciler.snapshot(app)


@router.get("/events", summary="Events, oldest first (poll after_id to follow)")
def events(request: Request, since: float | None = None, app: str | None = None,
           after_id: int | None = Query(None, ge=0),
           limit: int | None = Query(None, ge=1, le=100000)) -> Any:
    control = _control(request)
    return [e.to_dict() for e in control.store.events(since=since, app=app,
                                                      after_id=after_id, limit=limit)]
