"""What a container gets without asking, as with docker and podman: low ports and ICMP
echo sockets in its own network namespace; ``-e KEY`` takes the value from the user's
shell (not the daemon's)."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import urllib.request
from pathlib import Path

from tests.e2e._daemon import FLATSTACK, IMAGE, Daemon, empty
from tests.engine._image_support import free_port, wait_port

PAGE = "<p>port 80, bound by the container root</p>"


def _icmp_socket_as(netns_path: str, gid: int) -> int:
    """In a child joined to ``netns_path`` with host gid ``gid`` (root's capabilities
    dropped by setuid): 0 when an ICMP echo socket opens, else the errno."""
    from flatstack.kernel import ns as kns

    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            kns.join_path(netns_path, kns.CLONE_NEWNET)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(gid)
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP).close()
        except OSError as err:
            code = err.errno or 1
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_low_ports_and_ping_group_range(daemon: Daemon, layouts: dict[str, Path]) -> None:
    daemon.import_images(layouts)
    port = free_port()
    script = (f"echo '{PAGE}' > /tmp/index.html; "
              "cat /proc/sys/net/ipv4/ip_unprivileged_port_start "
              "/proc/sys/net/ipv4/ping_group_range; exec httpd -f -p 80 -h /tmp")
    daemon.cli("run", "-d", "--name", "low", "-p", f"127.0.0.1:{port}:80", IMAGE, "sh", "-c",
               script)
    wait_port("127.0.0.1", port)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=5) as resp:
        assert resp.read().decode().strip() == PAGE
    # root in the container has no CAP_NET_BIND_SERVICE over the host-owned netns: port 80
    # works because the port floor is 0; the group range is exactly the container's ids
    assert daemon.cli("logs", "low").stdout.split("\n")[:2] == ["0", "0\t65535"]
    [record] = json.loads(daemon.cli("inspect", "low").stdout)
    host_gid = record["userns"]["host_id"]
    netns_path = record["network"]["netns"]
    assert _icmp_socket_as(netns_path, host_gid + 1000) == 0
    assert _icmp_socket_as(netns_path, host_gid - 1) == errno.EACCES
    daemon.cli("rm", "-f", "low")

    # --network none: its own (loopback-only) namespace gets the same
    proc = daemon.cli("run", "--rm", "--network", "none", IMAGE, "sh", "-c",
                      "cat /proc/sys/net/ipv4/ping_group_range; httpd -p 80 && echo bound")
    assert proc.stdout == "0\t65535\nbound\n"
    # --network host: the host's sysctls are left alone
    host_range = Path("/proc/sys/net/ipv4/ping_group_range").read_text()
    proc = daemon.cli("run", "--rm", "--network", "host", IMAGE, "cat",
                      "/proc/sys/net/ipv4/ip_unprivileged_port_start")
    assert proc.stdout == Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text()
    assert Path("/proc/sys/net/ipv4/ping_group_range").read_text() == host_range
    assert empty(daemon.leftovers()), daemon.leftovers()


def test_env_key_alone_comes_from_the_users_shell(daemon: Daemon,
                                                  layouts: dict[str, Path]) -> None:
    daemon.import_images(layouts)
    # the daemon has FLATSTACK_SOCKET in its environment too: a bare key must not reach it
    env = {k: v for k, v in daemon.env.items() if k != "FLATSTACK_DEMO_UNSET"}
    env["FROM_SHELL"] = "shell value with = and spaces"
    proc = subprocess.run(
        [str(FLATSTACK), "run", "--rm", "--network", "none", "-e", "FROM_SHELL",
         "-e", "FLATSTACK_DEMO_UNSET", "-e", "EXPLICIT=1", IMAGE, "sh", "-c",
         'echo "$FROM_SHELL|${FLATSTACK_DEMO_UNSET-unset}|$EXPLICIT"'],
        env=env, capture_output=True, text=True, timeout=60, check=False)
    assert (proc.returncode, proc.stdout) == (0, "shell value with = and spaces|unset|1\n"), \
        proc.stderr
    proc = subprocess.run([str(FLATSTACK), "run", "--rm", "-e", "=x", IMAGE, "true"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 125 and "--env[0]" in proc.stderr
    assert empty(daemon.leftovers()), daemon.leftovers()
