"""Image config + flags -> config.json pieces: command, env, user lookup, -v, resources."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flatstack.engine import spec
from flatstack.engine.volumes import parse_volume
from flatstack.errors import ConfigError


def test_command_precedence() -> None:
    image = {"Entrypoint": ["/ep"], "Cmd": ["a", "b"]}
    assert spec.command(image, None, None) == ["/ep", "a", "b"]
    assert spec.command(image, None, ["x"]) == ["/ep", "x"]
    assert spec.command(image, ["/other"], None) == ["/other"], "a new entrypoint drops Cmd"
    assert spec.command(image, [], ["sh"]) == ["sh"]
    with pytest.raises(ConfigError, match="no Entrypoint or Cmd"):
        spec.command({}, None, None)


def test_env_merge() -> None:
    env = spec.merge_env(["PATH=/bin", "A=1", "B=2"], ["A=3", "C", "D"],
                         host_env={"C": "from-host"})
    assert env == ["PATH=/bin", "A=3", "B=2", "C=from-host"]
    assert spec.merge_env([], [])[0].startswith("PATH=")
    with pytest.raises(ConfigError, match=r"env\[0\]"):
        spec.merge_env([], ["=x"])


def test_bare_env_key_never_reads_the_daemons_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A raw API caller's bare ``KEY`` must not copy a secret from the daemon's env."""
    monkeypatch.setenv("FLATSTACK_DAEMON_SECRET", "s3cret")
    env = spec.merge_env([], ["FLATSTACK_DAEMON_SECRET", "A=1"])
    assert not any(e.startswith("FLATSTACK_DAEMON_SECRET") for e in env)
    assert "A=1" in env


def test_user_lookup_stays_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    secret = tmp_path / "host-passwd"
    secret.write_text("evil:x:4242:4242::/:/bin/sh\n")
    # an absolute symlink in the image must resolve inside the image, not on the host
    os.symlink(str(secret), root / "etc" / "passwd")
    with pytest.raises(ConfigError, match="unable to find user evil"):
        spec.resolve_user(str(root), "evil")
    os.unlink(root / "etc" / "passwd")
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\nweb:x:33:34::/srv:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\nwww:x:34:\nlogs:x:50:web,other\n")
    assert spec.resolve_user(str(root), "web") == spec.User(33, 34, [50], "/srv")
    assert spec.resolve_user(str(root), "web:root") == spec.User(33, 0, [], "/srv")
    assert spec.resolve_user(str(root), "1234") == spec.User(1234, 0, [], "/")
    assert spec.resolve_user(str(root), "33:logs").gid == 50
    assert spec.resolve_user(str(root), "") == spec.User(0, 0, [], "/root")
    with pytest.raises(ConfigError, match="unable to find group nogroup"):
        spec.resolve_user(str(root), "web:nogroup")
    with pytest.raises(ConfigError, match="outside the container"):
        spec.resolve_user(str(root), "70000")


def test_volume_specs(tmp_path: Path) -> None:
    vol = parse_volume(f"{tmp_path}/:/data:ro")
    assert (vol.kind, vol.source, vol.destination, vol.ro, vol.idmap) == \
        ("bind", str(tmp_path), "/data", True, False)
    named = parse_volume("cache:/var/cache")
    assert (named.kind, named.idmap) == ("volume", True)
    for bad, why in [("nocolon", "SOURCE:DESTINATION"), ("a:relative", "absolute"),
                     ("a:/x:bogus", "unknown option"), ("a:/x/../y", "without '..'"),
                     ("a:/", "root directory"), ("/does/not/exist:/x", "does not exist"),
                     ("bad name:/x", "valid volume name"), ("a:/x:ro,rw", "both")]:
        with pytest.raises(ConfigError, match=why):
            parse_volume(bad, 3)


def test_resources() -> None:
    out = spec.resources(64 << 20, 1.5, 10, {"pids": {"limit": 4096}})
    assert out["memory"] == {"limit": 64 << 20, "swap": 64 << 20}
    assert out["cpu"] == {"quota": 150000, "period": 100000} and out["pids"] == {"limit": 10}
    assert "pids" not in spec.resources(None, None, -1, {"pids": {"limit": 4096}})
    for kwargs, field in [({"memory": 1000}, "memory"), ({"cpus": 0.001}, "cpus"),
                          ({"cpus": 10_000.0}, "cpus"), ({"pids_limit": 0}, "pids_limit")]:
        with pytest.raises(ConfigError, match=field):
            spec.check_resources(**{"memory": None, "cpus": None, "pids_limit": None,
                                    **kwargs})


def test_names_and_hostnames() -> None:
    from flatstack.engine import names

    assert names.validate("web-1.a_b") == "web-1.a_b"
    assert names.validate_hostname("db.internal-2") == "db.internal-2"
    for bad in ["", "-x", "a/b", "x" * 129, "f" * 64]:
        with pytest.raises(ConfigError, match="name"):
            names.validate(bad)
    for bad in ["-a", "a_b", "a..b", "x" * 64, "a." * 33]:
        with pytest.raises(ConfigError, match="hostname"):
            names.validate_hostname(bad)
    generated = names.generate(set())
    adjective, noun = generated.split("_")
    assert adjective.isalpha() and noun.isalpha()
