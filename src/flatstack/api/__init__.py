"""The engine's REST API: a FastAPI app served by ``flatstack daemon`` on a unix socket.

- :mod:`.places` says where things live (lean: the CLI imports it).
- :mod:`.client` is the CLI's client (http.client over AF_UNIX, no heavy imports).
- :mod:`.frames` is the binary framing of log and exec output streams.
- :mod:`.units` parses sizes (``512m``); :mod:`.views` shapes image documents (both lean).
- :mod:`.models`, :mod:`.errors`, :mod:`.images`, :mod:`.containers` and :mod:`.app`
  make the server; :mod:`.daemon` binds the socket and runs it (FastAPI is imported
  only by the daemon).
"""

from __future__ import annotations

API_VERSION = "v1"
PREFIX = f"/{API_VERSION}"
