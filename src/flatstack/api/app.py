"""The FastAPI application: routers under ``/v1``, errors as ``{"error", "field"}``."""

from __future__ import annotations

import os
import threading
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from flatstack import __version__
from flatstack.api import API_VERSION, PREFIX, apps, containers, images, metrics
from flatstack.api.errors import body_of, loc_to_field, log, status_of
from flatstack.errors import FlatstackError


def create_app(engine: Any, store: Any) -> FastAPI:
    """An app over ``engine`` (containers) and ``store`` (images)."""
    app = FastAPI(title="flatstack", version=__version__,
                  description="Containers straight on bare metal: the engine's API.")
    app.state.engine = engine
    app.state.store = store
    app.state.stopping = threading.Event()  # set when shutdown begins: streams end
    app.include_router(images.router, prefix=PREFIX)
    app.include_router(containers.router, prefix=PREFIX)
    app.include_router(apps.router, prefix=PREFIX)
    app.include_router(metrics.router)  # /metrics, where Prometheus looks

    @app.get(f"{PREFIX}/version", tags=["system"], summary="Daemon version and pid")
    def version() -> dict[str, Any]:
        return {"version": __version__, "api": API_VERSION, "pid": os.getpid()}

    @app.exception_handler(FlatstackError)
    async def _flatstack_error(request: Request, err: FlatstackError) -> JSONResponse:
        return JSONResponse(body_of(err), status_code=status_of(err))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = err.errors()
        first = problems[0] if problems else {"loc": ("body",), "msg": "invalid request"}
        field = ("body" if first.get("type") == "json_invalid"
                 else loc_to_field(first.get("loc") or ()))
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        detail = [{"field": loc_to_field(p.get("loc") or ()), "error": p.get("msg")}
                  for p in problems]
        return JSONResponse({"error": f"{field}: {message}", "field": field,
                             "detail": detail}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(err.detail).lower()}, status_code=err.status_code)

    @app.exception_handler(NotImplementedError)
    async def _pending(request: Request, err: NotImplementedError) -> JSONResponse:
        return JSONResponse({"error": f"{request.url.path}: not implemented by this engine "
                             "yet"}, status_code=501)

    @app.exception_handler(Exception)
    async def _bug(request: Request, err: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"internal error: {err!r}"}, status_code=500)

    return app
