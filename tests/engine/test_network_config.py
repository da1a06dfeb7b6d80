"""Network definitions, port specs, resolv.conf and hosts: validation names the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flatstack.errors import ConfigError
from flatstack.network.attach import (
    PortMapping,
    parse_port,
    parse_ports,
    write_hosts,
    write_resolv_conf,
)
from flatstack.network.config import NetworkStore


def test_default_network_is_bridge_host_local_and_portmap_for_ports(tmp_path: Path) -> None:
    store = NetworkStore(str(tmp_path))
    net = store.get("flatstack")
    assert (net.subnet, net.bridge, net.gateway) == ("10.89.0.0/24", "flatstack0", "10.89.0.1")
    conf = net.conflist(store.ipam_dir)
    assert conf["cniVersion"] == "1.0.0" and conf["name"] == "flatstack"
    # Without published ports: the bridge plugin alone; masquerade and forward acceptance
    # are the network's own rules (network.rules), not per-container plugin chains.
    (bridge,) = conf["plugins"]
    assert bridge["type"] == "bridge" and bridge["isGateway"] and bridge["ipMasq"] is False
    assert bridge["ipam"]["type"] == "host-local"
    assert bridge["ipam"]["dataDir"] == str(tmp_path / "ipam")
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.89.0.0/24", "gateway": "10.89.0.1"}]]
    # With ports, portmap follows the bridge.
    assert net.conflist(store.ipam_dir, ports=True)["plugins"] == [bridge, {
        "type": "portmap", "capabilities": {"portMappings": True}, "snat": True}]
    assert net.ip_masq and net.firewall
    # Persisted: a second store (a restarted daemon) reads the same definition.
    assert json.loads((tmp_path / "conf" / "flatstack.json").read_text())["bridge"] == "flatstack0"
    assert NetworkStore(str(tmp_path)).get("flatstack") == net


def test_user_networks_are_stored_listed_and_removed(tmp_path: Path) -> None:
    store = NetworkStore(str(tmp_path))
    made = store.create("backend", "10.89.7.0/24", bridge="fsbackend")
    assert made.gateway == "10.89.7.1"
    assert store.create("front", "10.89.8.0/24").bridge == "fs-front"
    assert [n.name for n in store.list()] == ["backend", "front"]
    assert store.get("backend") == made
    store.remove("front")
    assert [n.name for n in store.list()] == ["backend"]


@pytest.mark.parametrize(("kwargs", "field", "why"), [
    ({"name": "bad name!", "subnet": "10.89.9.0/24"}, "name", "not a valid network name"),
    ({"name": "host", "subnet": "10.89.9.0/24"}, "name", "reserved"),
    ({"name": "x", "subnet": "10.89.9.1/24"}, "subnet", "host bits set"),
    ({"name": "x", "subnet": "banana"}, "subnet", "banana"),
    ({"name": "x", "subnet": "fd00::/64"}, "subnet", "only IPv4"),
    ({"name": "x", "subnet": "10.89.9.0/31"}, "subnet", "too small"),
    ({"name": "x", "subnet": "10.89.9.0/24", "bridge": "a-very-long-bridge-name"}, "bridge",
     "not a valid interface name"),
    ({"name": "x", "subnet": "10.89.9.0/24", "gateway": "10.1.1.1"}, "gateway",
     "not a host address"),
    ({"name": "x", "subnet": "10.89.9.0/24", "ip_masq": "yes"}, "ip_masq", "true or false"),
])
def test_bad_definitions_name_the_field(tmp_path: Path, kwargs: dict, field: str,
                                        why: str) -> None:
    store = NetworkStore(str(tmp_path))
    with pytest.raises(ConfigError, match=why) as err:
        store.create(**kwargs)
    assert err.value.field == field
    assert store.list() == []  # nothing written


def test_clashes_and_missing_networks(tmp_path: Path) -> None:
    store = NetworkStore(str(tmp_path))
    store.create("one", "10.89.10.0/24", bridge="fsone")
    for kwargs, field, why in [
        ({"name": "one", "subnet": "10.89.11.0/24"}, "name", "already exists"),
        ({"name": "two", "subnet": "10.89.0.0/16"}, "subnet", "overlaps 10.89.10.0/24"),
        ({"name": "two", "subnet": "10.89.12.0/24", "bridge": "fsone"}, "bridge", "already used"),
    ]:
        with pytest.raises(ConfigError, match=why) as err:
            store.create(**kwargs)
        assert err.value.field == field
    with pytest.raises(ConfigError, match="'nope' does not exist") as err:
        store.get("nope")
    assert err.value.field == "network"
    with pytest.raises(ConfigError, match="cannot be removed"):
        store.remove("flatstack")


def test_port_specs() -> None:
    assert parse_port("8080:80") == PortMapping(8080, 80, "tcp", "")
    assert parse_port("80") == PortMapping(80, 80, "tcp", "")
    assert parse_port("127.0.0.1:5353:53/udp") == PortMapping(5353, 53, "udp", "127.0.0.1")
    assert parse_port("[::1]:8443:443").host_ip == "::1"
    assert parse_port("8080:80").cni() == {"hostPort": 8080, "containerPort": 80,
                                           "protocol": "tcp"}
    for spec, why in [("abc", "is not"), ("70000:80", "host port 70000 is out of range"),
                      ("80:0", "container port 0"), ("80:80/icmp", "protocol 'icmp'"),
                      ("1.2.3.999:80:80", "host IP '1.2.3.999'")]:
        with pytest.raises(ConfigError, match=why) as err:
            parse_ports(["1:1", spec])
        assert err.value.field == "ports[1]"
    with pytest.raises(ConfigError, match="published twice"):
        parse_ports(["8080:80", "8080:81"])
    assert len(parse_ports(["53:53/tcp", "53:53/udp"])) == 2


def test_resolv_conf_drops_loopback_nameservers(tmp_path: Path) -> None:
    host = tmp_path / "host-resolv"
    host.write_text("# managed\nnameserver 127.0.0.53\nnameserver 10.255.255.53\n"
                    "nameserver ::1\nsearch corp.example\noptions edns0\n")
    out = Path(write_resolv_conf(str(tmp_path / "c1"), "bridge", str(host)))
    assert out.read_text() == ("nameserver 10.255.255.53\nsearch corp.example\n"
                               "options edns0\n")
    # Host mode shares the host's stack, so its loopback resolver works: copy verbatim.
    same = Path(write_resolv_conf(str(tmp_path / "c2"), "host", str(host)))
    assert same.read_text() == host.read_text()
    # Explicit servers win.
    own = Path(write_resolv_conf(str(tmp_path / "c3"), "bridge", str(host), dns=["192.0.2.53"]))
    assert own.read_text().splitlines()[0] == "nameserver 192.0.2.53"
    # This machine's real file.
    real = Path(write_resolv_conf(str(tmp_path / "c4"))).read_text()
    assert all(not line.startswith("nameserver 127.") for line in real.splitlines())


def test_hosts_file(tmp_path: Path) -> None:
    text = Path(write_hosts(str(tmp_path), "web", "10.89.0.5", {"db": "10.89.0.6"})).read_text()
    lines = text.splitlines()
    assert lines[0].split() == ["127.0.0.1", "localhost", "localhost.localdomain"]
    assert lines[1].split()[:2] == ["::1", "localhost"]
    assert lines[2].split() == ["10.89.0.5", "web"]
    assert lines[3].split() == ["10.89.0.6", "db"]
