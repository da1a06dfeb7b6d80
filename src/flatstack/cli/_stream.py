"""Reading the daemon's output streams (frames) and exit statuses, and terminals
through console sockets: what ``run`` and ``exec`` share."""

from __future__ import annotations

import json
import os
import sys

from flatstack.cli._api import fail
from flatstack.errors import FlatstackError

TYPE_CHECKING = False  # the typing module costs ~5 ms of CLI start-up
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def url(*parts: str) -> str:
    """A versioned API path."""
    from flatstack.api.client import path

    return path(*parts)


def write_frames(resp: Any) -> dict[str, Any]:
    """Copy output frames to stdout/stderr; the closing status document (or {})."""
    from flatstack.api import frames
    from flatstack.api.client import ProtocolError

    outs = {frames.STDOUT: sys.stdout.buffer, frames.STDERR: sys.stderr.buffer}
    try:
        for stream, payload in frames.read(resp):
            if stream == frames.STATUS:
                return json.loads(payload)  # type: ignore[no-any-return]
            out = outs.get(stream)
            if out is not None:
                out.write(payload)
                out.flush()
    except (ProtocolError, ConnectionError, EOFError) as err:
        raise FlatstackError(f"the daemon closed the stream ({type(err).__name__}); "
                             "did it stop?") from None
    finally:
        resp.close()
    return {}


def frames_into(status: dict[str, Any], resp: Any) -> None:
    """``write_frames`` for a thread: the status document or the error goes to ``status``."""
    try:
        status.update(write_frames(resp))
    except FlatstackError as err:
        status["error"] = str(err)


def exit_code(doc: dict[str, Any], failure: int = 125) -> int:
    """The exit code a status document carries (255 when unknown); ``failure`` exit with
    its message when it reports an error."""
    if "error" in doc:
        raise fail(str(doc["error"]), failure)
    code = doc.get("exit_code")
    return 255 if code is None else int(code)


def terminal(request: Callable[[str], Any]) -> dict[str, Any]:
    """Run a process on a terminal: ``request(console_socket)`` opens the API stream (in a
    thread, which then reads it to its status document); the runtime sends the pty
    master to our console socket (runc's protocol) and we proxy it until the process
    closes its side. Returns the status document."""
    import shutil
    import socket
    import tempfile
    import threading

    from flatstack.runtime.console import receive_master
    from flatstack.runtime.tty_proxy import proxy

    tmp = tempfile.mkdtemp(prefix="flatstack-tty-")
    path = os.path.join(tmp, "console.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    status: dict[str, Any] = {}
    done = threading.Event()

    def call() -> None:
        try:
            frames_into(status, request(path))
        except FlatstackError as err:
            status["error"] = str(err)
        finally:
            done.set()

    try:
        listener.bind(path)
        listener.listen(1)
        listener.settimeout(0.1)
        threading.Thread(target=call, name="stream", daemon=True).start()
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            proxy(receive_master(conn.detach()), sys.stdin.fileno(), sys.stdout.fileno())
            break
        done.wait()
        return status
    finally:
        listener.close()
        shutil.rmtree(tmp, ignore_errors=True)
