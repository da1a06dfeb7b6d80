"""``flatrun run``: create and start, then (unless detached) wait and delete."""

from __future__ import annotations

import os

from flatstack.runtime.create import CreateOptions, create
from flatstack.runtime.verbs.delete import delete
from flatstack.runtime.verbs.start import start


def run(opts: CreateOptions, *, detach: bool = False, keep: bool = False) -> int:
    """Run a container; returns its exit status when not detached."""
    opts.internal_console = not detach and not opts.console_socket
    container = create(opts, subreaper=not detach)
    container.unlock()
    pid = container.pid
    master = -1
    try:
        if container.console_peer >= 0:
            from flatstack.runtime.console import receive_master

            master = receive_master(container.console_peer)
        forwarder = None if detach else _forward_signals(pid, master)
        start(opts.root, opts.container_id)
    except BaseException:
        delete(opts.root, opts.container_id, force=True)
        raise
    if detach:
        return 0
    if master >= 0:
        from flatstack.runtime.tty_proxy import proxy

        proxy(master)
    status = wait_for(pid)
    if forwarder:
        forwarder()
    if not keep:
        delete(opts.root, opts.container_id, force=True)
    return status


def wait_for(pid: int) -> int:
    """Wait for our (adopted) child; returns a shell-style exit status."""
    while True:
        try:
            got, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255
        except InterruptedError:
            continue
        if got == pid:
            if os.WIFSIGNALED(status):
                return 128 + os.WTERMSIG(status)
            return os.WEXITSTATUS(status)


def _forward_signals(pid: int, master: int = -1):
    """Relay signals to the container; with a pty, SIGWINCH resizes it instead."""
    import signal

    forwarded = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                 signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH]
    previous = {}

    def relay(signum: int, _frame: object) -> None:
        if signum == signal.SIGWINCH and master >= 0:
            from flatstack.runtime.tty_proxy import copy_winsize

            copy_winsize(0, master)
            return
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in forwarded:
        previous[sig] = signal.signal(sig, relay)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
