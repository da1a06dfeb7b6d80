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

Logs. A container's stdout and stderr are two FIFOs in its record directory
(``stdout.fifo``, ``stderr.fifo``), read by this one event loop and written to
its log file in podman's k8s-file format with rotation (``engine/logs.py``).
The container's ends are opened ``O_RDWR``: the container itself then always
counts as a reader, so it can never get SIGPIPE/EPIPE, even while no supervisor
runs (writes then block once the pipe buffer, 64 KiB, is full, as with
containerd's FIFOs). The supervisor reads with ``O_RDONLY|O_NONBLOCK`` ends; it
sees EOF once every process of the container has closed its copy. A new
supervisor reopens the FIFOs by path and carries on, so lines written while it
was away (up to the pipe buffer) and after it came back are all logged. Only a
chunk already read but not yet written when the supervisor is SIGKILLed is lost.
Before an exit is recorded the FIFOs are drained, so a reader that follows the
log until the exit record appears sees every line. With a terminal
(``console_socket``) the caller holds the pty master and nothing is logged.

Requests (``{"op": ..., **args}``; the reply's ``result``):

- ``ping`` -> ``{"pid"}``
- ``start(id, bundle, log, log_max_size=10 MiB, log_max_files=3,
  console_socket=None, hold=False)`` -> status. ``log_max_files`` counts the live file
  too (``log``, ``log.1``, ``log.2``). With ``console_socket`` the bundle's
  ``process.terminal`` must be true (and without it, false): the runtime sends
  the pty master to that socket (runc's protocol, ``runtime/console.py``). With
  ``hold`` the container is only created (runtime ``create``): its init waits on the
  exec FIFO, nothing of the user's runs, until
- ``release(id)`` -> status: runtime ``start`` of a held container.
- ``status(id)`` -> ``{"id", "bundle", "log", "pid", "pid_start", "created",
  "tty", "state": "running"|"exited", "exit": {"code", "reason", "signal"?,
  "oom_killed", "finished"}}``;  ``list`` -> [status, ...]
- ``wait(id)`` -> status, sent once the container has exited (at once if it has):
  the exit notification, so clients need not poll. The client may hang up at any
  time; a removed container's waiters get an error.
- ``kill(id, signal=15)``;  ``remove(id, force=False)``;  ``shutdown``
- ``exec(id, args=None, process=None, env=[], cwd=None, user=None, tty=False,
  console_socket=None, detach=False)``: a process in the running container
  through the runtime library (``runtime/verbs/exec.py``). ``process`` is a
  full OCI process object; otherwise ``args`` run with the container's process
  settings, ``env`` (KEY=VALUE) added, ``cwd`` and ``user`` ("UID[:GID]")
  replaced. ``tty`` needs ``console_socket`` (the pty master goes there).
  Detached: ``{"pid"}`` at once, output discarded. Otherwise the reply comes
  when the process exits: ``{"exit_code", "stdout", "stderr", "truncated"}``,
  the outputs base64 (``decode_exec`` turns it into (code, stdout, stderr);
  each output keeps its first 16 MiB). Call it with a client whose timeout
  fits the command (``SupervisorClient(path, timeout=None)``).
"""

from __future__ import annotations

import base64
import errno
import json
import os
import selectors
import signal
import socket
import sys
import time
from typing import Any

from flatstack._atomic import write_json
from flatstack.engine.logs import LogWriter, check_options
from flatstack.errors import FlatstackError

RECORD = "record.json"
EXIT = "exit.json"
FIFOS = {"stdout": "stdout.fifo", "stderr": "stderr.fifo"}
EXEC_OUTPUT_LIMIT = 16 << 20
READ_CHUNK = 65536


class _Logs:
    """A container's log: the FIFO read ends (fd -> stream) and the writer."""

    def __init__(self, writer: LogWriter, fds: dict[int, str]) -> None:
        self.writer = writer
        self.fds = fds


class _Exec:
    """A foreground exec: its output pipes, and the client waiting for the reply."""

    def __init__(self, cid: str, pid: int, conn: socket.socket, fds: dict[int, str]) -> None:
        self.cid = cid
        self.pid = pid
        self.conn = conn
        self.fds = fds
        self.output = {"stdout": bytearray(), "stderr": bytearray()}
        self.truncated = False


class _Deferred:
    """Returned by a handler whose reply is sent later (a foreground exec)."""


DEFERRED = _Deferred()


class Supervisor:
    """The event loop; ``state_dir`` holds one directory per container."""

    def __init__(self, state_dir: str, socket_path: str, runtime_root: str) -> None:
        self.state_dir = state_dir
        self.containers_dir = os.path.join(state_dir, "containers")
        self.socket_path = socket_path
        self.runtime_root = runtime_root
        self.running: dict[int, str] = {}  # init pid -> container id (our children)
        self.adopted: dict[int, tuple[str, int]] = {}  # pidfd -> (id, pid), not children
        self.logs: dict[str, _Logs] = {}  # container id -> its log streams
        self.execs: dict[int, _Exec] = {}  # exec'd pid -> foreground session
        self.detached: dict[int, str] = {}  # detached exec'd pid -> container id
        self.waiters: dict[str, list[socket.socket]] = {}  # container id -> wait clients
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self._conn: socket.socket | None = None  # the request being handled

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
        # Atomic (rename), not fsync'ed: the records describe processes, which a power
        # loss ends as well; a crashed supervisor or daemon finds them in the page cache.
        path = os.path.join(self._dir(cid), name)
        write_json(path, data, mode=0o600)

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

    # -- logs ---------------------------------------------------------------------
    def _make_fifos(self, cid: str) -> tuple[dict[int, str], list[int]]:
        """The FIFOs of a new container: (our read ends, the container's O_RDWR ends)."""
        reads: dict[int, str] = {}
        writes: list[int] = []
        try:
            for stream, name in FIFOS.items():
                path = os.path.join(self._dir(cid), name)
                os.mkfifo(path, 0o600)
                reads[os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)] = stream
                writes.append(os.open(path, os.O_RDWR | os.O_CLOEXEC))
        except BaseException:
            for fd in [*reads, *writes]:
                os.close(fd)
            raise
        return reads, writes

    def _watch_logs(self, cid: str, reads: dict[int, str], writer: LogWriter) -> None:
        self.logs[cid] = _Logs(writer, reads)
        for fd in reads:
            self.selector.register(fd, selectors.EVENT_READ, lambda f, c=cid: self._on_log(c, f))

    def _on_log(self, cid: str, fd: int, drain: bool = False) -> None:
        logs = self.logs[cid]
        while True:
            try:
                data = os.read(fd, READ_CHUNK)
            except BlockingIOError:
                return
            if not data:  # every writer in the container is gone
                self.selector.unregister(fd)
                os.close(fd)
                del logs.fds[fd]
                if not logs.fds:
                    self._close_logs(cid)
                return
            try:
                logs.writer.write(logs.fds[fd], data)
            except OSError as err:  # e.g. a full disk: drop the chunk, keep serving
                print(f"supervisor: log of {cid}: {err}", file=sys.stderr, flush=True)
            if not drain:
                return  # one chunk per event: fair between containers

    def _drain_logs(self, cid: str) -> None:
        logs = self.logs.get(cid)
        for fd in list(logs.fds) if logs else []:
            if cid in self.logs:
                self._on_log(cid, fd, drain=True)

    def _close_logs(self, cid: str) -> None:
        logs = self.logs.pop(cid, None)
        if logs is None:
            return
        for fd in logs.fds:
            self.selector.unregister(fd)
            os.close(fd)
        logs.writer.close()

    # -- starting and stopping ----------------------------------------------------
    def start_container(self, cid: str, bundle: str, log_path: str,
                        log_max_size: int | None = None, log_max_files: int | None = None,
                        console_socket: str | None = None,
                        hold: bool = False) -> dict[str, Any]:
        """create + start through the runtime library; stdout/stderr to ``log_path``
        (or, with ``console_socket``, a terminal whose master goes to that socket).
        ``hold``: create only; the init waits on its exec FIFO until ``release``."""
        from flatstack.runtime.create import CreateOptions, create
        from flatstack.runtime.state import validate_id
        from flatstack.runtime.verbs.delete import delete
        from flatstack.runtime.verbs.start import start

        validate_id(cid)
        log_max_size, log_max_files = check_options(log_max_size, log_max_files)
        if not isinstance(log_path, str) or not os.path.isabs(log_path):
            raise FlatstackError(f"log: expected an absolute path, got {log_path!r}")
        if console_socket is not None and not isinstance(console_socket, str):
            raise FlatstackError(f"console_socket: expected a path, got {console_socket!r}")
        tty = _bundle_terminal(bundle)
        if tty and not console_socket:
            raise FlatstackError("console_socket: required, the bundle's process.terminal "
                                 "is true")
        if console_socket and not tty:
            raise FlatstackError("console_socket: given, but the bundle's process.terminal "
                                 "is false")
        if os.path.exists(self._dir(cid)):
            raise FlatstackError(f"container {cid} already exists")
        new_log = not os.path.lexists(log_path)
        try:
            writer = LogWriter(log_path, log_max_size, log_max_files)
        except OSError as err:
            raise FlatstackError(f"log: cannot open {log_path}: "
                                 f"{os.strerror(err.errno or 0).lower()}") from None
        try:
            os.makedirs(self._dir(cid), mode=0o700)
        except BaseException:
            writer.close()
            if new_log:
                _unlink(log_path)
            raise
        reads: dict[int, str] = {}
        try:
            null_fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            writes = [null_fd, null_fd]
            try:
                if not tty:
                    reads, writes = self._make_fifos(cid)
                opts = CreateOptions(root=self.runtime_root, container_id=cid, bundle=bundle,
                                     console_socket=console_socket)
                with _stdio(null_fd, writes[0], writes[1]):
                    container = create(opts, subreaper=True)
            finally:
                for fd in {null_fd, *writes}:
                    os.close(fd)
            container.unlock()
            pid = container.pid
            self.running[pid] = cid
            record = {"id": cid, "bundle": bundle, "log": log_path, "pid": pid,
                      "pid_start": container.data.get("pid_start"),
                      "created": time.time(), "tty": tty, "log_max_size": log_max_size,
                      "log_max_files": log_max_files}
            if not tty:
                self._watch_logs(cid, reads, writer)
                reads = {}
            else:
                writer.close()
            self._write(cid, RECORD, record)
            if not hold:
                try:
                    start(self.runtime_root, cid)
                except BaseException:
                    delete(self.runtime_root, cid, force=True)
                    raise
        except BaseException:
            for fd in reads:
                os.close(fd)
            if cid in self.logs:
                self._close_logs(cid)
            else:
                writer.close()
            if new_log:
                _unlink(log_path)
            _remove_tree(self._dir(cid))
            raise
        return self.status(cid)

    def release_container(self, cid: str) -> dict[str, Any]:
        """Start a container created with ``hold`` (its process execs now)."""
        from flatstack.runtime.verbs.start import start

        if self._read(cid, RECORD) is None:
            raise FlatstackError(f"no such container: {cid}")
        start(self.runtime_root, cid)
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
        self._kill_children(cid)
        try:
            delete(self.runtime_root, cid, force=True)
        except FlatstackError as err:
            if "does not exist" not in str(err):
                raise
        for pid, owner in list(self.running.items()):
            if owner == cid:  # killed by delete; reaped by the loop later
                del self.running[pid]
        for pidfd, (owner, _pid) in list(self.adopted.items()):
            if owner == cid:
                del self.adopted[pidfd]
                self.selector.unregister(pidfd)
                os.close(pidfd)
        self._drain_logs(cid)
        self._close_logs(cid)
        _remove_tree(self._dir(cid))
        self._answer_waiters(cid, {"ok": False, "error": f"container {cid} was removed"})

    def _kill_children(self, cid: str, timeout: float = 5.0) -> None:
        """SIGKILL the container and reap the processes of it that are our children
        (its init, exec'd processes): zombies would keep its cgroup busy."""
        from flatstack.runtime.verbs.kill import kill

        def ours() -> bool:
            return any(c == cid for c in [*self.running.values(), *self.detached.values(),
                                          *(s.cid for s in self.execs.values())])

        if not ours():
            return
        try:
            kill(self.runtime_root, cid, "9", all_=True)
        except FlatstackError:
            pass
        deadline = time.monotonic() + timeout
        while ours() and time.monotonic() < deadline:
            time.sleep(0.002)
            self.reap()

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
        self._answer_waiters(cid, {"ok": True, "result": self.status(cid)})

    # -- exit notification ----------------------------------------------------------
    def wait_for_exit(self, cid: str) -> Any:
        """The status now if the container has exited, else a deferred reply."""
        status = self.status(cid)
        if status["state"] == "exited":
            return status
        assert self._conn is not None
        conn = self._conn
        self.waiters.setdefault(cid, []).append(conn)
        # readable before the reply means the client hung up (or broke the protocol)
        self.selector.register(conn, selectors.EVENT_READ,
                               lambda c, i=cid: self._waiter_left(i, c))
        return DEFERRED

    def _waiter_left(self, cid: str, conn: socket.socket) -> None:
        self.selector.unregister(conn)
        conn.close()
        left = self.waiters.get(cid, [])
        if conn in left:
            left.remove(conn)
        if not left:
            self.waiters.pop(cid, None)

    def _answer_waiters(self, cid: str, reply: dict[str, Any]) -> None:
        for conn in self.waiters.pop(cid, []):
            self.selector.unregister(conn)
            _reply(conn, reply)

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
            self.detached.pop(pid, None)
            session = self.execs.pop(pid, None)
            if session is not None:
                self._finish_exec(session, status)
                continue
            cid = self.running.pop(pid, None)
            if cid is not None and os.path.isdir(self._dir(cid)):
                self._drain_logs(cid)
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
            if not record.get("tty"):
                self._reopen_logs(cid, record)

    def _reopen_logs(self, cid: str, record: dict[str, Any]) -> None:
        """Read the FIFOs of a container a previous supervisor started."""
        reads: dict[int, str] = {}
        for stream, name in FIFOS.items():
            try:
                fd = os.open(os.path.join(self._dir(cid), name),
                             os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                continue
            reads[fd] = stream
        if not reads:
            return
        try:
            writer = LogWriter(record["log"], record.get("log_max_size"),
                               record.get("log_max_files"))
        except (OSError, FlatstackError) as err:
            print(f"supervisor: log of {cid}: {err}", file=sys.stderr, flush=True)
            for fd in reads:
                os.close(fd)
            return
        self._watch_logs(cid, reads, writer)

    def _adopted_exit(self, pidfd: int) -> None:
        cid, _pid = self.adopted.pop(pidfd)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        self._drain_logs(cid)
        self._record_exit(cid, None)

    # -- exec -----------------------------------------------------------------------
    def exec_in(self, cid: str, args: list[str] | None = None,
                process: dict[str, Any] | None = None, env: list[str] | None = None,
                cwd: str | None = None, user: str | None = None, tty: bool = False,
                console_socket: str | None = None, detach: bool = False) -> Any:
        """Start a process in a running container; see the module docstring."""
        from flatstack.runtime.verbs.exec import ExecOptions, exec_process

        if self._read(cid, RECORD) is None:
            raise FlatstackError(f"no such container: {cid}")
        if self._read(cid, EXIT) is not None:
            raise FlatstackError(f"container {cid} is not running")
        if process is not None and not isinstance(process, dict):
            raise FlatstackError("process: expected an OCI process object")
        if process is None and (not isinstance(args, list) or not args
                                or not all(isinstance(a, str) for a in args)):
            raise FlatstackError("args: expected a non-empty list of strings")
        if env is not None and not all(isinstance(e, str) and "=" in e for e in env):
            raise FlatstackError("env: expected a list of KEY=VALUE strings")
        if process is not None:
            tty = bool(process.get("terminal"))
        if tty and not console_socket:
            raise FlatstackError("console_socket: required for a terminal (tty)")
        if console_socket and not tty:
            raise FlatstackError("console_socket: given without a terminal (tty)")
        tag = os.urandom(6).hex()
        pid_file = os.path.join(self._dir(cid), f"exec-{tag}.pid")
        process_file = None
        if process is not None:
            process_file = os.path.join(self._dir(cid), f"exec-{tag}.json")
            with open(process_file, "w") as f:
                json.dump(process, f)
        opts = ExecOptions(root=self.runtime_root, container_id=cid, args=list(args or []),
                           process_file=process_file, tty=tty, detach=True,
                           pid_file=pid_file, console_socket=console_socket, env=env,
                           cwd=cwd, user=user)
        capture = not detach and not tty
        null_fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        ours: dict[int, str] = {}
        theirs = [null_fd, null_fd]
        try:
            if capture:
                theirs = []
                for stream in ("stdout", "stderr"):
                    r, w = os.pipe2(os.O_CLOEXEC)
                    os.set_blocking(r, False)
                    ours[r] = stream
                    theirs.append(w)
            with _stdio(null_fd, theirs[0], theirs[1]):
                exec_process(opts)
            with open(pid_file) as f:
                pid = int(f.read())
        except BaseException:
            for fd in ours:
                os.close(fd)
            raise
        finally:
            for fd in {null_fd, *theirs}:
                os.close(fd)
            for path in (pid_file, process_file):
                if path:
                    _unlink(path)
        if detach:
            self.detached[pid] = cid
            return {"pid": pid}
        assert self._conn is not None
        session = _Exec(cid, pid, self._conn, ours)
        self.execs[pid] = session
        for fd in ours:
            self.selector.register(fd, selectors.EVENT_READ,
                                   lambda f, s=session: self._on_exec_output(s, f))
        return DEFERRED

    def _on_exec_output(self, session: _Exec, fd: int, drain: bool = False) -> None:
        while True:
            try:
                data = os.read(fd, READ_CHUNK)
            except BlockingIOError:
                return
            if not data:
                self.selector.unregister(fd)
                os.close(fd)
                del session.fds[fd]
                return
            buf = session.output[session.fds[fd]]
            room = EXEC_OUTPUT_LIMIT - len(buf)
            if len(data) > room:
                session.truncated = True
            buf += data[:max(room, 0)]
            if not drain:
                return

    def _finish_exec(self, session: _Exec, status: int) -> None:
        """The exec'd process exited: take what is in its pipes and reply."""
        for fd in list(session.fds):
            self._on_exec_output(session, fd, drain=True)
        for fd in list(session.fds):  # a child of it may still hold the pipe: stop here
            self.selector.unregister(fd)
            os.close(fd)
        code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        result = {"exit_code": code, "truncated": session.truncated,
                  **{k: base64.b64encode(v).decode() for k, v in session.output.items()}}
        _reply(session.conn, {"ok": True, "result": result})

    # -- requests -------------------------------------------------------------------
    def handle(self, request: dict[str, Any]) -> Any:
        op = request.get("op")
        if op == "ping":
            return {"pid": os.getpid()}
        if op == "start":
            return self.start_container(
                request["id"], request["bundle"], request["log"],
                log_max_size=request.get("log_max_size"),
                log_max_files=request.get("log_max_files"),
                console_socket=request.get("console_socket"),
                hold=bool(request.get("hold")))
        if op == "release":
            return self.release_container(request["id"])
        if op == "status":
            return self.status(request["id"])
        if op == "list":
            try:
                names = sorted(os.listdir(self.containers_dir))
            except FileNotFoundError:
                names = []
            return [self.status(n) for n in names if self._read(n, RECORD)]
        if op == "wait":
            return self.wait_for_exit(request["id"])
        if op == "kill":
            self.signal_container(request["id"], int(request.get("signal", 15)))
            return None
        if op == "remove":
            self.remove_container(request["id"], bool(request.get("force")))
            return None
        if op == "exec":
            return self.exec_in(
                request["id"], args=request.get("args"), process=request.get("process"),
                env=request.get("env"), cwd=request.get("cwd"), user=request.get("user"),
                tty=bool(request.get("tty")), console_socket=request.get("console_socket"),
                detach=bool(request.get("detach")))
        if op == "shutdown":
            self.stopping = True
            return None
        raise FlatstackError(f"unknown request {op!r}")

    def _accept(self, server: socket.socket) -> None:
        conn, _ = server.accept()
        conn.settimeout(30)
        data = b""
        try:
            while not data.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            conn.close()
            return
        self._conn = conn
        request: Any = None
        try:
            request = json.loads(data)
            reply = {"ok": True, "result": self.handle(request)}
        except FlatstackError as err:
            reply = {"ok": False, "error": str(err)}
        except (ValueError, KeyError, TypeError) as err:
            reply = {"ok": False, "error": f"bad request: {err}"}
        except OSError as err:  # never let one request end the loop
            reply = {"ok": False, "error": f"{err.filename or 'supervisor'}: "
                                           f"{os.strerror(err.errno or 0).lower()}"}
        finally:
            self._conn = None
        if reply.get("result") is not DEFERRED:
            _reply(conn, reply)

    def serve(self) -> None:
        """Run until a shutdown request (containers keep running after it)."""
        from flatstack.kernel import proc

        proc.set_child_subreaper()
        import resource

        # Three fds per container (two FIFOs, the log file): allow thousands.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard != resource.RLIM_INFINITY:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
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
                if self.selector.get_map().get(key.fileobj) is key:  # not closed meanwhile
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


def _reply(conn: socket.socket, reply: dict[str, Any]) -> None:
    with conn:
        try:
            conn.sendall(json.dumps(reply).encode() + b"\n")
        except OSError:
            pass


def _bundle_terminal(bundle: str) -> bool:
    """process.terminal of the bundle's config (False when unreadable: create says why)."""
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            config = json.load(f)
        return bool((config.get("process") or {}).get("terminal"))
    except (OSError, ValueError, AttributeError, TypeError):
        return False


def decode_exec(result: dict[str, Any]) -> tuple[int, bytes, bytes]:
    """A foreground ``exec`` reply as (exit code, stdout, stderr)."""
    return (int(result["exit_code"]), base64.b64decode(result["stdout"]),
            base64.b64decode(result["stderr"]))


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except OSError as err:
        if err.errno != errno.EAGAIN:
            raise


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _remove_tree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def spawn(state_dir: str, socket_path: str, runtime_root: str, log_path: str) -> int:
    """Start a supervisor in its own session; returns its pid once it answers.

    It is not a child the caller must keep: killing the caller (even with SIGKILL)
    leaves it running, re-parented to init."""
    import subprocess

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
