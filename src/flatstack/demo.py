"""``make run``: a daemon on private directories, a container on a published port, then
the example app: instances behind one endpoint, probed, replaced when killed.

Part 1 runs one container from a bundle with ``flatrun`` alone. Part 2 starts
``flatstack daemon`` on its own state dir (default ``/var/lib/flatstack-demo``), run
dir (``/run/flatstack-demo``: socket, supervisor, netns) and bridge (``fsdemo0``), so
it never meets a daemon already running; builds (once) a busybox image with umoci
from Debian's busybox-static, imports it, runs ``httpd`` with a published port,
fetches the page over 127.0.0.1 and walks through ps, logs, stats and exec. Part 3
builds the example image (``examples/``, see ``flatstack.examples``), applies
``examples/app.yaml``, waits for its instances, fetches the endpoint (spread over the
instances), kills one instance from outside and shows its replacement and the event.
Then it deletes the app and removes the containers, the daemon, the supervisor, the
endpoint rules, the bridge and the netns directory, also on failure and Ctrl-C (unless
``--keep``: then the daemon and the app stay until ``--stop``); a run interrupted by
SIGKILL is cleaned up by the next one. Needs root and no network access.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import TextIO

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(REPO, ".venv", "bin")
IMAGE = "localhost/flatstack-demo:1"
NAME = "demo-web"
APP = "hello"  # examples/app.yaml's metadata.name
PAGE = ("<h1>hello from flatstack</h1>\n"
        "<p>busybox httpd in a container, behind a published port</p>\n")
BUNDLE_SCRIPT = (
    "echo \"hello from $(hostname), pid $$ in its own pid namespace\"; "
    "echo \"uid_map: $(tr -s ' ' < /proc/self/uid_map)\"; "
    "grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status"
)


class DemoError(Exception):
    """A step failed; the message says which and why."""


class Demo:
    """One demo run: the daemon it starts and everything it has to undo."""

    def __init__(self, state_dir: str, run_dir: str, *, bridge: str = "fsdemo0",
                 subnet: str = "10.89.240.0/24", port: int = 8080,
                 app_port: int | None = None, out: TextIO | None = None) -> None:
        self.state = os.path.abspath(state_dir)
        self.run_dir = os.path.abspath(run_dir)
        self.socket = os.path.join(self.run_dir, "api.sock")
        self.runtime = os.path.join(self.run_dir, "runtime")
        self.bridge, self.subnet, self.port = bridge, subnet, port
        self.app_port = app_port or _declared_port()
        self.out = out
        self.daemon: subprocess.Popen[bytes] | None = None
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLATSTACK_")}
        self.env = {**env, "FLATSTACK_SOCKET": self.socket}
        self.page = ""
        self.timings: list[tuple[str, float]] = []
        self._step = 0

    # -- output -------------------------------------------------------------------------
    def say(self, text: str = "") -> None:
        print(text, file=self.out or sys.stdout, flush=True)

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[None]:
        self._step += 1
        self.say(f"\n[{self._step}] {title}")
        started = time.monotonic()
        yield
        took = time.monotonic() - started
        self.timings.append((title, took))
        self.say(f"    ({took * 1000:.0f} ms)")

    def flatstack(self, *args: str, check: bool = True, show: bool = True,
                  ) -> subprocess.CompletedProcess[str]:
        """Run the real CLI as a user would, echoing the command and its output."""
        if show:
            self.say("    $ flatstack " + shlex.join(args))
        proc = subprocess.run([os.path.join(BIN, "flatstack"), *args], env=self.env,
                              capture_output=True, text=True, timeout=120, check=False)
        if show:
            for line in (proc.stdout + proc.stderr).splitlines():
                self.say("      " + line)
        if check and proc.returncode != 0:
            raise DemoError(f"flatstack {' '.join(args)} exited {proc.returncode}: "
                            f"{proc.stderr.strip()}")
        return proc

    # -- part 1: flatrun alone ------------------------------------------------------------
    def flatrun_bundle(self) -> None:
        from flatstack.oci.defaults import default_spec
        from flatstack.tools.busybox import build_bundle

        with self.step("flatrun alone: one container from an OCI bundle"):
            work = tempfile.mkdtemp(prefix="flatstack-demo-bundle-")
            try:
                # `flatrun spec`'s hardened default with a private id range (userns auto)
                bundle = build_bundle(os.path.join(work, "bundle"), ["sh", "-c", BUNDLE_SCRIPT],
                                      config=default_spec(userns=True))
                cid = f"demo-{os.getpid()}"
                self.say(f"    $ flatrun --root {work}/state run --bundle {bundle} {cid}")
                proc = subprocess.run([os.path.join(BIN, "flatrun"), "--root",
                                       os.path.join(work, "state"), "run", "--bundle", bundle,
                                       cid], capture_output=True, text=True, check=False,
                                      timeout=60)
                for line in (proc.stdout + proc.stderr).splitlines():
                    self.say("      " + line)
                if proc.returncode != 0:
                    raise DemoError(f"flatrun run exited {proc.returncode}")
            finally:
                shutil.rmtree(work, ignore_errors=True)

    # -- part 2: the engine ---------------------------------------------------------------
    def image_layout(self) -> str:
        """The demo image as an OCI layout made by umoci (built once, then reused)."""

        layout = os.path.join(self.state, "demo-image")
        if os.path.exists(os.path.join(layout, "index.json")):
            self.say(f"    reusing the OCI layout {layout}")
            return layout
        self.say(f"    building {layout} with umoci from Debian's busybox-static")
        from flatstack.tools.busybox import ImageBuildError, build_image

        def fill(rootfs: str) -> None:
            os.makedirs(os.path.join(rootfs, "www"))
            with open(os.path.join(rootfs, "www", "index.html"), "w") as f:
                f.write(PAGE)

        try:
            build_image(layout, fill, [
                "--config.exposedports", "80/tcp",
                *[a for word in ("httpd", "-f", "-v", "-p", "80", "-h", "/www")
                  for a in ("--config.cmd", word)]])
        except ImageBuildError as err:
            raise DemoError(str(err)) from None
        return layout

    def start_daemon(self) -> None:
        os.makedirs(self.run_dir, mode=0o700, exist_ok=True)
        argv = ["daemon", "--state-dir", self.state, "--socket", self.socket,
                "--runtime-root", self.runtime, "--bridge", self.bridge, "--subnet",
                self.subnet]
        self.say("    $ flatstack " + " ".join(argv) + " &")
        log_path = os.path.join(self.run_dir, "daemon.log")
        with open(log_path, "ab") as log:
            self.daemon = subprocess.Popen([os.path.join(BIN, "flatstack"), *argv],
                                           stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                           env=self.env, start_new_session=True)
        deadline = time.monotonic() + 30
        while not self._answers():
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                with open(log_path, errors="replace") as f:
                    tail = f.read()[-2000:]
                raise DemoError(f"the daemon did not start (log {log_path}):\n{tail}")
            time.sleep(0.05)
        self.say(f"    daemon pid {self.daemon.pid} answers on {self.socket}")

    def _answers(self) -> bool:
        from flatstack.api.client import Client
        from flatstack.errors import FlatstackError

        try:
            Client(self.socket, timeout=2).call("GET", "/v1/version")
            return True
        except (FlatstackError, OSError):
            return False

    def import_image(self, layout: str) -> None:
        """Import (again: the store keeps each blob once, so a second import is cheap)."""
        self.flatstack("image", "import", "--name", IMAGE, layout)

    def run_web(self) -> None:
        self.flatstack("run", "-d", "--name", NAME, "-p", f"{self.port}:80", IMAGE)

    def fetch(self) -> None:
        url = f"http://127.0.0.1:{self.port}/"
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    self.page = resp.read().decode()
                    break
            except OSError as err:
                if time.monotonic() > deadline:
                    raise DemoError(f"GET {url}: {err}") from None
                time.sleep(0.05)
        self.say(f"    GET {url} -> {resp.status}")
        for line in self.page.splitlines():
            self.say("      " + line)

    def show_identity(self) -> None:
        self.flatstack("exec", NAME, "id")
        words = self.flatstack("exec", NAME, "cat", "/proc/self/uid_map").stdout.split()
        if len(words) == 3 and words[0] == "0":
            self.say(f"    uid 0 in the container is host uid {words[1]} ({words[2]} ids from "
                     "there): an unprivileged range of its own, not the host's root")

    # -- part 3: the example app --------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.app_port}/"

    def example_layout(self) -> str:
        """The example image as an OCI layout (rebuilt when ``examples/image`` changed)."""
        from flatstack import examples

        layout = os.path.join(self.state, "example-image")
        if examples.is_current(layout):
            self.say(f"    reusing the OCI layout {layout}")
            return layout
        self.say(f"    building {layout} with umoci: busybox-static + examples/image "
                 "(httpd, CGI knobs)")
        try:
            return examples.build_image(layout)
        except examples.BuildError as err:
            raise DemoError(str(err)) from None

    def manifest(self) -> str:
        """``examples/app.yaml``, or a copy with another hostPort when its port is taken."""
        import yaml

        from flatstack.examples import EXAMPLES

        source = os.path.join(EXAMPLES, "app.yaml")
        if self.app_port == _declared_port():
            return source
        with open(source) as f:
            doc = yaml.safe_load(f)
        doc["spec"]["ports"][0]["hostPort"] = self.app_port
        path = os.path.join(self.run_dir, "app.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(doc, f, sort_keys=False)
        self.say(f"    (port {_declared_port()} is taken: {path} is examples/app.yaml with "
                 f"hostPort {self.app_port})")
        return path

    def instances(self) -> list[dict[str, object]]:
        """The app's running instances as the daemon sees them."""
        from flatstack.api.client import Client

        found = Client(self.socket, timeout=10).call("GET", "/v1/instances",
                                                     params={"app": APP})
        return [i for i in found if i["state"] == "running"]

    def wait_ready(self, count: int, timeout: float = 60, *,
                   without: str | None = None) -> list[dict[str, object]]:
        """Wait for ``count`` ready instances (none of them ``without``)."""
        deadline = time.monotonic() + timeout
        while True:
            ready = [i for i in self.instances() if i["ready"] and i["id"] != without]
            if len(ready) >= count:
                return ready
            if time.monotonic() > deadline:
                self.flatstack("describe", "app", APP, check=False)
                raise DemoError(f"app {APP}: {len(ready)} of {count} instances ready after "
                                f"{timeout:.0f} s")
            time.sleep(0.1)

    def get(self, path: str = "/", timeout: float = 5) -> str:
        """One GET through the endpoint on a new connection (retried for ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=2) as resp:
                    return str(resp.read().decode().strip())
            except OSError as err:
                if time.monotonic() > deadline:
                    raise DemoError(f"GET {self.url}{path.lstrip('/')}: {err}") from None
                time.sleep(0.05)

    def spread(self, requests: int = 16) -> Counter[str]:
        """``requests`` GETs of the endpoint: which instance answered each."""
        served: Counter[str] = Counter()
        for _ in range(requests):
            served[self.get().removeprefix("hello from ")] += 1
        shares = ", ".join(f"{host} x{n}" for host, n in sorted(served.items()))
        self.say(f"    {requests} x GET {self.url} (a new connection each) answered by "
                 f"{len(served)} instances: {shares}")
        return served

    def kill_one(self) -> float:
        """Kill an instance from outside; seconds until its replacement served a request."""
        before = self.instances()
        victim = before[0]
        started = time.monotonic()
        self.flatstack("kill", str(victim["name"]))
        ready = self.wait_ready(2, without=str(victim["id"]))
        fresh = {str(i["id"])[:12] for i in ready} - {str(i["id"])[:12] for i in before}
        deadline = time.monotonic() + 10
        while not fresh & set(self.spread_quietly()):
            if time.monotonic() > deadline:
                raise DemoError("the replacement instance never answered on the endpoint")
        took = time.monotonic() - started
        self.say(f"    replacement {', '.join(sorted(fresh))} ready and serving "
                 f"{took:.2f} s after the kill")
        return took

    def spread_quietly(self, requests: int = 8) -> set[str]:
        return {self.get().removeprefix("hello from ") for _ in range(requests)}

    def events(self) -> None:
        """The app's events so far (the kill shows as Crashed with its exit code)."""
        self.flatstack("events", "--app", APP)

    def hints(self, keep: bool) -> None:
        env = f"FLATSTACK_SOCKET={self.socket}"
        cli = f"{env} {os.path.join(BIN, 'flatstack')}"
        self.say(f"    the app answers on {self.url} (and on this host's addresses, port "
                 f"{self.app_port})")
        self.say("    try the knobs (each acts on the instance that answers):")
        for path, what in (("cgi-bin/crash", "the instance exits: a replacement takes over"),
                           ("cgi-bin/hang", "httpd stops answering: liveness (or the SLA "
                            "monitor) has it replaced"),
                           ("cgi-bin/slow?0.5", "+0.5 s per reply: the SLA monitor ejects "
                            "and replaces it"),
                           ("cgi-bin/burn?60", "a minute of CPU: the autoscaler adds "
                            "instances (max 4)")):
            self.say(f"      curl {self.url}{path:<18} # {what}")
        self.say(f"    and watch: {cli} events -f   |   {cli} get instances -o wide")
        if keep:
            self.say("    --keep: the daemon and the app stay; remove everything with "
                     f"`{os.path.join(BIN, 'python')} -m flatstack.demo --stop`"
                     + ("" if self.state == "/var/lib/flatstack-demo" else
                        f" --state-dir {self.state} --run-dir {self.run_dir} "
                        f"--bridge {self.bridge}"))

    # -- teardown ---------------------------------------------------------------------
    def teardown(self) -> None:
        """Remove everything this demo (or an interrupted earlier one) left; never
        raises, says what it removed."""
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            self._teardown()
        finally:  # a Ctrl-C that came meanwhile is raised now, after the cleanup
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def _teardown(self) -> None:
        from flatstack.control.endpoint import Endpoints, tag_of
        from flatstack.engine.client import SupervisorClient
        from flatstack.errors import FlatstackError
        from flatstack.network import netns, rules

        if self._answers():
            self._delete_apps()
            self._remove_containers()
        self._stop_daemon()
        self._forget_apps()
        try:
            supervisor = SupervisorClient(os.path.join(self.run_dir, "supervisor.sock"),
                                          timeout=5)
            pid = int(supervisor.call("ping")["pid"])
            supervisor.call("shutdown")
            deadline = time.monotonic() + 10  # it answers first, then leaves its loop
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            self.say(f"    supervisor pid {pid} stopped")
        except (FlatstackError, OSError, KeyError, TypeError, ValueError):
            pass
        endpoints = Endpoints(tag_of(self.state))
        nat = subprocess.run(["iptables", "-w", "-t", "nat", "-S"], capture_output=True,
                             text=True, check=False).stdout
        if endpoints.dispatch in nat or endpoints.masq in nat:
            endpoints.teardown()  # the daemon leaves them serving when it stops
            self.say(f"    endpoint rules {endpoints.dispatch} removed")
        had_bridge = os.path.exists(f"/sys/class/net/{self.bridge}")
        rules.remove_bridge(self.bridge)
        if had_bridge:
            self.say(f"    bridge {self.bridge} and its rules removed")
        try:
            netns.release_dir(self.run_dir)
        except (FlatstackError, OSError) as err:
            self.say(f"    netns directory: {err}")

    def _delete_apps(self) -> None:
        """Delete every app and wait (30 s at most) for the daemon to remove its instances."""
        from flatstack.api.client import Client
        from flatstack.errors import FlatstackError

        api = Client(self.socket, timeout=60)
        try:
            apps = api.call("GET", "/v1/apps")
            for app in apps:
                api.call("DELETE", f"/v1/apps/{app['name']}")
                self.say(f"    deleted app {app['name']}")
            deadline = time.monotonic() + 30
            while apps and api.call("GET", "/v1/instances") and time.monotonic() < deadline:
                time.sleep(0.1)
        except (FlatstackError, OSError) as err:
            self.say(f"    deleting apps: {err}")

    def _forget_apps(self) -> None:
        """Remove the desired state and events (with the daemon stopped): apps a dead
        daemon left would start again, and the next run shows its own events only."""
        from flatstack.control.store import DB_NAME, Store

        path = os.path.join(self.state, DB_NAME)
        if not os.path.exists(path):
            return
        store = Store(self.state)
        try:
            for stored in store.list():
                self.say(f"    deleted app {stored.name} (its daemon was gone)")
        finally:
            store.close()
        for name in (path, path + "-wal", path + "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)

    def _remove_containers(self) -> None:
        from flatstack.api.client import Client
        from flatstack.errors import FlatstackError

        api = Client(self.socket, timeout=60)
        try:
            found = api.call("GET", "/v1/containers", params={"all": True})
        except (FlatstackError, OSError) as err:
            self.say(f"    listing containers: {err}")
            return
        for c in found:
            try:
                api.call("DELETE", f"/v1/containers/{c['id']}", params={"force": True})
                self.say(f"    removed container {c['name'] or c['id'][:12]}")
            except (FlatstackError, OSError) as err:
                self.say(f"    removing container {c['name'] or c['id'][:12]}: {err}")

    def _stop_daemon(self) -> None:
        pid = self.daemon.pid if self.daemon is not None else _read_pid(
            os.path.join(self.run_dir, "daemon.pid"))
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if self.daemon is not None:
            try:
                self.daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
            self.daemon = None
        else:
            deadline = time.monotonic() + 20
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.say(f"    daemon pid {pid} stopped")

    # -- the whole run ------------------------------------------------------------------
    def stop(self) -> None:
        """``--stop``: remove what a ``--keep`` run (or a killed one) left."""
        os.makedirs(self.run_dir, mode=0o700, exist_ok=True)
        lock = _lock(os.path.join(self.run_dir, "demo.lock"))
        try:
            self.teardown()
        finally:
            os.close(lock)
        self.say("stopped; nothing left running")

    def run(self, *, bundle: bool = True, app: bool = True, keep: bool = False) -> None:
        started = time.monotonic()
        os.makedirs(self.run_dir, mode=0o700, exist_ok=True)
        lock = _lock(os.path.join(self.run_dir, "demo.lock"))
        try:
            if bundle:
                self.flatrun_bundle()
            if (self._answers() or os.path.exists(os.path.join(self.run_dir, "daemon.pid"))
                    or os.path.exists(f"/sys/class/net/{self.bridge}")):
                with self.step("cleaning up what an interrupted earlier run left"):
                    self.teardown()
            try:
                with self.step(f"the demo image {IMAGE}"):
                    layout = self.image_layout()
                with self.step(f"start a daemon on {self.state} and {self.run_dir} "
                               f"(bridge {self.bridge}, {self.subnet})"):
                    self.start_daemon()
                with self.step("import the image"):
                    self.import_image(layout)
                with self.step(f"run httpd, port {self.port} published to 80"):
                    self.run_web()
                with self.step("fetch the page from the host (kernel DNAT, no proxy)"):
                    self.fetch()
                with self.step("ps, logs, stats"):
                    self.flatstack("ps")
                    self.flatstack("logs", NAME)
                    self.flatstack("stats", "--no-stream", NAME)
                with self.step("exec: who is root in the container?"):
                    self.show_identity()
                with self.step("stop and remove the container"):
                    self.say("    (httpd, pid 1 of its namespace, ignores SIGTERM: SIGKILL after "
                             "-t 1 s, as docker and podman do)")
                    self.flatstack("stop", "-t", "1", NAME)
                    self.flatstack("rm", NAME)
                if app:
                    self.run_app(keep)
            except BaseException:
                keep = False  # a failed or interrupted run leaves nothing
                raise
            finally:
                if not keep:
                    with self.step("delete the app, stop the daemon and the supervisor, "
                                   "remove endpoint rules, bridge and netns"):
                        self.teardown()
        finally:
            os.close(lock)
        self.say("\ntimings:")
        for title, took in self.timings:
            self.say(f"  {took:7.2f} s  {title}")
        if keep:
            self.say(f"\ndone in {time.monotonic() - started:.1f} s; the daemon and app "
                     f"{APP} keep running on {self.url}")
        else:
            self.say(f"\ndone in {time.monotonic() - started:.1f} s; nothing left running "
                     f"(the images stay in {self.state} for the next run)")

    def run_app(self, keep: bool) -> None:
        """Part 3: the example app through the control plane."""
        from flatstack.examples import IMAGE as EXAMPLE

        with self.step(f"the example image {EXAMPLE} (examples/image)"):
            layout = self.example_layout()
            self.flatstack("image", "import", "--name", EXAMPLE, layout)
        with self.step(f"apply examples/app.yaml: app {APP}, endpoint port {self.app_port}"):
            self.flatstack("apply", "-f", self.manifest())
        with self.step("wait for 2 ready instances (startup, then readiness probes)"):
            self.wait_ready(2)
            self.flatstack("get", "apps")
            self.flatstack("get", "instances", "-o", "wide")
        with self.step(f"fetch {self.url}: one stable port, spread over the instances"):
            if len(self.spread()) < 2:
                self.say("    (all to one instance: the spread is random per connection)")
        with self.step("kill an instance from outside: the daemon replaces it"):
            self.kill_one()
            self.flatstack("get", "instances", "-o", "wide")
            self.events()
        with self.step("try it"):
            self.hints(keep)


def _declared_port() -> int:
    """The endpoint port ``examples/app.yaml`` declares."""
    import yaml

    from flatstack.examples import EXAMPLES

    with open(os.path.join(EXAMPLES, "app.yaml")) as f:
        return int(yaml.safe_load(f)["spec"]["ports"][0]["hostPort"])


def _lock(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DemoError(f"another demo holds {path}; wait for it to finish") from None
    return fd


def _read_pid(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, whose parent has not reaped it yet, has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _free_port(preferred: int) -> int:
    """``preferred`` when nothing listens on it, else a port the kernel picks."""
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", preferred))
            return preferred
        except OSError:
            s.bind(("0.0.0.0", 0))
            return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    """``python -m flatstack.demo [--state-dir DIR] [--run-dir DIR] [--port N] [--keep]``."""
    parser = argparse.ArgumentParser(prog="flatstack.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--state-dir", default="/var/lib/flatstack-demo")
    parser.add_argument("--run-dir", default="/run/flatstack-demo")
    parser.add_argument("--bridge", default="fsdemo0")
    parser.add_argument("--subnet", default="10.89.240.0/24")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--app-port", type=int, default=None,
                        help="the example app's endpoint port (default: examples/app.yaml's, "
                        "or a free one when that is taken)")
    parser.add_argument("--no-bundle", action="store_true", help="skip the flatrun part")
    parser.add_argument("--no-app", action="store_true", help="skip the example app part")
    parser.add_argument("--keep", action="store_true",
                        help="leave the daemon and the example app running")
    parser.add_argument("--stop", action="store_true",
                        help="only remove what a --keep run (or a killed one) left")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the demo needs root (namespaces, mounts, a bridge)", file=sys.stderr)
        return 1
    demo = Demo(args.state_dir, args.run_dir, bridge=args.bridge, subnet=args.subnet,
                port=_free_port(args.port),
                app_port=args.app_port or _free_port(_declared_port()))
    # SIGTERM as Ctrl-C: both unwind through the teardown (restored afterwards, so a
    # caller such as a test process keeps its own disposition)
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if args.stop:
            demo.stop()
        else:
            demo.run(bundle=not args.no_bundle, app=not args.no_app, keep=args.keep)
    except DemoError as err:
        print(f"demo failed: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
