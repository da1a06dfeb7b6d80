"""Bad requests: a 4xx naming the field (never a 500), a non-zero CLI exit with a clear
message, and nothing left behind (containers, names, netns, mounts, holds, attachments)."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.e2e._daemon import IMAGE, Daemon, empty


def test_api_refuses_bad_requests_naming_the_field(daemon: Daemon,
                                                   layouts: dict[str, Path]) -> None:
    daemon.import_images(layouts)
    cases = [
        ({"image": IMAGE, "memory": "12x"}, 422, "memory"),
        ({"image": IMAGE, "memory": 0}, 422, "memory"),
        ({"image": IMAGE, "cpus": -1}, 422, "cpus"),
        ({"image": IMAGE, "pids_limit": 0}, 422, "pids_limit"),
        ({"image": IMAGE, "bogus": 1}, 422, "bogus"),
        ({"image": IMAGE, "env": "A=1"}, 422, "env"),
        ({"image": IMAGE, "ports": ["80", "notaport"]}, 400, "ports[1]"),
        ({"image": IMAGE, "volumes": ["relative:x"]}, 400, "volumes[0]"),
        ({"image": IMAGE, "workdir": "rel"}, 422, "workdir"),
        ({"image": IMAGE, "name": "bad name!"}, 400, "name"),
        ({"image": IMAGE, "network": "nosuchnet"}, 400, "network"),
        ({"image": "Bad Ref"}, 400, "image"),
        ({"image": "localhost/nope:1"}, 404, "image"),
        ({}, 422, "image"),
    ]
    with daemon.api() as api:
        for body, status, field in cases:
            r = api.post("/v1/containers", json=body)
            assert (r.status_code, r.json().get("field")) == (status, field), (body, r.text)
            assert r.json()["error"]
        r = api.post("/v1/containers", content=b"{not json",
                     headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["field"] == "body"
        r = api.get("/v1/containers/nope")
        assert r.status_code == 404 and "nope" in r.json()["error"]
        for method, url in (("POST", "/v1/containers/nope/stop"), ("DELETE", "/v1/containers/nope"),
                            ("POST", "/v1/containers/nope/wait"),
                            ("GET", "/v1/containers/nope/logs")):
            assert api.request(method, url).status_code == 404, url
        r = api.post("/v1/containers/nope/stop", params={"t": -1})
        assert r.status_code == 422 and r.json()["field"] == "t"
        r = api.post("/v1/containers/nope/kill", params={"signal": "SIGNOPE"})
        assert r.status_code == 400 and r.json()["field"] == "signal"
        assert api.get("/v2/containers").status_code == 404
    assert empty(daemon.leftovers()), daemon.leftovers()


def test_conflicts_are_409_and_leave_nothing(daemon: Daemon, layouts: dict[str, Path]) -> None:
    daemon.import_images(layouts)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with daemon.api() as api:
            r = api.post("/v1/containers", json={"image": IMAGE, "command": ["sleep", "60"],
                                                 "ports": [f"127.0.0.1:{port}:80"]})
            assert r.status_code == 409 and r.json()["field"] == "ports[0]", r.text
            assert "already in use" in r.json()["error"]
        assert empty(daemon.leftovers()), daemon.leftovers()

    cid = daemon.cli("run", "-d", "--name", "taken", "--network", "none", IMAGE,
                     "sleep", "60").stdout.strip()
    with daemon.api() as api:
        r = api.post("/v1/containers", json={"image": IMAGE, "name": "taken"})
        assert r.status_code == 409 and "already in use" in r.json()["error"]
        r = api.delete("/v1/containers/taken")
        assert r.status_code == 409 and "running" in r.json()["error"]
        r = api.delete(f"/v1/images/{IMAGE}")
        assert r.status_code == 409 and "in use" in r.json()["error"]
    proc = daemon.cli("run", "--name", "taken", IMAGE, "true", check=False)
    assert proc.returncode == 125 and "already in use" in proc.stderr
    proc = daemon.cli("rm", "taken", check=False)
    assert proc.returncode == 1 and "is running" in proc.stderr
    assert daemon.cli("rm", "-f", "taken").stdout == "taken\n"
    assert daemon.cli("ps", "-aq").stdout == ""
    assert not cid.startswith("flatstack")
    assert empty(daemon.leftovers()), daemon.leftovers()


def test_cli_names_the_flag(daemon: Daemon, layouts: dict[str, Path]) -> None:
    daemon.import_images(layouts)
    for args, needle in ((["--memory", "12x"], "--memory: invalid size '12x'"),
                         (["--cpus", "0"], "--cpus: must be positive"),
                         (["-p", "99999:80"], "ports[0]"),
                         (["--entrypoint", "[1]"], "--entrypoint")):
        proc = daemon.cli("run", "--rm", *args, IMAGE, "true", check=False)
        assert proc.returncode == 125, (args, proc.stderr)
        assert proc.stderr.startswith("flatstack: ") and needle in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    proc = daemon.cli("logs", "nope", check=False)
    assert proc.returncode == 1 and proc.stderr == "flatstack: container 'nope' does not exist\n"
    proc = daemon.cli("ps", "--format", "yaml", check=False)
    assert proc.returncode == 1 and "--format" in proc.stderr
    assert empty(daemon.leftovers()), daemon.leftovers()
