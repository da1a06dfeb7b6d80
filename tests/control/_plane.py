"""A control plane over a private engine node (real containers, real iptables rules)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from flatstack.control.controller import Controller
from flatstack.control.reconciler import wait_until
from flatstack.control.validate import parse_app
from flatstack.testing import HTTPD_APP, http_get
from tests.engine._engine_support import IMAGE, Node
from tests.engine._image_support import free_port

# Each instance serves its hostname at /, /alive and /ready while those files exist, and
# /cgi-bin/work (slow while /tmp/slow exists).
SERVE = HTTPD_APP


def app_doc(name: str = "web", replicas: int = 2, host_port: int | None = None,
            **spec: Any) -> dict[str, Any]:
    """An App of busybox httpd instances (``spec`` fields override)."""
    port: dict[str, Any] = {"name": "http", "containerPort": 8080}
    if host_port:
        port["hostPort"] = host_port
    return {"apiVersion": "flatstack.io/v1", "kind": "App", "metadata": {"name": name},
            "spec": {"image": IMAGE, "command": ["sh", "-c", SERVE], "ports": [port],
                     "replicas": replicas, "resources": {"limits": {"memory": "64Mi",
                                                                    "cpu": "500m"}},
                     "terminationGracePeriodSeconds": 1, **spec}}


class Plane:
    """A started Controller over a Node; everything it made is removed by ``close``."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.control = Controller(node.engine, state_dir=str(node.state), period=0.2).start()
        self.store = self.control.store
        self.reconciler = self.control.reconciler

    def restart(self) -> None:
        """Stop the controller (instances and rules stay) and start a new one."""
        self.control.stop()
        self.control = Controller(self.node.new_engine(), state_dir=str(self.node.state),
                                  period=0.2).start()
        self.store = self.control.store
        self.reconciler = self.control.reconciler

    def apply(self, doc: dict[str, Any]) -> None:
        self.store.apply(parse_app(doc))
        self.control.poke()

    def instances(self, app: str = "web") -> list[dict[str, Any]]:
        return [i for i in self.reconciler.snapshot(app) if i["state"] == "running"]

    def ready(self, app: str = "web") -> list[dict[str, Any]]:
        return [i for i in self.instances(app) if i["ready"]]

    def containers(self, app: str = "web") -> list[dict[str, Any]]:
        return [c for c in self.node.engine.list(all=True)
                if c["labels"].get("flatstack.app") == app]

    def reasons(self, app: str = "web") -> list[str]:
        return [e.reason for e in self.store.events(app=app)]

    def nat_rules(self) -> str:
        assert self.control.endpoints is not None
        tag = self.control.endpoints.tag
        out = subprocess.run(["iptables", "-w", "-t", "nat", "-S"], capture_output=True,
                             text=True, check=True).stdout
        return "\n".join(line for line in out.splitlines() if tag in line)

    def close(self) -> None:
        self.control.stop()
        assert self.control.endpoints is not None
        self.control.endpoints.teardown()


get = http_get


def wait_for(predicate: Any, timeout: float = 20.0, step: float = 0.05) -> Any:
    """``reconciler.wait_until`` with the tests' default timeout."""
    return wait_until(predicate, timeout, step)


@pytest.fixture(name="plane")
def plane_fixture(node: Node) -> Iterator[Plane]:
    made = Plane(node)
    yield made
    made.close()


__all__ = ["Plane", "app_doc", "free_port", "get", "plane_fixture", "wait_for"]

