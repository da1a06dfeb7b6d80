"""SCMP_ACT_NOTIFY: the listener reaches the agent at listenerPath, which decides."""

from __future__ import annotations

import fcntl
import json
import socket
import struct
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Bundles, Flatrun

SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100  # _IOWR('!', 0, struct seccomp_notif), 80 bytes
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101  # _IOWR('!', 1, struct seccomp_notif_resp), 24 bytes
SYS_MKDIR, SYS_MKDIRAT = 83, 258
EACCES = 13


class Agent(threading.Thread):
    """A seccomp agent: takes the listener, answers the first trapped call with EACCES."""

    def __init__(self, path: str) -> None:
        super().__init__(daemon=True)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(1)
        self.server.settimeout(20)
        self.state: dict[str, Any] = {}
        self.syscall = -1
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn, _ = self.server.accept()
            with conn:
                msg, fds, _flags, _addr = socket.recv_fds(conn, 65536, 1)
            self.state = json.loads(msg)
            listener = fds[0]
            notif = bytearray(80)
            fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, notif)
            notif_id, _pid, _flags2, nr = struct.unpack_from("<QIIi", notif)
            self.syscall = nr
            response = struct.pack("<QqiI", notif_id, 0, -EACCES, 0)
            fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, bytearray(response))
        except BaseException as err:  # reported by the test
            self.error = err
        finally:
            self.server.close()


@pytest.mark.parametrize("nnp", [True, False])
def test_notify_agent_answers(flatrun: Flatrun, make_bundle: Bundles, tmp_path: Path,
                              nnp: bool) -> None:
    path = str(tmp_path / "agent.sock")
    agent = Agent(path)
    agent.start()

    def edit(config: dict[str, Any]) -> None:
        config["process"]["noNewPrivileges"] = nnp
        config["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": path,
            "listenerMetadata": "from-the-test",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]}

    bundle = make_bundle(["sh", "-c", "mkdir /tmp/x 2>&1; echo done"], edit=edit)
    cid = flatrun.new_id()
    result = flatrun("run", "--bundle", bundle, cid, check=False)
    agent.join(10)
    assert agent.error is None, agent.error
    assert "Permission denied" in result.stdout, result.stdout + result.stderr
    assert "done" in result.stdout
    assert agent.syscall in (SYS_MKDIR, SYS_MKDIRAT)
    assert agent.state["fds"] == ["seccompFd"]
    assert agent.state["metadata"] == "from-the-test"
    assert agent.state["state"]["id"] == cid
    assert agent.state["state"]["pid"] == agent.state["pid"] > 1  # the host's pid


def test_unreachable_agent_fails_create(flatrun: Flatrun, make_bundle: Bundles,
                                        tmp_path: Path) -> None:
    def edit(config: dict[str, Any]) -> None:
        config["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": str(tmp_path / "nobody.sock"),
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}

    cid = flatrun.new_id()
    result = flatrun("create", "--bundle", make_bundle(["true"], edit=edit), cid, check=False)
    assert result.returncode != 0
    assert "linux.seccomp.listenerPath" in result.stderr
    assert "no such file or directory" in result.stderr
    assert not (Path(flatrun.root) / cid).exists()
