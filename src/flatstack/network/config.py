"""Network definitions: a bridge + host-local IPAM (+ portmap) conflist per name.

Definitions live as JSON under ``<state dir>/conf/<name>.json``; the IPAM
allocations of host-local under ``<state dir>/ipam``.  The default network
``flatstack`` is created on first use.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from flatstack._atomic import write_json
from flatstack.errors import ConfigError

DEFAULT_STATE_DIR = "/var/lib/flatstack/networks"
DEFAULT_NETWORK = "flatstack"
DEFAULT_BRIDGE = "flatstack0"
#: podman's CNI default is 10.88.0.0/16 (netavark's podman0 too): stay clear of it.
DEFAULT_SUBNET = "10.89.0.0/24"
CNI_VERSION = "1.0.0"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
RESERVED_NAMES = ("none", "host", "bridge", "default")


@dataclass
class Network:
    """A user-visible network: a Linux bridge with a subnet.

    ``ip_masq`` masquerades outbound traffic from the subnet; ``firewall`` accepts the
    bridge's traffic in ``FORWARD`` (see network.rules).
    """

    name: str
    subnet: str
    bridge: str
    gateway: str = ""
    ip_masq: bool = True
    firewall: bool = True
    labels: dict[str, str] = field(default_factory=dict)

    def validate(self) -> Network:
        """Check every field; fills in the gateway (first host). Raises ConfigError."""
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError("name", f"{self.name!r} is not a valid network name "
                              "(letters, digits, '_', '.', '-'; up to 63 characters)")
        if self.name in RESERVED_NAMES:
            raise ConfigError("name", f"{self.name!r} is reserved for the --network mode")
        try:
            net = ipaddress.ip_network(self.subnet, strict=True)
        except (TypeError, ValueError) as exc:
            raise ConfigError("subnet", f"{self.subnet!r}: {exc}") from None
        if net.version != 4:
            raise ConfigError("subnet", f"{self.subnet}: only IPv4 subnets are supported")
        if net.prefixlen > 30:
            raise ConfigError("subnet", f"{self.subnet}: too small (need at least a /30)")
        if not isinstance(self.bridge, str) or not _IFNAME.match(self.bridge):
            raise ConfigError("bridge", f"{self.bridge!r} is not a valid interface name "
                              "(1-15 characters: letters, digits, '_', '.', '-')")
        if self.gateway:
            try:
                gw = ipaddress.ip_address(self.gateway)
            except ValueError as exc:
                raise ConfigError("gateway", str(exc)) from None
            if gw not in net or gw in (net.network_address, net.broadcast_address):
                raise ConfigError("gateway", f"{gw} is not a host address of {net}")
        else:
            self.gateway = str(net.network_address + 1)
        for key in ("ip_masq", "firewall"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(key, "must be true or false")
        return self

    def conflist(self, ipam_dir: str, *, ports: bool = False) -> dict[str, Any]:
        """The CNI network configuration list for one attachment.

        Masquerade and forward acceptance are the network's own rules (network.rules),
        not the bridge plugin's ``ipMasq`` or the firewall plugin, which add and remove
        chains per container; portmap is in the list only when ports are published
        (without mappings it has nothing to do). The cached list is what DEL runs.
        """
        plugins: list[dict[str, Any]] = [
            {
                "type": "bridge",
                "bridge": self.bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": ipam_dir,
                    "ranges": [[{"subnet": self.subnet, "gateway": self.gateway}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
        ]
        if ports:
            plugins.append({"type": "portmap", "capabilities": {"portMappings": True},
                            "snat": True})
        return {"cniVersion": CNI_VERSION, "name": self.name, "plugins": plugins}


class NetworkStore:
    """Network definitions under a state directory (tests pass a temporary one)."""

    def __init__(self, state_dir: str = DEFAULT_STATE_DIR, *,
                 default_subnet: str = DEFAULT_SUBNET,
                 default_bridge: str = DEFAULT_BRIDGE) -> None:
        self.state_dir = state_dir
        self.conf_dir = os.path.join(state_dir, "conf")
        self.ipam_dir = os.path.join(state_dir, "ipam")
        self.default_subnet = default_subnet
        self.default_bridge = default_bridge

    def _path(self, name: str) -> str:
        return os.path.join(self.conf_dir, f"{name}.json")

    def create(self, name: str, subnet: str, bridge: str = "", **options: Any) -> Network:
        """Define a new network; rejects duplicates and clashing subnets or bridges."""
        bridge = bridge or f"fs-{name}"[:15]
        net = Network(name=name, subnet=subnet, bridge=bridge, **options).validate()
        if os.path.exists(self._path(name)):
            raise ConfigError("name", f"network {name!r} already exists")
        self._check_clash(net)
        self._write(net)
        return net

    def _check_clash(self, net: Network) -> None:
        mine = ipaddress.ip_network(net.subnet)
        for other in self.list():
            if other.bridge == net.bridge:
                raise ConfigError("bridge", f"{net.bridge} is already used by network "
                                  f"{other.name!r}")
            if ipaddress.ip_network(other.subnet).overlaps(mine):
                raise ConfigError("subnet", f"{net.subnet} overlaps {other.subnet} of network "
                                  f"{other.name!r}")

    def _write(self, net: Network) -> None:
        os.makedirs(self.conf_dir, mode=0o700, exist_ok=True)
        write_json(self._path(net.name), asdict(net), indent=2, mode=0o600)

    def get(self, name: str) -> Network:
        """The network ``name``; the default one is created on first use."""
        if name == DEFAULT_NETWORK and not os.path.exists(self._path(name)):
            net = Network(DEFAULT_NETWORK, self.default_subnet, self.default_bridge).validate()
            self._write(net)
            return net
        if not _NAME.match(name or ""):
            raise ConfigError("network", f"{name!r} is not a valid network name")
        try:
            with open(self._path(name), encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise ConfigError("network", f"network {name!r} does not exist") from None
        except ValueError as exc:
            raise ConfigError("network", f"{self._path(name)}: corrupt definition: {exc}") from None
        return Network(**data).validate()

    def list(self) -> list[Network]:
        """Every defined network, by name."""
        try:
            names = sorted(os.listdir(self.conf_dir))
        except FileNotFoundError:
            return []
        return [self.get(n[:-5]) for n in names if n.endswith(".json")]

    def remove(self, name: str) -> None:
        """Forget a network definition (its bridge goes away with its last container)."""
        if name == DEFAULT_NETWORK:
            raise ConfigError("name", "the default network cannot be removed")
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            raise ConfigError("network", f"network {name!r} does not exist") from None
