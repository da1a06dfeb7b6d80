"""A flatrun container joins a netns made by attach() and is reachable from the host."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from flatstack.network.attach import write_hosts, write_resolv_conf
from tests.engine._network_support import (  # noqa: F401 - fixtures
    NetEnv,
    http_get,
    ipam_allocations,
    iptables_rules,
    make_env,
    net_env_fixture,
    release,
)


def test_flatrun_container_in_attached_netns_serves_host(env: NetEnv, flatrun, make_bundle,
                                                         tmp_path: Path) -> None:
    cid = flatrun.new_id()
    env.ids.append(cid)
    info = env.networks.attach(cid, "bridge", ports=["18990:8080"])
    files = tmp_path / "etc"
    write_resolv_conf(str(files), "bridge")
    write_hosts(str(files), "web", info.ip)

    def edit(config: dict[str, Any]) -> None:
        for ns in config["linux"]["namespaces"]:
            if ns["type"] == "network":
                ns["path"] = info.netns_path
        config["hostname"] = "web"
        for name in ("hosts", "resolv.conf"):
            config["mounts"].append({"destination": f"/etc/{name}", "type": "bind",
                                     "source": str(files / name), "options": ["bind", "ro"]})

    bundle = make_bundle(["httpd", "-f", "-p", "8080", "-h", "/etc"], own_rootfs=True, edit=edit)
    try:
        flatrun("run", "-d", "-b", bundle, cid)
        pid = flatrun.state(cid)["pid"]
        # The container process really is in the attached namespace.
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(info.netns_path).st_ino
        # Reached from the host over the bridge, serving the hosts file we wrote.
        hosts = http_get(info.ip, 8080, "/hosts")
        assert f"{info.ip}\tweb" in hosts
        assert "nameserver 127." not in http_get(info.ip, 8080, "/resolv.conf")
        # And through the published port (kernel DNAT, no proxy process).
        assert f"{info.ip}\tweb" in http_get(info.gateway, 18990, "/hosts")
        assert f"{info.ip}\tweb" in http_get("127.0.0.1", 18990, "/hosts")
    finally:
        flatrun("delete", "--force", cid, check=False)
        env.networks.detach(cid)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(info.netns_path)
    assert ipam_allocations(env) == []
    assert not any("--dport 18990" in r or f"{info.ip}/32" in r for r in iptables_rules())
