"""The node's one supervisor: starts containers in-process and records how they end.

One single-threaded process per node (no monitor process per container). It is a
child subreaper, so every container init it creates with the runtime library
(``runtime.create``: a fork, not a program launch) is its child, and their exits
reach it as SIGCHLD. It records each exit (code, signal, OOM kills) in the
container's record directory before anything else, so a client that was away
(the API daemon killed with ``kill -9``) reads the status when it comes back.

It runs detached from whoever started it (``setsid``), so killing the API daemon
leaves it and the containers alone. Clients talk to it over a unix socket with
one JSON request and one JSON reply per connection (``engine/client.py``).

If the supervisor itself is killed, its containers keep running (re-parented to
init); a new supervisor re-adopts the live ones from their records and watches
them with pidfds, but their exit status is then unknown (recorded as such).
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import signal
import socket
import time
from typing import Any

from flatstack.errors import FlatstackError

RECORD = "record.json"
EXIT = "exit.json"


class Supervisor:
    """The event loop; ``state_dir`` holds one directory per container."""

    def __init__(self, state_dir: str, socket_path: str, runtime_root: str) -> None:
        self.state_dir = state_dir
        self.containers_dir = os.path.join(state_dir, "containers")
        self.socket_path = socket_path
        self.runtime_root = runtime_root
        self.running: dict[int, str] = {}  # init pid -> container id (our children)
        self.adopted: dict[int, tuple[str, int]] = {}  # pidfd -> (id, pid), not children
        self.selector = selectors.DefaultSelector()
        self.stopping = False

    # -- records ----------------------------------------------------------------
    def _dir(self, cid: str) -> str:
        return os.path.join(self.containers_dir, cid)

    def _read(self, cid: str, name: str) -> dict[str, Any] | None:
        try:
            with open(os.path.join(self._dir(cid), name)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _write(self, cid: str, name: str, data: dict[str, Any]) -> None:
        path = os.path.join(self._dir(cid), name)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)

    def status(self, cid: str) -> dict[str, Any]:
        record = self._read(cid, RECORD)
        if record is None:
            raise FlatstackError(f"no such container: {cid}")
        out = dict(record)
        exit_info = self._read(cid, EXIT)
        out["state"] = "exited" if exit_info else "running"
        if exit_info:
            out["exit"] = exit_info
        return out

    # -- starting and stopping ----------------------------------------------------
    def start_container(self, cid: str, bundle: str, log_path: str) -> dict[str, Any]:
        """create + start through the runtime library; stdout/stderr to ``log_path``."""
        from flatstack.runtime.create import CreateOptions, create
        from flatstack.runtime.state import validate_id
        from flatstack.runtime.verbs.delete import delete
        from flatstack.runtime.verbs.start import start

        validate_id(cid)
        if os.path.exists(self._dir(cid)):
            raise FlatstackError(f"container {cid} already exists")
        os.makedirs(self._dir(cid), mode=0o700)
        try:
            log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                             0o640)
            null_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            opts = CreateOptions(root=self.runtime_root, container_id=cid, bundle=bundle)
            with _stdio(null_fd, log_fd, log_fd):
                container = create(opts, subreaper=True)
            os.close(log_fd)
            os.close(null_fd)
            container.unlock()
            pid = container.pid
            self.running[pid] = cid
            record = {"id": cid, "bundle": bundle, "log": log_path, "pid": pid,
                      "pid_start": container.data.get("pid_start"),
                      "created": time.time()}
            self._write(cid, RECORD, record)
            try:
                start(self.runtime_root, cid)
            except BaseException:
                delete(self.runtime_root, cid, force=True)
                raise
        except BaseException:
            _remove_tree(self._dir(cid))
            raise
        return self.status(cid)

    def signal_container(self, cid: str, signum: int) -> None:
        record = self._read(cid, RECORD)
        if record is None:
            raise FlatstackError(f"no such container: {cid}")
        if self._read(cid, EXIT) is None:
            from flatstack.runtime.verbs.kill import kill

            kill(self.runtime_root, cid, str(signum))

    def remove_container(self, cid: str, force: bool) -> None:
        from flatstack.runtime.verbs.delete import delete

        status = self.status(cid)
        if status["state"] == "running" and not force:
            raise FlatstackError(f"container {cid} is running; stop it first or use force")
        try:
            delete(self.runtime_root, cid, force=True)
        except FlatstackError as err:
            if "does not exist" not in str(err):
                raise
        for pid, owner in list(self.running.items()):
            if owner == cid:  # killed by delete; reaped by the loop later
                del self.running[pid]
        _remove_tree(self._dir(cid))

    # -- exits --------------------------------------------------------------------
    def _record_exit(self, cid: str, status: int | None) -> None:
        info: dict[str, Any] = {"finished": time.time()}
        if status is None:
            info.update(code=None, reason="unknown: exited while no supervisor was running")
        elif os.WIFSIGNALED(status):
            info.update(code=128 + os.WTERMSIG(status), signal=os.WTERMSIG(status),
                        reason="signal")
        else:
            info.update(code=os.WEXITSTATUS(status), reason="exit")
        info["oom_killed"] = self._oom_kills(cid) > 0
        if info["oom_killed"]:
            info["reason"] = "oom"
        self._write(cid, EXIT, info)

    def _oom_kills(self, cid: str) -> int:
        try:
            from flatstack.runtime.cgroups import manager_from_state
            from flatstack.runtime.state import Container

            container = Container.load(self.runtime_root, cid)
            data = container.data.get("cgroup")
            return manager_from_state(data).oom_kill_count() if data else 0
        except (FlatstackError, OSError):
            return 0

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            cid = self.running.pop(pid, None)
            if cid is not None and os.path.isdir(self._dir(cid)):
                self._record_exit(cid, status)

    def adopt(self) -> None:
        """Watch containers a previous supervisor started (records without an exit)."""
        from flatstack.runtime.state import process_start_time

        try:
            names = os.listdir(self.containers_dir)
        except FileNotFoundError:
            return
        for cid in names:
            record = self._read(cid, RECORD)
            if record is None or self._read(cid, EXIT) is not None:
                continue
            pid = record["pid"]
            if process_start_time(pid) != record.get("pid_start"):
                self._record_exit(cid, None)
                continue
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                self._record_exit(cid, None)
                continue
            self.adopted[pidfd] = (cid, pid)
            self.selector.register(pidfd, selectors.EVENT_READ, self._adopted_exit)

    def _adopted_exit(self, pidfd: int) -> None:
        cid, _pid = self.adopted.pop(pidfd)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        self._record_exit(cid, None)

    # -- requests -------------------------------------------------------------------
    def handle(self, request: dict[str, Any]) -> Any:
        op = request.get("op")
        if op == "ping":
            return {"pid": os.getpid()}
        if op == "start":
            return self.start_container(request["id"], request["bundle"], request["log"])
        if op == "status":
            return self.status(request["id"])
        if op == "list":
            try:
                names = sorted(os.listdir(self.containers_dir))
            except FileNotFoundError:
                names = []
            return [self.status(n) for n in names if self._read(n, RECORD)]
        if op == "kill":
            self.signal_container(request["id"], int(request.get("signal", 15)))
            return None
        if op == "remove":
            self.remove_container(request["id"], bool(request.get("force")))
            return None
        if op == "shutdown":
            self.stopping = True
            return None
        raise FlatstackError(f"unknown request {op!r}")

    def _accept(self, server: socket.socket) -> None:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(30)
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            try:
                reply = {"ok": True, "result": self.handle(json.loads(data))}
            except FlatstackError as err:
                reply = {"ok": False, "error": str(err)}
            except (ValueError, KeyError, TypeError) as err:
                reply = {"ok": False, "error": f"bad request: {err}"}
            try:
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:
                pass

    def serve(self) -> None:
        """Run until a shutdown request (containers keep running after it)."""
        from flatstack.kernel import proc

        proc.set_child_subreaper()
        os.makedirs(self.containers_dir, mode=0o700, exist_ok=True)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o177)
        try:
            server.bind(self.socket_path)
        finally:
            os.umask(old_umask)
        server.listen(64)
        self.selector.register(server, selectors.EVENT_READ, self._accept)
        self.selector.register(wake_r, selectors.EVENT_READ, lambda fd: _drain(fd))
        self.adopt()
        self.reap()
        while not self.stopping:
            for key, _ in self.selector.select(timeout=1.0):
                key.data(key.fileobj)
            self.reap()
        server.close()
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass


class _stdio:
    """Temporarily make fds 0, 1, 2 the given ones (the container inherits them)."""

    def __init__(self, stdin: int, stdout: int, stderr: int) -> None:
        self.targets = (stdin, stdout, stderr)
        self.saved: list[int] = []

    def __enter__(self) -> None:
        for fd, target in enumerate(self.targets):
            self.saved.append(os.dup(fd))
            os.dup2(target, fd)

    def __exit__(self, *exc: object) -> None:
        for fd, saved in enumerate(self.saved):
            os.dup2(saved, fd)
            os.close(saved)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except OSError as err:
        if err.errno != errno.EAGAIN:
            raise


def _remove_tree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def spawn(state_dir: str, socket_path: str, runtime_root: str, log_path: str) -> int:
    """Start a supervisor in its own session; returns its pid once it answers.

    It is not a child the caller must keep: killing the caller (even with SIGKILL)
    leaves it running, re-parented to init."""
    import subprocess
    import sys

    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = ("import sys; sys.path.insert(0, sys.argv[1]);"
            "from flatstack.engine.supervisor import Supervisor;"
            "Supervisor(sys.argv[2], sys.argv[3], sys.argv[4]).serve()")
    with open(log_path, "ab") as log, open(os.devnull, "rb") as null:
        proc = subprocess.Popen([sys.executable, "-c", code, src, state_dir, socket_path,
                                 runtime_root], stdin=null, stdout=log, stderr=log,
                                start_new_session=True, close_fds=True)
    from flatstack.engine.client import SupervisorClient

    client = SupervisorClient(socket_path)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FlatstackError(f"supervisor exited with {proc.returncode}; see {log_path}")
        try:
            return int(client.call("ping")["pid"])
        except FlatstackError:
            time.sleep(0.02)
    raise FlatstackError(f"supervisor did not answer on {socket_path}; see {log_path}")
