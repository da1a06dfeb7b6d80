"""An app's endpoint: one stable host port spread over its ready instances, in the kernel.

Per endpoint (app, hostPort, protocol) a nat chain holds one DNAT rule per ready backend,
each taken with ``-m statistic --mode random --probability 1/(n-i)`` so new connections
spread evenly. A dispatcher chain (``FS-EP-<tag>``), jumped to from ``PREROUTING``
(outside traffic) and ``OUTPUT`` (this host's own connections, ``127.0.0.1`` included),
sends each endpoint port to its chain. Connections from a loopback address, and from the
bridge's own subnet (an instance calling an endpoint through the host: hairpin), are
marked and masqueraded in ``POSTROUTING`` (the backend could not answer them directly),
and the bridge gets ``route_localnet=1`` so the kernel routes ``127.0.0.1`` traffic at all
(what CNI's portmap does for ``-p``). Outside clients keep their source address.

Every change is one ``iptables-restore --noflush`` transaction that re-declares (so
flushes) the chains it writes: a backend leaving the ready set is gone for new
connections as soon as the call returns. Established connections keep their conntrack
entry (the instance is stopped by the caller, which ends them). The ``tag`` (from the
state directory) keeps two daemons on one host, or tests, from touching each other's
chains. Rules stay when the daemon exits, so the endpoint keeps serving across restarts.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from flatstack.errors import FlatstackError
from flatstack.network import iptables
from flatstack.network.iptables import run as _run

MARK = "0x4000/0x4000"
WHAT = "endpoint"


@dataclass(frozen=True, order=True)
class Backend:
    """One ready instance: its bridge address and container port."""

    ip: str
    port: int


@dataclass(frozen=True, order=True)
class Port:
    """One endpoint port of an app."""

    app: str
    host_port: int
    protocol: str = "TCP"


def tag_of(state_dir: str) -> str:
    """A short stable tag for the chains of one state directory."""
    return hashlib.sha1(state_dir.encode()).hexdigest()[:8]


class Endpoints:
    """The nat rules of every endpoint of one daemon (``tag``)."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.dispatch = f"FS-EP-{tag}"
        self.masq = f"FS-MQ-{tag}"
        self._applied: dict[Port, tuple[Backend, ...]] = {}
        self._hooked = False
        self._localnet: set[str] = set()
        self._subnets: set[str] = set()
        self._swept = False
        self._lock = threading.Lock()

    def chain(self, port: Port) -> str:
        digest = hashlib.sha1(f"{port.app}/{port.host_port}/{port.protocol}".encode())
        return f"FS-{self.tag}-{digest.hexdigest()[:10]}"

    # -- public ---------------------------------------------------------------------
    def sync(self, wanted: Mapping[Port, Iterable[Backend]]) -> bool:
        """Make the rules say ``wanted`` (every endpoint port -> its ready backends);
        returns whether anything changed. Ports not in ``wanted`` are removed."""
        want = {p: tuple(sorted(set(b))) for p, b in wanted.items()}
        with self._lock:
            if not want:  # no endpoint: no rules at all (also left over from a past run)
                if self._applied or not self._swept:
                    self._teardown()
                    self._swept = True
                    return True
                return False
            if want == self._applied and self._hooked:
                return False
            self._hook()
            for backend in {b for bs in want.values() for b in bs}:
                self._route_localnet(backend.ip)
            gone = [p for p in self._applied if p not in want]
            changed = {p: b for p, b in want.items() if self._applied.get(p) != b}
            lines = ["*nat", f":{self.dispatch} - [0:0]"]
            lines += [f":{self.chain(p)} - [0:0]" for p in sorted(changed) + gone]
            for port in sorted(want):
                proto = port.protocol.lower()
                lines.append(f"-A {self.dispatch} -p {proto} -m {proto} --dport "
                             f"{port.host_port} -m comment --comment \"flatstack app "
                             f"{port.app}\" -j {self.chain(port)}")
            for port, backends in sorted(changed.items()):
                lines.extend(self._chain_lines(port, backends))
            lines.append("COMMIT")
            iptables.restore(lines, WHAT)
            for port in gone:
                _run("iptables", "-w", "-t", "nat", "-X", self.chain(port))
            self._applied = want
            return True

    def backends(self, port: Port) -> tuple[Backend, ...]:
        """What the rules currently send ``port`` to."""
        with self._lock:
            return self._applied.get(port, ())

    def teardown(self) -> None:
        """Remove every rule and chain of this tag (tests; ``flatstack`` uninstall)."""
        with self._lock:
            self._teardown()

    def _teardown(self) -> None:
        for hook in self._hooks():
            iptables.delete_jump("nat", hook)
        listing = _run("iptables", "-w", "-t", "nat", "-S").stdout.splitlines()
        iptables.drop_chains("nat", [line.split()[1] for line in listing
                                     if line.startswith("-N ") and (f"-{self.tag}" in line)])
        self._applied = {}
        self._hooked = False

    # -- internals ------------------------------------------------------------------
    def _chain_lines(self, port: Port, backends: tuple[Backend, ...]) -> list[str]:
        name = self.chain(port)
        proto = port.protocol.lower()
        lines = [f"-A {name} -s {net} -j MARK --set-xmark {MARK}"
                 for net in ["127.0.0.0/8", *sorted(self._subnets)]]
        n = len(backends)
        for i, backend in enumerate(backends):
            pick = ""
            if i < n - 1:
                pick = f"-m statistic --mode random --probability {1 / (n - i):.10f} "
            lines.append(f"-A {name} -p {proto} {pick}-j DNAT --to-destination "
                         f"{backend.ip}:{backend.port}")
        return lines

    def _hooks(self) -> list[list[str]]:
        local = ["-m", "addrtype", "--dst-type", "LOCAL", "-j", self.dispatch]
        return [["PREROUTING", *local], ["OUTPUT", *local],
                ["POSTROUTING", "-j", self.masq]]

    def _hook(self) -> None:
        if self._hooked:
            return
        # the dispatcher is created empty only when missing: re-declaring it here would
        # flush it, and a restarted daemon's endpoints would refuse connections meanwhile
        _run("iptables", "-w", "-t", "nat", "-N", self.dispatch)
        iptables.restore(["*nat", f":{self.masq} - [0:0]",
                          f"-A {self.masq} -m mark --mark {MARK} -j MASQUERADE", "COMMIT"],
                         WHAT)
        for hook in self._hooks():
            iptables.ensure_jump("nat", hook, WHAT)
        self._hooked = True

    def _route_localnet(self, ip: str) -> None:
        """Let the bridge carry connections that began on a loopback address."""
        words = _run("ip", "-o", "route", "get", ip).stdout.split()
        if "dev" not in words:
            return
        dev = words[words.index("dev") + 1]
        if dev in self._localnet:
            return
        try:
            with open(f"/proc/sys/net/ipv4/conf/{dev}/route_localnet", "w") as f:
                f.write("1")
        except OSError as err:
            raise FlatstackError(f"endpoint: route_localnet on {dev}: {err}") from None
        self._localnet.add(dev)
        words = _run("ip", "-o", "-4", "addr", "show", "dev", dev).stdout.split()
        if "inet" in words:  # the bridge's own subnet: hairpin connections
            self._subnets.add(str(ipaddress.ip_interface(words[words.index("inet") + 1])
                                  .network))
