"""Lifecycle hooks: run with the container state on stdin, with timeouts."""

from __future__ import annotations

import os

from flatstack import _fastjson
from flatstack.errors import HookError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def run_hooks(config: dict[str, Any], kind: str, state: dict[str, Any], *,
              strict: bool = True) -> list[str]:
    """Run every ``hooks.<kind>`` entry in order.

    With ``strict`` the first failure raises :class:`HookError`; otherwise
    failures are collected and returned (poststop hooks only warn).
    """
    hooks = (config.get("hooks") or {}).get(kind) or []
    if not hooks:
        return []
    import subprocess

    payload = _fastjson.dumps(state).encode()
    failures: list[str] = []
    for index, hook in enumerate(hooks):
        path = hook["path"]
        args = hook.get("args") or [path]
        env = hook.get("env")
        timeout = hook.get("timeout")
        where = f"hooks.{kind}[{index}]"
        try:
            proc = subprocess.run(
                args, executable=path, input=payload, env=_env(env),
                capture_output=True, timeout=timeout,
                close_fds=True, check=False,
            )
        except subprocess.TimeoutExpired:
            message = f"{where}: {path} timed out after {timeout} s"
        except OSError as err:
            message = f"{where}: {path}: {os.strerror(err.errno or 0).lower()}"
        else:
            if proc.returncode == 0:
                continue
            detail = (proc.stderr or proc.stdout).decode(errors="replace").strip()
            message = f"{where}: {path} exited with status {proc.returncode}"
            if detail:
                message += f": {detail[-500:]}"
        if strict:
            raise HookError(message)
        failures.append(message)
    return failures


def _env(env: list[str] | None) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in env or []:
        key, _, value = item.partition("=")
        result[key] = value
    return result
