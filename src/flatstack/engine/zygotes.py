"""The supervisor's one parked zygote (runtime.zygote): made while idle, used by the next run.

The keeper picks the next container's id itself and hands it out (``next_id``) to the
engine, which names its next container so; the zygote waits in that container's cgroup.
A ``start`` with that id takes it; any other id, or none within ``RESERVATION_TTL``,
leaves it to be discarded and replaced. It is made only after ``IDLE`` seconds without
a request or event, because moving it into its cgroup holds the kernel's cgroup lock for
a grace period (forks anywhere on the host wait meanwhile): that cost belongs in the
gaps, not in someone's request.

A marker file names the zygote's cgroup, so a supervisor that was killed (the zygote
dies with it) has the empty cgroup removed by the next one.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time

from flatstack._atomic import write_json
from flatstack.errors import FlatstackError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from flatstack.runtime.zygote import Zygote

IDLE = 0.02
RESERVATION_TTL = 60.0
MARKER = "zygote.json"


class ZygoteKeeper:
    """At most one zygote, and the id reserved for it."""

    def __init__(self, state_dir: str) -> None:
        self.marker = os.path.join(state_dir, MARKER)
        self.zygote: Zygote | None = None
        self.handed_out_at: float | None = None
        #: FLATSTACK_ZYGOTE=0 turns zygotes off (every create forks and moves its init).
        self.disabled = os.environ.get("FLATSTACK_ZYGOTE", "1") == "0"

    def recover(self) -> None:
        """Remove the cgroup of a zygote a killed supervisor left behind."""
        try:
            with open(self.marker, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return
        from flatstack.runtime.cgroups import manager_from_state

        try:
            manager_from_state(data["cgroup"]).destroy()
        except (FlatstackError, KeyError, TypeError, ValueError) as err:
            print(f"supervisor: leftover zygote cgroup: {err}", file=sys.stderr)
        _unlink(self.marker)

    def due(self, last_busy: float) -> float | None:
        """Seconds until :meth:`idle` should run (the loop's select timeout), or None:
        IDLE after ``last_busy``, and not before a handed-out id's reservation expires."""
        if self.disabled or (self.zygote is not None and self.handed_out_at is None):
            return None
        at = last_busy + IDLE
        if self.handed_out_at is not None:
            at = max(at, self.handed_out_at + RESERVATION_TTL)
        return max(0.0, at - time.monotonic())

    def idle(self) -> None:
        """Nothing happened for IDLE seconds: replace a stale zygote, make a new one."""
        if self.zygote is not None and self._reservation_expired():
            self.discard()
        if self.zygote is None and not self.disabled:
            self._prepare()

    def next_id(self) -> str:
        """The id for the engine's next container: the zygote's, once; else a new one."""
        if self.zygote is not None and self.handed_out_at is None:
            self.handed_out_at = time.monotonic()
            return self.zygote.container_id
        return secrets.token_hex(32)

    def ready(self) -> bool:
        """A zygote waits and its id has not been handed out."""
        return self.zygote is not None and self.handed_out_at is None

    def take(self, container_id: str) -> Zygote | None:
        """The zygote for ``container_id`` (the caller settles it), if it is that one's."""
        zygote = self.zygote
        if zygote is None or zygote.container_id != container_id:
            return None
        self.zygote = None
        self.handed_out_at = None
        _unlink(self.marker)  # its cgroup is the container's (or discarded) from now on
        return zygote

    def reaped(self, pid: int) -> None:
        """The event loop reaped ``pid``: if it was the zygote, forget it."""
        if self.zygote is not None and self.zygote.pid == pid:
            self.zygote.pid = -1
            self.discard()

    def discard(self) -> None:
        zygote, self.zygote, self.handed_out_at = self.zygote, None, None
        if zygote is not None:
            zygote.discard()
            _unlink(self.marker)

    def _reservation_expired(self) -> bool:
        return (self.handed_out_at is not None
                and time.monotonic() - self.handed_out_at > RESERVATION_TTL)

    def _prepare(self) -> None:
        from flatstack.runtime.cgroups import manager_for
        from flatstack.runtime.zygote import Zygote

        cid = secrets.token_hex(32)
        try:
            manager = manager_for(None, cid)
            if manager is None:
                self.disabled = True
                return
            manager.create()
        except FlatstackError as err:
            self._give_up(err)
            return
        try:
            write_json(self.marker, {"id": cid, "cgroup": manager.to_state()}, mode=0o600)
            self.zygote = Zygote.spawn(cid, manager)
        except (FlatstackError, OSError) as err:
            try:
                manager.destroy()
            except FlatstackError:
                pass
            _unlink(self.marker)
            self._give_up(err)

    def _give_up(self, err: BaseException) -> None:
        """Run without zygotes (every create forks and moves its init as before)."""
        self.disabled = True
        print(f"supervisor: no zygote: {err}", file=sys.stderr)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
