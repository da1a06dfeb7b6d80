"""Hooks run at the points the runtime-spec names, with the state on stdin."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.conftest import Bundles, Flatrun


def _hook_script(tmp_path: Path) -> Path:
    script = tmp_path / "hook.sh"
    script.write_text(
        "#!/bin/sh\n"
        'state=$(cat)\n'
        'echo "$1 $(echo "$state" | jq -c "{status, pid, id}")" >> "$2"\n'
    )
    script.chmod(0o755)
    return script


def test_hooks_order_and_state(flatrun: Flatrun, make_bundle: Bundles, tmp_path: Path) -> None:
    script = _hook_script(tmp_path)
    record = tmp_path / "record"

    def edit(config: dict[str, Any]) -> None:
        config["hooks"] = {
            kind: [{"path": str(script), "args": ["hook.sh", kind, str(record)]}]
            for kind in ("prestart", "createRuntime", "poststart", "poststop")
        }

    cid = flatrun.new_id()
    bundle = make_bundle(["sleep", "30"], edit=edit)
    flatrun("create", "-b", bundle, cid)
    pid = flatrun.state(cid)["pid"]
    lines = record.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["prestart", "createRuntime"]
    state = json.loads(lines[0].split(" ", 1)[1])
    # "created", as crun and runtime-tools' hooks_stdin expect (runc says "creating").
    assert state == {"status": "created", "pid": pid, "id": cid}
    flatrun("start", cid)
    lines = record.read_text().splitlines()
    assert lines[-1].split()[0] == "poststart"
    assert json.loads(lines[-1].split(" ", 1)[1])["status"] == "running"
    flatrun("delete", "--force", cid)
    last = record.read_text().splitlines()[-1]
    assert last.split()[0] == "poststop"
    assert json.loads(last.split(" ", 1)[1])["status"] == "stopped"


def test_failing_create_runtime_hook_aborts(flatrun: Flatrun, make_bundle: Bundles) -> None:
    def edit(config: dict[str, Any]) -> None:
        config["hooks"] = {"createRuntime": [{"path": "/bin/sh",
                                              "args": ["sh", "-c", "echo boom >&2; exit 3"]}]}

    cid = flatrun.new_id()
    result = flatrun("create", "-b", make_bundle(["true"], edit=edit), cid, check=False)
    assert result.returncode == 1
    assert "hooks.createRuntime[0]" in result.stderr and "boom" in result.stderr
    assert not (Path(flatrun.root) / cid).exists()


def test_hook_timeout(flatrun: Flatrun, make_bundle: Bundles) -> None:
    def edit(config: dict[str, Any]) -> None:
        config["hooks"] = {"prestart": [{"path": "/bin/sleep", "args": ["sleep", "10"],
                                         "timeout": 1}]}

    cid = flatrun.new_id()
    started = time.monotonic()
    result = flatrun("create", "-b", make_bundle(["true"], edit=edit), cid, check=False)
    assert time.monotonic() - started < 8
    assert result.returncode == 1 and "timed out after 1 s" in result.stderr


def test_start_container_hook_runs_inside(flatrun: Flatrun, make_bundle: Bundles,
                                          tmp_path: Path) -> None:
    def edit(config: dict[str, Any]) -> None:
        config["hooks"] = {"startContainer": [
            {"path": "/bin/sh", "args": ["sh", "-c", "hostname > /tmp/hook-host"]}]}

    bundle = make_bundle(["sh", "-c", "cat /tmp/hook-host"], own_rootfs=True, edit=edit)
    cid = flatrun.new_id()
    out = flatrun("run", "-b", bundle, cid).stdout
    assert out.strip() == "flatrun"


def test_state_says_creating_until_create_returns(flatrun: Flatrun, make_bundle: Bundles,
                                                  tmp_path: Path) -> None:
    """While create still sets the container up (here: in its createRuntime hook, the
    init already alive), `state` reports "creating", not "created" (runtime.md: created
    means the create operation has finished)."""
    seen = tmp_path / "seen"
    cid = flatrun.new_id()

    def edit(config: dict[str, Any]) -> None:
        config["hooks"] = {"createRuntime": [{"path": "/bin/sh", "args": [
            "sh", "-c", f"cat > /dev/null; {flatrun.binary} --root {flatrun.root} "
                        f"state {cid} > {seen}"]}]}

    flatrun("create", "-b", make_bundle(["true"], edit=edit), cid)
    assert json.loads(seen.read_text())["status"] == "creating"
    assert flatrun.state(cid)["status"] == "created"
