"""The daemon: its socket (0600), pidfile, OpenAPI document, clean stop, and the CLI's
message when no daemon answers."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

from tests.e2e._daemon import FLATSTACK, IMAGE, Daemon


def test_socket_pidfile_openapi_and_clean_stop(daemon: Daemon,
                                               layouts: dict[str, Path]) -> None:
    mode = os.stat(daemon.socket).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(os.stat(daemon.run_dir).st_mode) == 0o700
    assert daemon.proc is not None
    assert (daemon.run_dir / "daemon.pid").read_text().strip() == str(daemon.proc.pid)
    with daemon.api() as api:
        version = api.get("/v1/version").json()
        doc = api.get("/openapi.json").json()
    assert version["api"] == "v1" and version["pid"] == daemon.proc.pid
    paths = doc["paths"]
    for p in ("/v1/images", "/v1/images/pull", "/v1/images/import", "/v1/images/prune",
              "/v1/images/{ref}", "/v1/containers", "/v1/containers/{ref}",
              "/v1/containers/{ref}/logs", "/v1/containers/{ref}/exec",
              "/v1/containers/{ref}/stop", "/v1/containers/{ref}/kill",
              "/v1/containers/{ref}/wait", "/v1/containers/{ref}/stats"):
        assert p in paths, p
    assert set(paths["/v1/containers"]) == {"get", "post"}
    assert set(paths["/v1/containers/{ref}"]) == {"get", "delete"}
    run_schema = doc["components"]["schemas"]["RunRequest"]["properties"]
    assert {"image", "command", "memory", "ports", "volumes", "remove"} <= set(run_schema)

    # SIGTERM: open streams end at once with a message; containers keep running
    daemon.import_images(layouts)
    daemon.cli("run", "-d", "--name", "ticker", "--network", "none", IMAGE, "sh", "-c",
               "while :; do echo tick; sleep 0.2; done")
    pid = json.loads(daemon.cli("inspect", "ticker").stdout)[0]["pid"]
    follow = subprocess.Popen([str(FLATSTACK), "logs", "-f", "ticker"], env=daemon.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert follow.stdout is not None and follow.stdout.readline() == "tick\n"
    started = time.monotonic()
    assert daemon.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 2.5  # not uvicorn's 3 s grace period
    _, err = follow.communicate(timeout=10)
    assert follow.returncode == 1
    assert err == "flatstack: the daemon is stopping (the container keeps running)\n"
    assert not daemon.socket.exists() and not (daemon.run_dir / "daemon.pid").exists()
    assert (daemon.run_dir / "supervisor.sock").exists(), "the supervisor outlives the daemon"
    os.kill(pid, 0)
    log = daemon.log.read_text()
    assert "stopped" in log and "Traceback" not in log


def test_second_daemon_on_the_same_socket_is_refused(daemon: Daemon) -> None:
    proc = subprocess.run([str(FLATSTACK), "daemon", "--state-dir", str(daemon.tmp / "other"),
                           "--socket", str(daemon.socket), "--runtime-root",
                           str(daemon.tmp / "rt2")], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 1
    assert "another flatstack daemon is running" in proc.stderr
    with daemon.api() as api:  # the first one still serves
        assert api.get("/v1/version").status_code == 200


def test_cli_says_when_no_daemon_runs() -> None:
    with tempfile.TemporaryDirectory(prefix="fse2e-") as tmp:
        sock = Path(tmp) / "api.sock"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLATSTACK_")}
        for args in (["--socket", str(sock), "ps"], ["--socket", str(sock), "image", "ls"]):
            proc = subprocess.run([str(FLATSTACK), *args], capture_output=True, text=True,
                                  env=env, timeout=60, check=False)
            assert proc.returncode == 1
            assert f"cannot reach the flatstack daemon at {sock}" in proc.stderr
            assert "is it running?" in proc.stderr and "Traceback" not in proc.stderr
        proc = subprocess.run([str(FLATSTACK), "ps"], capture_output=True, text=True,
                              env={**env, "FLATSTACK_SOCKET": str(sock)}, timeout=60,
                              check=False)
        assert proc.returncode == 1 and str(sock) in proc.stderr


def test_cli_start_up_stays_lean() -> None:
    """The CLI never loads the server side (FastAPI, uvicorn) nor httpx."""
    code = ("import sys; from flatstack.cli import main; main._register(); "
            "bad = [m for m in ('fastapi', 'uvicorn', 'starlette', 'httpx', 'anyio') "
            "if m in sys.modules]; print(bad)")
    python = FLATSTACK.parent / "python"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out == "[]\n"
