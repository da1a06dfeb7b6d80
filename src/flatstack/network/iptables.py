"""Thin helpers over the ``iptables`` tools (the same backend CNI's portmap drives).

Chains are written with ``iptables-restore --noflush``: one transaction that re-declares
(so flushes) the chains it names and fills them, leaving every other chain alone.
"""

from __future__ import annotations

import subprocess

from flatstack.errors import FlatstackError


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run an iptables tool; never raises for its exit status."""
    return subprocess.run(list(args), input=stdin, capture_output=True, text=True, check=False)


def restore(lines: list[str], what: str) -> None:
    """Apply ``iptables-restore --noflush`` text; ``what`` names the caller in errors."""
    done = run("iptables-restore", "-w", "--noflush", stdin="\n".join(lines) + "\n")
    if done.returncode != 0:
        raise FlatstackError(f"{what}: iptables-restore: {done.stderr.strip()}")


def ensure_jump(table: str, hook: list[str], what: str, *, first: bool = True) -> None:
    """Add ``hook`` (a built-in chain and a rule) unless it is there already."""
    if run("iptables", "-w", "-t", table, "-C", *hook).returncode == 0:
        return
    done = run("iptables", "-w", "-t", table, "-I" if first else "-A", *hook)
    if done.returncode != 0:
        raise FlatstackError(f"{what}: iptables -t {table} -I {' '.join(hook)}: "
                             f"{done.stderr.strip()}")


def delete_jump(table: str, hook: list[str]) -> None:
    """Remove every copy of ``hook``; absent is fine."""
    while run("iptables", "-w", "-t", table, "-D", *hook).returncode == 0:
        pass


def drop_chains(table: str, names: list[str]) -> None:
    """Flush and delete chains (after their jumps are gone); absent ones are fine."""
    for name in names:
        run("iptables", "-w", "-t", table, "-F", name)
    for name in names:
        run("iptables", "-w", "-t", table, "-X", name)
