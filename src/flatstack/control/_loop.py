"""A controller's background thread: ``start`` runs ``_loop`` until ``stop``."""

from __future__ import annotations

import threading
from typing import Self


class BackgroundLoop:
    """Subclasses implement ``_loop`` and check ``self._stop`` (a threading.Event)."""

    thread_name = "loop"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Run ``_loop`` in a daemon thread; returns self for chaining."""
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def _join(self, timeout: float = 30) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def stop(self) -> None:
        """Ask the loop to end and wait for it."""
        self._join()

    def _loop(self) -> None:
        raise NotImplementedError
