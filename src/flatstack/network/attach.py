"""The engine's network API: ``attach``/``detach`` a container, resolv.conf and hosts.

Modes: ``none`` (a new netns with only ``lo`` up), ``host`` (no netns: the host's
stack), ``bridge`` (the default network) or the name of a defined network.  Every
attachment is recorded under ``<state dir>/attachments`` so ``detach`` runs CNI DEL
and removes the netns even after a failed ``attach`` or a daemon restart.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from flatstack._atomic import write_json
from flatstack.errors import ConfigError, FlatstackError
from flatstack.network import netns, rules
from flatstack.network.cni import CNI, DEFAULT_CNI_PATH
from flatstack.network.config import (
    DEFAULT_NETWORK,
    DEFAULT_STATE_DIR,
    Network,
    NetworkStore,
)

IFNAME = "eth0"
_PORT = re.compile(r"^(?:(?P<ip>\[[0-9a-fA-F:.]+\]|\d+\.\d+\.\d+\.\d+):)?(?:(?P<host>\d+):)?"
                   r"(?P<ctr>\d+)(?:/(?P<proto>[a-z]+))?$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class PortMapping:
    """One published port: host [ip:]port -> container port/protocol."""

    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""

    def cni(self) -> dict[str, Any]:
        """The portmap plugin's ``runtimeConfig.portMappings`` entry."""
        entry: dict[str, Any] = {"hostPort": self.host_port, "containerPort": self.container_port,
                                 "protocol": self.protocol}
        if self.host_ip:
            entry["hostIP"] = self.host_ip
        return entry


def parse_port(spec: str, index: int = 0) -> PortMapping:
    """Parse ``[host_ip:][host_port:]container_port[/tcp|udp]`` (podman's ``-p``)."""
    where = f"ports[{index}]"
    match = _PORT.match(spec.strip()) if isinstance(spec, str) else None
    if not match:
        raise ConfigError(where, f"{spec!r} is not [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]")
    proto = match["proto"] or "tcp"
    if proto not in ("tcp", "udp", "sctp"):
        raise ConfigError(where, f"protocol {proto!r} is not tcp, udp or sctp")
    ctr = int(match["ctr"])
    host = int(match["host"]) if match["host"] else ctr
    for name, value in (("container port", ctr), ("host port", host)):
        if not 1 <= value <= 65535:
            raise ConfigError(where, f"{name} {value} is out of range 1-65535")
    host_ip = (match["ip"] or "").strip("[]")
    if host_ip:
        try:
            ipaddress.ip_address(host_ip)
        except ValueError:
            raise ConfigError(where, f"host IP {host_ip!r} is not an IP address") from None
    return PortMapping(host, ctr, proto, host_ip)


def parse_ports(specs: list[str | PortMapping]) -> list[PortMapping]:
    """Parse a list of port specs; rejects two mappings of the same host port."""
    ports = [p if isinstance(p, PortMapping) else parse_port(p, i) for i, p in enumerate(specs)]
    seen: set[tuple[str, int, str]] = set()
    for i, p in enumerate(ports):
        key = (p.host_ip, p.host_port, p.protocol)
        if key in seen:
            raise ConfigError(f"ports[{i}]", f"host port {p.host_port}/{p.protocol} is "
                              "published twice")
        seen.add(key)
    return ports


@dataclass
class NetworkInfo:
    """What the engine needs to know about a container's network."""

    container_id: str
    mode: str
    network: str = ""
    netns_path: str = ""
    interface: str = ""
    ip: str = ""
    prefix_length: int = 0
    gateway: str = ""
    mac: str = ""
    ports: list[PortMapping] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NetworkInfo:
        data = dict(data)
        data["ports"] = [PortMapping(**p) for p in data.get("ports", [])]
        return cls(**data)


class NetworkError(FlatstackError):
    """Attaching or detaching a container's network failed."""


class Networks:
    """Attach/detach containers; all state under ``state_dir`` and ``run_dir``."""

    def __init__(self, state_dir: str = DEFAULT_STATE_DIR, run_dir: str = netns.DEFAULT_RUN_DIR,
                 cni_path: list[str] | tuple[str, ...] = DEFAULT_CNI_PATH,
                 store: NetworkStore | None = None) -> None:
        self.store = store or NetworkStore(state_dir)
        self.state_dir = self.store.state_dir
        self.run_dir = run_dir
        self.cni = CNI(os.path.join(self.state_dir, "cache"), cni_path)
        self.records = os.path.join(self.state_dir, "attachments")
        self._ruled: set[tuple[str, str, str, bool, bool]] = set()

    def _record_path(self, container_id: str) -> str:
        return os.path.join(self.records, f"{container_id}.json")

    def _save(self, info: NetworkInfo) -> None:
        os.makedirs(self.records, mode=0o700, exist_ok=True)
        path = self._record_path(info.container_id)
        write_json(path, info.to_json(), mode=0o600)

    def info(self, container_id: str) -> NetworkInfo | None:
        """The recorded attachment of a container, if any."""
        try:
            with open(self._record_path(container_id), encoding="utf-8") as f:
                return NetworkInfo.from_json(json.load(f))
        except FileNotFoundError:
            return None

    def attach(self, container_id: str, mode: str = "bridge",
               ports: list[str | PortMapping] | None = None,
               network: str | None = None,
               netns_ready: Callable[[str], object] | None = None) -> NetworkInfo:
        """Give ``container_id`` a network; on any failure nothing is left behind.

        ``netns_ready(path)`` is called once the namespace exists, before the plugins
        configure it: a container may be created in it meanwhile (not started)."""
        if not isinstance(container_id, str) or not _ID.match(container_id):
            raise ConfigError("container_id", f"{container_id!r} is not a valid id")
        if network:
            mode = network
        mode = mode or "bridge"
        port_list = parse_ports(list(ports or []))
        if mode in ("none", "host") and port_list:
            raise ConfigError("ports", f"ports cannot be published with --network {mode}")
        if mode == "host":
            return NetworkInfo(container_id, "host")
        name = DEFAULT_NETWORK if mode in ("bridge", "default") else mode
        conflist = None
        if mode != "none":
            net = self.store.get(name)
            self._ensure_rules(net)
            conflist = net.conflist(self.store.ipam_dir, ports=bool(port_list))
        if self.info(container_id) is not None:
            raise NetworkError(f"container {container_id} is already attached")
        self._check_ports_free(port_list)
        info = NetworkInfo(container_id, "none" if mode == "none" else "bridge",
                           "" if mode == "none" else name,
                           netns.path_of(container_id, self.run_dir), ports=port_list)
        self._save(info)  # first, so that a crash from here on can be detached
        try:
            netns.create(container_id, self.run_dir)
            if netns_ready is not None:
                netns_ready(info.netns_path)
            if conflist is not None:
                runtime = {"portMappings": [p.cni() for p in port_list]} if port_list else {}
                result = self.cni.add(conflist, container_id, info.netns_path, IFNAME, runtime)
                _fill(info, result)
                self._save(info)
        except BaseException:
            try:
                self.detach(container_id)
            except FlatstackError:
                pass  # report the attach error
            raise
        return info

    def _ensure_rules(self, net: Network) -> None:
        """Install the network's host rules once per process (and again if it changed)."""
        key = (net.name, net.bridge, net.subnet, net.ip_masq, net.firewall)
        if key not in self._ruled:
            rules.install(net.name, net.bridge, net.subnet, masquerade=net.ip_masq,
                          forward=net.firewall)
            self._ruled.add(key)

    def remove_network(self, name: str) -> None:
        """Forget a defined network and remove its host rules and bridge."""
        net = self.store.get(name)
        self.store.remove(name)
        self._ruled = {k for k in self._ruled if k[0] != name}
        rules.remove_bridge(net.bridge)

    def _check_ports_free(self, ports: list[PortMapping]) -> None:
        """Reject host ports another container publishes or a host process listens on.

        portmap would install the DNAT anyway and silently shadow the other user.
        """
        if not ports:
            return
        taken: dict[tuple[int, str], str] = {}
        for other in self.attached():
            other_info = self.info(other)
            for p in other_info.ports if other_info else []:
                taken[(p.host_port, p.protocol)] = other
        for i, p in enumerate(ports):
            owner = taken.get((p.host_port, p.protocol))
            if owner is not None:
                raise ConfigError(f"ports[{i}]", f"host port {p.host_port}/{p.protocol} is "
                                  f"already published by container {owner}")
            if p.protocol != "sctp" and _host_port_busy(p):
                raise ConfigError(f"ports[{i}]", f"host port {p.host_port}/{p.protocol} is "
                                  "already in use on the host")

    def detach(self, container_id: str) -> None:
        """Netns removal and CNI DEL; idempotent; every step runs even if one fails.

        The namespace goes first: the kernel then destroys the container's veth with it,
        in the background, and the plugins only release what lives outside it (IPAM,
        portmap's rules), which is most of what a synchronous DEL would spend.
        """
        info = self.info(container_id)
        errors: list[BaseException] = []
        if info is None or info.netns_path:
            try:
                netns.delete(container_id, self.run_dir)
            except FlatstackError as exc:
                errors.append(exc)
        if info is not None and info.network:
            try:
                ran = self.cni.delete(info.network, container_id, IFNAME, info.netns_path)
            except FlatstackError as exc:
                errors.append(exc)
                ran = None
            if ran is not None and _masquerades_per_container(ran):
                # An attachment made before network rules (bridge ipMasq): the plugin learns
                # the IP to un-masquerade from the interface, gone with the netns, so its
                # tagged nat rules are swept here.
                sweep_nat_rules(info.network, container_id)
        if errors:
            raise NetworkError(f"detach {container_id}: "
                               + "; ".join(str(e) for e in errors)) from errors[0]
        try:
            os.unlink(self._record_path(container_id))
        except FileNotFoundError:
            pass

    def attached(self) -> list[str]:
        """Ids of containers with a recorded attachment (for cleanup after a restart)."""
        try:
            return sorted(n[:-5] for n in os.listdir(self.records) if n.endswith(".json"))
        except FileNotFoundError:
            return []


def _host_port_busy(port: PortMapping) -> bool:
    """True when binding the host port fails with EADDRINUSE (a host listener owns it)."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in port.host_ip else socket.AF_INET
    kind = socket.SOCK_DGRAM if port.protocol == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind) as sock:
        try:
            sock.bind((port.host_ip or ("::" if family == socket.AF_INET6 else "0.0.0.0"),
                       port.host_port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def _masquerades_per_container(conflist: dict[str, Any]) -> bool:
    return any(p.get("type") == "bridge" and p.get("ipMasq") for p in conflist.get("plugins", []))


def sweep_nat_rules(network: str, container_id: str) -> int:
    """Delete nat rules commented ``name: "<network>" id: "<id>"`` and their private chains."""
    import shlex
    import subprocess

    tag = f'name: "{network}" id: "{container_id}"'
    try:
        dump = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True,
                              check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return 0
    chains: set[str] = set()
    removed = 0
    for line in dump.splitlines():
        if not line.startswith("-A "):
            continue
        words = shlex.split(line)
        if tag not in words:
            continue
        target = words[words.index("-j") + 1] if "-j" in words else ""
        if target.startswith("CNI-") and "HOSTPORT" not in target:
            chains.add(target)
        subprocess.run(["iptables", "-t", "nat", "-D", *words[1:]], capture_output=True,
                       check=False)
        removed += 1
    for chain in chains:
        subprocess.run(["iptables", "-t", "nat", "-F", chain], capture_output=True, check=False)
        subprocess.run(["iptables", "-t", "nat", "-X", chain], capture_output=True, check=False)
    return removed


def _fill(info: NetworkInfo, result: dict[str, Any]) -> None:
    """Copy address, gateway and MAC of the container interface out of a CNI result."""
    interfaces = result.get("interfaces") or []
    for ip in result.get("ips") or []:
        iface = ip.get("interface")
        if iface is not None and 0 <= iface < len(interfaces) and \
                interfaces[iface].get("name") != IFNAME:
            continue
        addr = ipaddress.ip_interface(ip["address"])
        if addr.version == 4 or not info.ip:
            info.ip, info.prefix_length = str(addr.ip), addr.network.prefixlen
            info.gateway = ip.get("gateway", "")
            if iface is not None and 0 <= iface < len(interfaces):
                info.mac = interfaces[iface].get("mac", "")
    info.interface = IFNAME


_default: Networks | None = None


def _networks() -> Networks:
    global _default
    if _default is None:
        _default = Networks()
    return _default


def attach(container_id: str, mode: str = "bridge", ports: list[str | PortMapping] | None = None,
           network: str | None = None) -> NetworkInfo:
    """Attach with the default state and run directories (see :class:`Networks`)."""
    return _networks().attach(container_id, mode, ports, network)


def detach(container_id: str) -> None:
    """Detach with the default state and run directories (see :class:`Networks`)."""
    _networks().detach(container_id)


def _host_nameservers(resolv: str) -> tuple[list[str], list[str], list[str]]:
    nameservers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    try:
        with open(resolv, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        lines = []
    for line in lines:
        words = line.split("#", 1)[0].split()
        if len(words) < 2:
            continue
        if words[0] == "nameserver":
            nameservers.append(words[1])
        elif words[0] in ("search", "domain"):
            search = words[1:]
        elif words[0] == "options":
            options.extend(words[1:])
    return nameservers, search, options


def write_resolv_conf(directory: str, mode: str = "bridge", host_resolv: str = "/etc/resolv.conf",
                      dns: list[str] | None = None) -> str:
    """Write ``directory``/resolv.conf; returns its path.

    Host mode copies the host's file.  Otherwise the host's nameservers are kept
    except loopback ones (127.0.0.53 and friends are unreachable from a netns).
    """
    path = os.path.join(directory, "resolv.conf")
    os.makedirs(directory, exist_ok=True)
    if mode == "host" and not dns:
        try:
            with open(host_resolv, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            text = ""
    else:
        servers, search, options = _host_nameservers(host_resolv)
        if dns:
            servers = list(dns)
        servers = [s for s in servers if not _is_loopback(s)]
        lines = [f"nameserver {s}" for s in servers]
        if search:
            lines.append("search " + " ".join(search))
        if options:
            lines.append("options " + " ".join(options))
        text = "\n".join(lines) + "\n" if lines else ""
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def write_hosts(directory: str, hostname: str, ip: str = "",
                extra: dict[str, str] | None = None) -> str:
    """Write ``directory``/hosts: localhost entries and ``hostname`` -> ``ip``."""
    lines = ["127.0.0.1\tlocalhost localhost.localdomain",
             "::1\tlocalhost localhost.localdomain ip6-localhost ip6-loopback"]
    if hostname:
        lines.append(f"{ip or '127.0.1.1'}\t{hostname}")
    for name, address in (extra or {}).items():
        lines.append(f"{address}\t{name}")
    path = os.path.join(directory, "hosts")
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path
