"""Engine.run: containers from images with the image config, options, network, volumes."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from flatstack.engine.client import SupervisorClient
from flatstack.engine.containers import RunOptions
from flatstack.errors import ConfigError, FlatstackError
from tests.engine._engine_support import (  # noqa: F401 - fixtures
    APP_IMAGE,
    IMAGE,
    Node,
    empty,
    layouts_fixture,
    node_fixture,
)
from tests.engine._image_support import free_port
from tests.engine._network_support import http_get, iptables_rules

PROBE = ("echo uid=$(id -u) gid=$(id -g) groups=$(id -G); echo pwd=$(pwd); "
         "echo greeting=$GREETING keep=$KEEP; echo host=$(hostname) file=$(cat /etc/hostname); "
         "cat hello")


def test_image_config_is_honoured(node: Node) -> None:
    """Entrypoint + Cmd, Env, WorkingDir, User (a name from the image's passwd, with its
    supplementary group), Labels, ExposedPorts and StopSignal from the image config."""
    info = node.engine.run(RunOptions(image=APP_IMAGE, command=[PROBE], network="none"))
    assert info["state"] == "running" and info["pid"] > 0
    assert info["command"] == ["sh", "-c", PROBE]
    assert info["labels"] == {"org.example.tier": "web"}
    assert info["exposed_ports"] == ["8080/tcp"] and info["stop_signal"] == "SIGUSR1"
    done = node.engine.wait(info["id"], timeout=10)
    assert done["state"] == "exited" and done["exit_code"] == 0
    out = node.log_text(info["id"]).splitlines()
    host = info["id"][:12]
    assert out == ["uid=1000 gid=1000 groups=1000 2000", "pwd=/srv/app",
                   "greeting=from-image keep=1", f"host={host} file={host}",
                   "hello from the image"]
    default = node.engine.run(RunOptions(image=APP_IMAGE, network="none"))
    node.engine.wait(default["id"], timeout=10)
    assert node.log_text(default["id"]) == "default-cmd\n"


def test_options_override_the_image(node: Node) -> None:
    script = ("id -u; pwd; echo $GREETING $EXTRA; hostname; "
              "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max; "
              "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null "
              "|| cat /sys/fs/cgroup/memory.max; "
              "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null "
              "|| cut -d' ' -f1 /sys/fs/cgroup/cpu.max")
    # a bare KEY is dropped: the engine never copies from the daemon's own environment
    os.environ["FLATSTACK_TEST_FROM_HOST"] = "daemon-value"
    info = node.engine.run(RunOptions(
        image=APP_IMAGE, entrypoint=["sh", "-c"], command=[script + "; echo \"[${FLATSTACK_"
                                                         "TEST_FROM_HOST-unset}]\""],
        env=["GREETING=overridden", "EXTRA=x", "FLATSTACK_TEST_FROM_HOST"], user="0:0",
        workdir="/tmp", hostname="web1", memory=64 << 20, cpus=0.5, pids_limit=77,
        network="none", name="opts", labels={"a": "b"}))
    assert info["name"] == "opts" and info["labels"] == {"org.example.tier": "web", "a": "b"}
    node.engine.wait("opts", timeout=10)
    assert node.log_text("opts").split("\n")[:-1] == [
        "0", "/tmp", "overridden x", "web1", "77", str(64 << 20), "50000", "[unset]"]


def test_bridge_network_published_port_over_loopback(node: Node, tmp_path: Path) -> None:
    port = free_port()
    info = node.engine.run(RunOptions(
        image=IMAGE, command=["httpd", "-f", "-p", "8080", "-h", "/etc"],
        ports=[f"{port}:8080"], name="web"))
    net = info["network"]
    assert net["mode"] == "bridge" and net["ip"].startswith(node.subnet.rsplit(".", 2)[0])
    assert info["ports"] == [f"0.0.0.0:{port}->8080/tcp"]
    hosts = http_get("127.0.0.1", port, "/hosts")
    assert f"{net['ip']}\t{info['id'][:12]}" in hosts
    assert "nameserver 127." not in http_get("127.0.0.1", port, "/resolv.conf")
    assert os.stat(f"/proc/{info['pid']}/ns/net").st_ino == os.stat(net["netns"]).st_ino
    # the supervisor stepped into that namespace to clone the init, and back out again
    supervisor = SupervisorClient(str(node.socket)).call("ping")["pid"]
    assert os.stat(f"/proc/{supervisor}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino
    # the kernel forwards the port: no process of ours listens on it
    listeners = Path("/proc/net/tcp").read_text()
    assert f":{port:04X} 00000000:0000 0A" not in listeners
    node.engine.remove("web", force=True)
    assert empty(node.leftovers()), node.leftovers()
    assert not any(f"--dport {port}" in rule for rule in iptables_rules())


def test_host_network(node: Node) -> None:
    info = node.engine.run(RunOptions(image=IMAGE, network="host",
                                      command=["sh", "-c", "hostname; ls /sys/class/net"]))
    node.engine.wait(info["id"], timeout=10)
    lines = node.log_text(info["id"]).split()
    assert lines[0] == os.uname().nodename
    assert set(lines[1:]) == set(os.listdir("/sys/class/net"))
    assert info["network"]["mode"] == "host"


def test_no_network_is_a_namespace_of_the_containers_own(node: Node) -> None:
    """--network none: the runtime makes the namespace inside the container's user
    namespace (only loopback, up); nothing named or attached on the host."""
    import fcntl

    info = node.engine.run(RunOptions(image=IMAGE, network="none",
                                      command=["sh", "-c", "ls /sys/class/net; sleep 30"]))
    pid = info["pid"]
    assert os.stat(f"/proc/{pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        owner = fcntl.ioctl(fd, 0xB701)  # NS_GET_USERNS: an fd of the owning user ns
    finally:
        os.close(fd)
    try:
        assert os.fstat(owner).st_ino == os.stat(f"/proc/{pid}/ns/user").st_ino
    finally:
        os.close(owner)
    left = node.leftovers()
    assert left["netns"] == [] and left["attachments"] == [], left
    deadline = time.monotonic() + 5
    while "lo" not in node.log_text(info["id"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert node.log_text(info["id"]).split() == ["lo"]
    node.engine.remove(info["id"], force=True)
    assert empty(node.leftovers()), node.leftovers()


def test_volumes_survive_and_bind_mounts(node: Node, tmp_path: Path) -> None:
    host_dir = tmp_path / "hostdir"
    host_dir.mkdir()
    (host_dir / "input").write_text("from the host\n")
    first = node.engine.run(RunOptions(
        image=APP_IMAGE, user="0", network="none",
        command=["echo kept > /data/file && mkdir /data/sub && chown app:app /data/sub "
                 "&& cat /in/input && (echo no > /in/x 2>/dev/null || echo ro-refused)"],
        volumes=["appdata:/data", f"{host_dir}:/in:ro"]))
    data = node.state / "volumes" / "appdata" / "_data"
    assert first["mounts"] == [
        {"type": "volume", "name": "appdata", "source": str(data), "destination": "/data",
         "ro": False, "idmap": True},
        {"type": "bind", "source": str(host_dir), "destination": "/in", "ro": True,
         "idmap": False}]
    assert node.engine.wait(first["id"], timeout=10)["exit_code"] == 0
    stdout = b"".join(p for s, p in node.engine.logs(first["id"]) if s == "stdout")
    assert stdout == b"from the host\nro-refused\n"
    assert "Read-only file system" in node.log_text(first["id"])
    node.engine.remove(first["id"])
    assert (data / "file").read_text() == "kept\n", "the volume outlives its container"
    # stored under container-neutral ids (idmapped into each container's own range)
    assert (data / "file").stat().st_uid == 0 and (data / "sub").stat().st_uid == 1000
    # a container takes the freed id range, so the next one maps the volume onto another
    node.engine.run(RunOptions(image=IMAGE, command=["sleep", "30"], network="none"))
    second = node.engine.run(RunOptions(image=APP_IMAGE, network="none", volumes=["appdata:/d"],
                                        command=["cat /d/file; stat -c %U /d/file /d/sub; "
                                                 "echo by-app > /d/sub/new"]))
    assert node.engine.wait(second["id"], timeout=10)["exit_code"] == 0
    assert node.log_text(second["id"]) == "kept\nroot\napp\n"
    assert (data / "sub" / "new").stat().st_uid == 1000
    assert second["userns"]["host_id"] != first["userns"]["host_id"]
    assert not (host_dir / "x").exists()


def test_new_named_volume_is_seeded_from_the_image(node: Node, tmp_path: Path,
                                                  busybox_rootfs: str) -> None:
    """docker's and podman's first-use copy: the image's directory at the destination
    fills a new volume (owners kept container-neutral, symlinks copied as links, never
    followed to the host); an existing volume is never overwritten."""
    import tarfile

    from flatstack.image.archive import import_image
    from tests.engine._engine_support import rootfs_tar
    from tests.engine._image_support import layer_tar, member, oci_layout

    seed = layer_tar([
        member("seed/", tarfile.DIRTYPE, mode=0o750, uid=1000, gid=1000),
        member("seed/conf", data=b"from the image\n", uid=1000, gid=1000, mode=0o640),
        member("seed/passwd", tarfile.SYMTYPE, link="/etc/passwd"),
        member("seed/sub/", tarfile.DIRTYPE, mode=0o755),
        member("seed/sub/deep", data=b"deep\n", mode=0o600),
        member("seed/pipe", tarfile.FIFOTYPE, mode=0o644),
    ])
    layout = oci_layout(tmp_path / "seeded", [rootfs_tar(busybox_rootfs), seed],
                        name="localhost/seeded:1", config={"Cmd": ["sh"]})
    import_image(node.engine.store, str(layout))

    first = node.engine.run(RunOptions(
        image="localhost/seeded:1", network="none", volumes=["seeded:/seed", "empty:/none"],
        command=["sh", "-c", "cat /seed/conf /seed/sub/deep; stat -c '%u %a' /seed; "
                 "ls /none | wc -l; echo changed > /seed/conf"]))
    assert node.engine.wait(first["id"], timeout=10)["exit_code"] == 0
    assert node.log_text(first["id"]) == "from the image\ndeep\n1000 750\n0\n"
    data = node.state / "volumes" / "seeded" / "_data"
    assert (data.stat().st_uid, oct(data.stat().st_mode & 0o7777)) == (1000, "0o750")
    assert (data / "conf").stat().st_uid == 1000
    assert os.readlink(data / "passwd") == "/etc/passwd", "a link, not the host's file"
    assert (data / "pipe").is_fifo()
    assert (data / "sub" / "deep").stat().st_mode & 0o777 == 0o600
    assert not list((node.state / "volumes" / "empty" / "_data").iterdir())

    again = node.engine.run(RunOptions(image="localhost/seeded:1", network="none",
                                       volumes=["seeded:/seed"], command=["cat", "/seed/conf"]))
    node.engine.wait(again["id"], timeout=10)
    assert node.log_text(again["id"]) == "changed\n", "an existing volume is kept as it is"


def test_user_namespace_ranges_are_distinct(node: Node) -> None:
    infos = [node.engine.run(RunOptions(image=IMAGE, command=["sleep", "30"], network="none"))
             for _ in range(2)]
    starts = [i["userns"]["host_id"] for i in infos]
    assert starts[0] != starts[1] and abs(starts[0] - starts[1]) >= 65536
    for info in infos:
        uid_map = Path(f"/proc/{info['pid']}/uid_map").read_text().split()
        assert uid_map == ["0", str(info["userns"]["host_id"]), "65536"]
        status = Path(f"/proc/{info['pid']}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1] == str(info["userns"]["host_id"]), "root is unprivileged"
        # what the container writes lands in its private upper dir under its own ids
        upper = node.state / "containers" / info["id"] / "diff" / "upper"
        assert upper.stat().st_uid == info["userns"]["host_id"]


def test_failures_leave_nothing_behind(node: Node) -> None:
    engine = node.engine
    with pytest.raises(Exception, match="no-such-binary"):
        engine.run(RunOptions(image=IMAGE, command=["/no-such-binary"], name="bad"))
    assert empty(node.leftovers()), node.leftovers()
    port = free_port()
    engine.run(RunOptions(image=IMAGE, command=["sleep", "30"], ports=[f"{port}:80"],
                          name="holder"))
    before = node.leftovers()
    with pytest.raises(ConfigError, match=f"host port {port}/tcp is already published"):
        engine.run(RunOptions(image=IMAGE, command=["true"], ports=[f"{port}:80"]))
    with pytest.raises(Exception, match="already in use"):
        engine.run(RunOptions(image=IMAGE, command=["true"], name="holder"))
    with pytest.raises(Exception, match="not found in the store"):
        engine.run(RunOptions(image="localhost/missing:1", command=["true"]))
    with pytest.raises(ConfigError, match="memory"):
        engine.run(RunOptions(image=IMAGE, command=["true"], memory=1024))
    with pytest.raises(ConfigError, match=r"volumes\[0\]"):
        engine.run(RunOptions(image=IMAGE, command=["true"], volumes=["/nonexistent-x:/a"]))
    with pytest.raises(ConfigError, match="unable to find user nosuch"):
        engine.run(RunOptions(image=IMAGE, command=["true"], user="nosuch",
                              volumes=["fresh:/v"]))
    with pytest.raises(ConfigError, match="interactive"):
        engine.run(RunOptions(image=IMAGE, command=["cat"], interactive=True))
    with pytest.raises(ConfigError, match="network 'nonet' does not exist"):
        engine.run(RunOptions(image=IMAGE, command=["true"], network="nonet"))
    assert node.leftovers() == before
    assert not (node.state / "volumes" / "fresh").exists(), "a volume made by a failed run goes"
    engine.remove("holder", force=True)
    assert empty(node.leftovers()), node.leftovers()


def test_network_failure_after_the_container_was_created(node: Node,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The container is created while the CNI plugins work; a plugin failing then takes
    the created (never started) container down with everything else."""
    store = node.engine.networks.store
    store.create("broken", f"10.88.{node.subnet.split('.')[2]}.0/24", bridge=f"{node.bridge}b")
    net = store.get("broken")
    original = net.conflist

    def with_bogus(ipam_dir: str, **kwargs: bool) -> dict:
        conf = original(ipam_dir, **kwargs)
        conf["plugins"].insert(1, {"type": "tuning", "sysctl": {"net.bogus.nope": "1"}})
        return conf

    monkeypatch.setattr(net, "conflist", with_bogus)
    monkeypatch.setattr(store, "get", lambda name: net)
    cgroups_before = _container_cgroups()
    try:
        with pytest.raises(Exception, match="tuning"):
            node.engine.run(RunOptions(image=IMAGE, command=["touch", "/ran"],
                                       network="broken", name="never"))
        assert empty(node.leftovers()), node.leftovers()
        assert _container_cgroups() == cgroups_before
    finally:
        monkeypatch.undo()
        node.engine.networks.remove_network("broken")


def test_network_failing_while_the_container_waits(node: Node, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugins fail only once the container exists, held before its start: it is
    removed, and what it would have run never ran."""
    networks = node.engine.networks
    real_add = networks.cni.add

    def add_then_fail(*args: Any, **kwargs: Any) -> Any:
        real_add(*args, **kwargs)
        deadline = time.monotonic() + 10
        while not [n for n in (os.listdir(node.runtime_root) if node.runtime_root.is_dir()
                               else []) if not n.startswith(".")]:
            assert time.monotonic() < deadline, "the container was not created meanwhile"
            time.sleep(0.005)
        raise FlatstackError("cni: the plugins gave up")

    monkeypatch.setattr(networks.cni, "add", add_then_fail)
    out = tmp_path / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)  # the container's root is an unprivileged host id
    cgroups_before = _container_cgroups()
    with pytest.raises(FlatstackError, match="the plugins gave up"):
        node.engine.run(RunOptions(image=IMAGE, command=["touch", "/out/ran"], name="held",
                                   volumes=[f"{out}:/out"]))
    assert empty(node.leftovers()), node.leftovers()
    assert not (out / "ran").exists()
    monkeypatch.undo()  # the same run with working plugins does write the file
    info = node.engine.run(RunOptions(image=IMAGE, command=["touch", "/out/ran"],
                                      volumes=[f"{out}:/out"]))
    assert node.engine.wait(info["id"], timeout=10)["exit_code"] == 0
    assert (out / "ran").exists()
    node.engine.remove(info["id"])
    assert _container_cgroups() == cgroups_before


def _container_cgroups() -> set[str]:
    """Container-id-named cgroup directories (64 hex digits) in the pids hierarchy."""
    root = Path("/sys/fs/cgroup/pids")
    if not root.is_dir():
        root = Path("/sys/fs/cgroup")
    return {str(p) for p in root.rglob("*") if len(p.name) == 64 and p.is_dir()}


def test_concurrent_runs_from_threads(node: Node) -> None:
    """The daemon calls run from a thread pool: names stay unique, every run is whole."""
    from concurrent.futures import ThreadPoolExecutor

    def run(i: int) -> object:
        try:
            return node.engine.run(RunOptions(image=IMAGE, command=["sleep", "30"],
                                              name="same" if i < 2 else None))
        except Exception as err:  # the loser of the name race
            return err

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, range(4)))
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(errors) == 1 and "already in use" in str(errors[0])
    infos = [r for r in results if isinstance(r, dict)]
    assert len({i["network"]["ip"] for i in infos}) == 3
    assert len({i["userns"]["host_id"] for i in infos}) == 3
    assert sorted(i["id"] for i in node.engine.list()) == sorted(i["id"] for i in infos)
