"""Images in use by containers are protected; stats of a running container."""

from __future__ import annotations

import os
import time

import pytest

from flatstack.engine.containers import ExecOptions, RunOptions
from flatstack.image import ImageError
from flatstack.image.unpack import layer_dir
from tests.engine._engine_support import (  # noqa: F401 - fixtures
    APP_IMAGE,
    IMAGE,
    Node,
    empty,
    layouts_fixture,
    node_fixture,
)
from tests.engine._image_support import flatstack


def test_image_in_use_is_protected(node: Node) -> None:
    engine = node.engine
    store = engine.store
    image = store.image(APP_IMAGE)
    layers = [layer_dir(store, d) for d in image.diff_ids]
    running = engine.run(RunOptions(image=APP_IMAGE, command=["sleep 30"], network="none"))
    exited = engine.run(RunOptions(image=APP_IMAGE, command=["true"], network="none",
                                   name="done"))
    engine.wait("done", timeout=10)
    with pytest.raises(ImageError, match=r"in use by 2 container\(s\).*done"):
        store.remove(APP_IMAGE)
    refused = flatstack(node.state, "rm", APP_IMAGE, check=False)
    assert refused.returncode != 0 and "is in use by 2 container(s)" in refused.stderr
    assert store.lookup(APP_IMAGE), "still named"
    forced = flatstack(node.state, "rm", "--force", APP_IMAGE)
    assert f"untagged {APP_IMAGE}" in forced.stdout
    with pytest.raises(ImageError, match="not found"):
        store.lookup(APP_IMAGE)
    flatstack(node.state, "prune")
    assert all(os.path.isdir(p) for p in layers), "prune keeps layers containers use"
    assert all(store.has_blob(d) for d in [image.digest, image.config_digest])
    code, out, _ = engine.exec(running["id"], ExecOptions(command=["cat", "/srv/app/hello"]))
    assert (code, out) == (0, b"hello from the image\n")
    engine.remove(running["id"], force=True)
    flatstack(node.state, "prune")
    assert all(os.path.isdir(p) for p in layers), "the exited container still holds them"
    engine.remove(exited["id"])
    flatstack(node.state, "prune")
    assert not os.path.isdir(layers[1]), "unused once the last container is gone"
    assert os.path.isdir(layers[0]), "the base layer is busybox's too"
    assert empty(node.leftovers()), node.leftovers()


def test_stats_from_cgroup_counters(node: Node) -> None:
    engine = node.engine
    info = engine.run(RunOptions(image=IMAGE, command=["sh", "-c", "while :; do :; done"],
                                 cpus=0.5, memory=64 << 20, name="busy"))
    first = engine.stats("busy")
    assert first["memory_limit"] == 64 << 20 and 0 < first["memory_bytes"] < 64 << 20
    assert first["pids"] >= 1 and first["net_rx_bytes"] is not None
    time.sleep(0.3)
    second = engine.stats(info["id"])
    assert second["cpu_ns"] > first["cpu_ns"]
    assert 20 < second["cpu_percent"] < 70, "the 0.5 CPU quota holds"
    engine.kill("busy")
    engine.wait("busy", timeout=5)
    with pytest.raises(Exception, match="not running"):
        engine.stats("busy")
