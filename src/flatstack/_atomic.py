"""Replace a JSON file atomically, safe against concurrent writers of the same file."""

from __future__ import annotations

import json
import os
import threading
from typing import Any


def write_json(path: str, data: Any, *, fsync: bool = False, indent: int | None = None,
               mode: int = 0o644) -> None:
    """Write ``data`` to a temporary file unique to this process and thread, then
    rename it over ``path``: readers see the old or the new file, never a torn one,
    and two writers never share (and lose) a temporary file."""
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        with open(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=indent)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
