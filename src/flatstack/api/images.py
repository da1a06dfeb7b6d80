"""``/v1/images``: list, inspect, pull (NDJSON progress), import, remove, prune."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from flatstack.api.errors import FieldError, body_of, status_of
from flatstack.api.models import ImportRequest, PullRequest
from flatstack.api.views import image_detail, image_summary
from flatstack.errors import FlatstackError

router = APIRouter(prefix="/images", tags=["images"])
NDJSON = "application/x-ndjson"


def _store(request: Request) -> Any:
    return request.app.state.store


@router.get("", summary="List named images")
def list_images(request: Request) -> list[dict[str, Any]]:
    return [image_summary(i) for i in _store(request).images()]


@router.post("/pull", summary="Pull an image; streams NDJSON progress events",
             responses={200: {"content": {NDJSON: {}}}})
def pull_image(body: PullRequest, request: Request) -> StreamingResponse:
    """Events: ``start`` (key, description, total), ``progress`` (key, advance), ``done``
    (key), then ``pulled`` (name, digest) or ``error`` (error, status). Failures before
    any blob is fetched (bad or unknown reference, auth) are a plain 4xx instead."""
    events = _pull_events(_store(request), body)
    first = next(events)
    if first.get("event") == "error":
        raise first["exception"]
    return StreamingResponse(_ndjson(first, events), media_type=NDJSON)


@router.post("/import", summary="Import an OCI layout, oci-archive or docker-archive")
def import_image(body: ImportRequest, request: Request) -> dict[str, list[str]]:
    from flatstack.image.archive import import_image as do_import

    try:
        return {"names": do_import(_store(request), body.path, body.name, body.platform)}
    except FlatstackError as err:
        raise FieldError("path", err) from None


@router.post("/prune", summary="Remove blobs and layers no image or container uses")
def prune_images(request: Request) -> dict[str, int]:
    count, freed = _store(request).gc()
    return {"removed": count, "freed": freed}


@router.get("/{ref:path}", summary="Inspect an image (name, digest or id prefix)")
def inspect_image(ref: str, request: Request) -> dict[str, Any]:
    return image_detail(_store(request).image(ref))


@router.delete("/{ref:path}", summary="Untag an image and collect its unused blobs")
def remove_image(ref: str, request: Request, force: bool = False) -> dict[str, Any]:
    store = _store(request)
    name = store.remove(ref, force=force)
    count, freed = store.gc()
    return {"untagged": name, "removed": count, "freed": freed}


def ensure_image(store: Any, ref: str, pull_missing: bool = True) -> None:
    """Pull ``ref`` (with its layers unpacked) unless the store has it, as podman does;
    without ``pull_missing``, a 404 naming the field ``image``."""
    from flatstack.image import ImageError
    from flatstack.image import reference as refs
    from flatstack.image.registry import pull
    from flatstack.image.unpack import unpack_image

    try:
        store.lookup(ref)
        return
    except ImageError as err:
        if "not found" not in str(err) or not pull_missing:
            raise FieldError("image", err) from None
    try:
        refs.parse(ref)
    except ImageError as err:
        raise FieldError("image", err) from None
    try:
        name = pull(store, ref)
        unpack_image(store, name)
    except FlatstackError as err:
        missing = FieldError("image", FlatstackError(
            f"image {ref!r} is not in the store and pulling it failed: {err}"))
        missing.http_status = 404
        raise missing from None


class _QueueProgress:
    def __init__(self, q: queue.Queue[dict[str, Any] | None]) -> None:
        self.q = q

    def start(self, key: str, description: str, total: int) -> None:
        self.q.put({"event": "start", "key": key, "description": description, "total": total})

    def advance(self, key: str, amount: int) -> None:
        self.q.put({"event": "progress", "key": key, "advance": amount})

    def done(self, key: str) -> None:
        self.q.put({"event": "done", "key": key})


def _pull_events(store: Any, body: PullRequest) -> Iterator[dict[str, Any]]:
    from flatstack.image.registry import pull
    from flatstack.image.unpack import unpack_image

    q: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def work() -> None:
        progress = _QueueProgress(q)
        try:
            name = pull(store, body.ref, platform=body.platform, ca_file=body.ca_file,
                        insecure=body.insecure, progress=progress)
            if body.unpack:
                unpack_image(store, name, progress)
            q.put({"event": "pulled", "name": name, "digest": store.image(name).digest})
        except FlatstackError as err:
            q.put({"event": "error", "exception": FieldError("ref", err)})
        except Exception as err:  # a bug: reported, never hangs the stream
            q.put({"event": "error", "exception": FlatstackError(f"pull failed: {err!r}")})
        finally:
            q.put(None)

    threading.Thread(target=work, name="pull", daemon=True).start()
    while (item := q.get()) is not None:
        # Merge queued progress of one blob into one event (chunks come fast).
        while item["event"] == "progress":
            try:
                nxt = q.get_nowait()
            except queue.Empty:
                break
            if nxt is None or nxt.get("event") != "progress" or nxt["key"] != item["key"]:
                yield item
                if nxt is None:
                    return
                item = nxt
                break
            item["advance"] += nxt["advance"]
        yield item


def _ndjson(first: dict[str, Any], rest: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    import itertools
    import json

    for item in itertools.chain([first], rest):
        if item.get("event") == "error":
            err = item.pop("exception")
            item.update(body_of(err), status=status_of(err))
        yield json.dumps(item).encode() + b"\n"
