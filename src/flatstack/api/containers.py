"""``/v1/containers``: run, list, inspect, stop, kill, remove, wait, logs, exec, stats."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from flatstack.api import frames
from flatstack.api.images import ensure_image
from flatstack.api.models import ExecRequest, RunRequest, to_dataclass
from flatstack.api.streams import Pump, Stopped
from flatstack.engine.containers import ExecOptions, RunOptions
from flatstack.errors import FlatstackError

router = APIRouter(prefix="/containers", tags=["containers"])
NDJSON = "application/x-ndjson"
_FRAMES = {200: {"content": {frames.MEDIA_TYPE: {}}}}


def _engine(request: Request) -> Any:
    return request.app.state.engine


@router.post("", status_code=201, summary="Create and start a container",
             responses={201: {"content": {frames.MEDIA_TYPE: {}}}})
def run_container(body: RunRequest, request: Request,
                  attach: bool = Query(False, description="Stream the output (frames) "
                                       "and end with the exit status, like docker run"),
                  pull: Literal["missing", "never"] = Query(
                      "missing", description="Pull the image when the store lacks it "
                      "(missing) or answer 404 (never)")) -> Any:
    """The image is pulled first when the store lacks it. Without ``attach`` the answer is
    the container's record; with it, output frames and a closing status frame."""
    engine = _engine(request)
    ensure_image(request.app.state.store, body.image, pull_missing=pull == "missing")
    record = engine.run(to_dataclass(body, RunOptions))
    cid = record["id"]
    headers = {"Location": f"{request.url.path}/{cid}", "X-Flatstack-Container": cid}
    if not attach:
        return JSONResponse(record, status_code=201, headers=headers)
    # Start reading the log now: a --rm container may go as soon as it has exited.
    try:
        source = engine.logs(cid, follow=True)
    except FlatstackError:
        source = iter(())
    output = Pump(source, request.app.state.stopping)
    return StreamingResponse(_attached(engine, cid, output), status_code=201,
                             media_type=frames.MEDIA_TYPE, headers=headers)


def _attached(engine: Any, cid: str, output: Pump[tuple[str, bytes]]) -> Iterator[bytes]:
    try:
        for stream, line in output:
            yield frames.frame(frames.STREAM_IDS.get(stream, frames.STDOUT), line)
        record = _final(engine, cid, None)
        yield frames.status({"exit_code": record.get("exit_code"), "record": record})
    except (FlatstackError, Stopped) as err:
        yield frames.status({"error": str(err)})
    finally:
        output.close()


@router.get("", summary="List containers (all: also exited ones)")
def list_containers(request: Request, all: bool = False) -> list[dict[str, Any]]:
    return _engine(request).list(all=all)  # type: ignore[no-any-return]


@router.get("/{ref}", summary="Inspect a container by id, id prefix or name")
def inspect_container(ref: str, request: Request) -> dict[str, Any]:
    return _engine(request).inspect(ref)


@router.post("/{ref}/stop", summary="Stop signal, then SIGKILL after t seconds")
def stop_container(ref: str, request: Request,
                   t: float = Query(10.0, ge=0, le=3600)) -> dict[str, Any]:
    return _engine(request).stop(ref, timeout=t)


@router.post("/{ref}/kill", summary="Send a signal (name or number) to the container")
def kill_container(ref: str, request: Request, signal: str = "KILL") -> dict[str, Any]:
    engine = _engine(request)
    engine.kill(ref, signal)
    return engine.inspect(ref)


@router.delete("/{ref}", summary="Remove a container (force: kill it first)")
def remove_container(ref: str, request: Request, force: bool = False) -> dict[str, str]:
    engine = _engine(request)
    cid = engine.inspect(ref)["id"]
    engine.remove(cid, force=force)
    return {"removed": cid}


@router.post("/{ref}/wait", summary="Block until the container has exited")
def wait_container(ref: str, request: Request,
                   timeout: float | None = Query(None, gt=0)) -> dict[str, Any]:
    try:
        return _final(_engine(request), ref, timeout)
    except TimeoutError as err:
        late = FlatstackError(str(err))
        late.http_status = 408  # type: ignore[attr-defined]
        raise late from None


def _final(engine: Any, ref: str, timeout: float | None) -> dict[str, Any]:
    """``Engine.wait``; asked again when a ``--rm`` container's exit code is missing (the
    reconciler removed it meanwhile: the second answer is its tombstone)."""
    record: dict[str, Any] = engine.wait(ref, timeout=timeout)
    if record.get("exit_code") is None and record.get("rm"):
        try:
            record = engine.wait(record["id"], timeout=timeout)
        except FlatstackError:
            pass
    return record


@router.get("/{ref}/logs", summary="Output lines as frames (follow: until it exits)",
            responses=_FRAMES)
def container_logs(ref: str, request: Request, tail: int | None = Query(None, ge=0),
                   follow: bool = False, timestamps: bool = False) -> StreamingResponse:
    engine = _engine(request)
    cid = engine.inspect(ref)["id"]

    output = Pump(engine.logs(cid, tail=tail, follow=follow, timestamps=timestamps),
                  request.app.state.stopping)

    def stream() -> Iterator[bytes]:
        try:
            for name, line in output:
                yield frames.frame(frames.STREAM_IDS.get(name, frames.STDOUT), line)
        except Stopped as err:
            yield frames.status({"error": str(err)})
        finally:
            output.close()

    return StreamingResponse(stream(), media_type=frames.MEDIA_TYPE)


@router.post("/{ref}/exec", summary="Run a process in a running container",
             responses=_FRAMES)
def exec_in_container(ref: str, body: ExecRequest, request: Request) -> StreamingResponse:
    """Answers stdout and stderr frames, then a status frame ``{"exit_code": N}``."""
    engine = _engine(request)
    code, out, err = engine.exec(ref, to_dataclass(body, ExecOptions))
    parts = [frames.frame(frames.STDOUT, out)] if out else []
    if err:
        parts.append(frames.frame(frames.STDERR, err))
    parts.append(frames.status({"exit_code": code}))
    return StreamingResponse(iter(parts), media_type=frames.MEDIA_TYPE)


@router.get("/{ref}/stats", summary="cgroup counters (stream: NDJSON every second)",
            responses={200: {"content": {NDJSON: {}}}})
def container_stats(ref: str, request: Request, stream: bool = False) -> Any:
    engine = _engine(request)
    first = engine.stats(ref)
    if not stream:
        return first

    stopping = request.app.state.stopping

    def lines() -> Iterator[bytes]:
        doc = first
        while True:
            yield json.dumps(doc).encode() + b"\n"
            if stopping.wait(1.0):
                return
            try:
                if engine.inspect(ref)["state"] != "running":
                    return
                doc = engine.stats(ref)
            except FlatstackError:
                return

    return StreamingResponse(lines(), media_type=NDJSON)
