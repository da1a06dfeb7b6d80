"""Blocking iterators (log readers) served from threads, ended cleanly on shutdown."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

from flatstack.errors import FlatstackError

T = TypeVar("T")
STOPPING = "the daemon is stopping (the container keeps running)"


class Stopped(Exception):
    """The daemon began to stop while a stream was open."""


class Pump(Generic[T]):
    """Runs ``source`` in its own thread from now on; iterating gives what it gives, ends
    when it ends, raises :class:`Stopped` once ``stopping`` is set. ``close`` lets the
    thread go when the reader leaves early."""

    def __init__(self, source: Iterator[T], stopping: threading.Event) -> None:
        self.q: queue.Queue[tuple[bool, T | None]] = queue.Queue(maxsize=1024)
        self.gone = threading.Event()
        self.stopping = stopping
        threading.Thread(target=self._work, args=(source,), name="pump", daemon=True).start()

    def _work(self, source: Iterator[T]) -> None:
        try:
            for item in source:
                if not self._put((True, item)):
                    break
        except FlatstackError:
            pass  # the container went away: the stream just ends
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()
            self._put((False, None))

    def _put(self, entry: tuple[bool, T | None]) -> bool:
        while not self.gone.is_set():
            try:
                self.q.put(entry, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[T]:
        while True:
            try:
                more, item = self.q.get(timeout=0.2)
            except queue.Empty:
                if self.stopping.is_set():
                    raise Stopped(STOPPING) from None
                continue
            if not more:
                return
            yield item  # type: ignore[misc]

    def close(self) -> None:
        self.gone.set()
