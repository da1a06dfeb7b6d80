"""attach/detach through the real CNI plugins: bridge, IPAM, portmap DNAT, cleanup."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from flatstack.control.reconciler import wait_until
from flatstack.errors import ConfigError
from flatstack.network import netns
from flatstack.network.attach import NetworkError, Networks
from flatstack.network.cni import CNIError
from tests.engine._network_support import (  # noqa: F401 - fixtures
    NetEnv,
    http_get,
    ipam_allocations,
    iptables_rules,
    links,
    make_env,
    net_env_fixture,
    ns_run,
    release,
    serve_in_netns,
)


@pytest.fixture
def www(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text(f"hello from {tmp_path.name}\n")
    return root


def _veth_peer_names(env: NetEnv) -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show", "master", env.bridge], capture_output=True,
                         text=True, check=False).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def test_bridge_attach_reachable_published_port_and_clean_detach(env: NetEnv, www: Path) -> None:
    nets = env.networks
    # Warm up once so the plugins' shared chains (CNI-HOSTPORT-*, CNI-FORWARD) exist; after
    # that a full attach/detach cycle must leave iptables exactly as it found it.
    warm = env.new_id()
    nets.attach(warm, "bridge", ports=["18979:80"])
    nets.detach(warm)
    rules_before = iptables_rules()
    links_before = links()

    cid = env.new_id()
    info = nets.attach(cid, "bridge", ports=["18980:80"])
    server = serve_in_netns(info.netns_path, www)
    try:
        assert info.mode == "bridge" and info.network == "flatstack"
        assert info.netns_path == os.path.join(nets.run_dir, "netns", cid)
        assert netns.is_mounted(info.netns_path)
        # An address in the subnet, and the container really has it on eth0.
        assert info.ip.startswith(env.subnet.rsplit(".", 2)[0] + ".") and info.prefix_length == 24
        assert info.gateway == env.subnet.replace("0/24", "1")
        assert f"{info.ip}/24" in ns_run(info.netns_path, "ip", "-o", "-4", "addr", "show", "eth0")
        assert info.mac and info.mac in ns_run(info.netns_path, "ip", "link", "show", "eth0")
        assert ipam_allocations(env) == [info.ip]
        assert len(_veth_peer_names(env)) == 1
        # The host reaches the container over the bridge.
        assert f"hello from {www.parent.name}" in http_get(info.ip, 80)
        # Published port through the kernel's DNAT: via the bridge gateway (a host address).
        assert f"hello from {www.parent.name}" in http_get(info.gateway, 18980)
        # ... and via 127.0.0.1: portmap's snat marks localhost traffic for masquerade and
        # sets route_localnet on the bridge, so this works too.
        assert f"hello from {www.parent.name}" in http_get("127.0.0.1", 18980)
        sysctl = Path(f"/proc/sys/net/ipv4/conf/{env.bridge}/route_localnet").read_text()
        assert sysctl.strip() == "1"
        # The DNAT rule is there and no userspace process listens on the host port.
        dnat = [r for r in iptables_rules() if "--dport 18980" in r and "DNAT" in r]
        assert dnat and f"--to-destination {info.ip}:80" in dnat[0]
        listeners = subprocess.run(["ss", "-Htln", "sport = :18980"], capture_output=True,
                                   text=True, check=True).stdout
        assert listeners.strip() == ""
    finally:
        server.kill()
        server.wait()
        nets.detach(cid)

    assert not os.path.exists(info.netns_path)
    assert ipam_allocations(env) == []
    # The netns went first: the kernel destroys its veth pair in the background.
    assert wait_until(lambda: _veth_peer_names(env) == set() and links() == links_before,
                      timeout=10)
    assert iptables_rules() == rules_before
    assert not any(cid in r or f"{info.ip}/32" in r for r in iptables_rules())
    assert nets.attached() == []
    assert os.listdir(nets.cni.cache_dir) == []
    # DEL is idempotent.
    nets.detach(cid)
    nets.detach(cid)


def test_detach_after_daemon_restart_uses_the_cache(env: NetEnv, www: Path) -> None:
    cid = env.new_id()
    info = env.networks.attach(cid, ports=["18981:80/tcp"])
    # A new manager over the same directories, as after a daemon restart.
    reborn = Networks(run_dir=env.networks.run_dir, store=env.networks.store)
    assert reborn.attached() == [cid]
    assert reborn.info(cid) == info
    cache = reborn.cni.cached("flatstack", cid, "eth0")
    assert cache is not None and cache["result"]["ips"][0]["address"] == f"{info.ip}/24"
    assert cache["runtimeConfig"]["portMappings"][0]["hostPort"] == 18981
    reborn.detach(cid)
    assert ipam_allocations(env) == []
    assert not any("--dport 18981" in r for r in iptables_rules())
    assert not os.path.exists(info.netns_path)


def test_del_without_netns_still_releases_everything(env: NetEnv) -> None:
    cid = env.new_id()
    info = env.networks.attach(cid, ports=["18982:80"])
    # Someone (a crash, an admin) already removed the namespace: DEL must still clean up.
    netns.delete(cid, env.networks.run_dir)
    env.networks.detach(cid)
    assert ipam_allocations(env) == []
    assert not any("--dport 18982" in r or f"{info.ip}/32" in r for r in iptables_rules())
    assert env.networks.attached() == []


def test_failing_plugin_in_chain_leaves_nothing_behind(env: NetEnv,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    store = env.networks.store
    store.create("broken", "10.89.99.0/24", bridge=f"{env.bridge}b")
    rules_before = iptables_rules()
    original = store.get("broken").conflist

    def with_bogus(ipam_dir: str, **kwargs: bool) -> dict:
        conf = original(ipam_dir, **kwargs)
        conf["plugins"].insert(1, {"type": "tuning", "sysctl": {"net.bogus.nope": "1"}})
        return conf

    cid = env.new_id()
    net = store.get("broken")
    monkeypatch.setattr(net, "conflist", with_bogus)
    monkeypatch.setattr(store, "get", lambda name: net)
    with pytest.raises(CNIError) as err:
        env.networks.attach(cid, network="broken", ports=["18983:80"])
    # The plugin's JSON error (code + msg) became a clear exception.
    assert err.value.plugin == "tuning" and err.value.command == "ADD"
    assert err.value.code == 999 and "/proc/sys/net/bogus/nope" in err.value.msg
    # The bridge plugin had already run: its veth, IP and masquerade rules are gone again.
    assert not os.path.exists(netns.path_of(cid, env.networks.run_dir))
    assert ipam_allocations(env, "broken") == []
    assert wait_until(lambda: _veth_peer_names(
        NetEnv(env.networks, f"{env.bridge}b", "", env.ipam_dir)) == set(), timeout=10)
    assert [r for r in iptables_rules() if r not in rules_before and "CNI-" in r
            and "HOSTPORT" not in r and "FORWARD" not in r and "ADMIN" not in r] == []
    assert env.networks.attached() == [] and os.listdir(env.networks.cni.cache_dir) == []


def test_unknown_plugin_type_is_a_clear_error(env: NetEnv) -> None:
    conf = {"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "no-such-plugin"}]}
    run = env.networks.run_dir
    path = netns.create("probe", run)
    try:
        with pytest.raises(CNIError, match="no-such-plugin lookup: plugin not found in CNI_PATH"):
            env.networks.cni.add(conf, "probe", path)
    finally:
        netns.delete("probe", run)
    assert env.networks.cni.version("bridge")["cniVersion"] == "1.0.0"


def test_check_verifies_the_attachment(env: NetEnv) -> None:
    cid = env.new_id()
    info = env.networks.attach(cid)
    try:
        env.networks.cni.check("flatstack", cid)
        # Break what the bridge plugin set up: CHECK must notice.
        ns_run(info.netns_path, "ip", "addr", "flush", "dev", "eth0")
        with pytest.raises(CNIError, match="CHECK"):
            env.networks.cni.check("flatstack", cid)
    finally:
        env.networks.detach(cid)
    # With the address gone the bridge plugin skips its masquerade teardown on DEL;
    # detach must still remove every rule tagged with this container.
    assert not any(f'id: \\"{cid}\\"' in r or f"{info.ip}/32" in r for r in iptables_rules())
    assert ipam_allocations(env) == []


def test_port_already_in_use_is_refused_and_nothing_is_left(env: NetEnv) -> None:
    import socket

    first = env.new_id()
    env.networks.attach(first, ports=["18984:80"])
    rules = iptables_rules()
    try:
        second = env.new_id()
        with pytest.raises(ConfigError, match=f"18984/tcp is already published by container "
                           f"{first}") as err:
            env.networks.attach(second, ports=["18985:81", "18984:80"])
        assert err.value.field == "ports[1]"
        # A host process listening on the port: refused as well (DNAT would shadow it).
        with socket.socket() as listener:
            listener.bind(("0.0.0.0", 0))
            listener.listen()
            busy = listener.getsockname()[1]
            with pytest.raises(ConfigError, match=f"{busy}/tcp is already in use on the host"):
                env.networks.attach(second, ports=[f"{busy}:80"])
        # The same number over udp is a different port.
        env.networks.attach(second, ports=["18984:80/udp"])
        env.networks.detach(second)
        assert not os.path.exists(netns.path_of(second, env.networks.run_dir))
        assert iptables_rules() == rules
        assert env.networks.attached() == [first]
    finally:
        env.networks.detach(first)


def test_none_and_host_modes(env: NetEnv) -> None:
    cid = env.new_id()
    info = env.networks.attach(cid, "none")
    assert info.mode == "none" and info.ip == "" and netns.is_mounted(info.netns_path)
    out = ns_run(info.netns_path, "ip", "-o", "link")
    assert [line.split(":")[1].strip() for line in out.splitlines()] == ["lo"]
    assert "127.0.0.1/8" in ns_run(info.netns_path, "ip", "-o", "addr", "show", "lo")
    env.networks.detach(cid)
    assert not os.path.exists(info.netns_path) and env.networks.attached() == []

    host = env.networks.attach(env.new_id(), "host")
    assert host.mode == "host" and host.netns_path == ""
    with pytest.raises(ConfigError, match="cannot be published with --network host") as err:
        env.networks.attach(env.new_id(), "host", ports=["80"])
    assert err.value.field == "ports"


def test_bad_attach_requests_leave_nothing(env: NetEnv) -> None:
    with pytest.raises(ConfigError, match="network 'nope' does not exist"):
        env.networks.attach(env.new_id(), network="nope")
    with pytest.raises(ConfigError, match="ports\\[0\\]"):
        env.networks.attach(env.new_id(), ports=["99999:80"])
    with pytest.raises(ConfigError, match="container_id"):
        env.networks.attach("../evil")
    cid = env.new_id()
    env.networks.attach(cid, "none")
    with pytest.raises(NetworkError, match="already attached"):
        env.networks.attach(cid, "none")
    env.networks.detach(cid)
    assert netns.list_names(env.networks.run_dir) == [] and env.networks.attached() == []
