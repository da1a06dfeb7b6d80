"""The CLI's fast path parses hot commands exactly as the typer app does, declines what
it is unsure of, and runs without importing typer or rich."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from tests.conftest import REPO

from flatstack.cli import _fast
from flatstack.cli.containers import COMMANDS
from flatstack.cli.main import _register

# (command, argv after it): each is well formed, so the fast path must take it
ACCEPTED = [
    ("run", ["img"]),
    ("run", ["-it", "--rm", "-eA=1", "-e", "B", "--env=C=3", "img", "sh", "-c", "x -y"]),
    ("run", ["-d", "--name", "web", "-p", "8080:80", "-p", "127.0.0.1:53:53/udp", "img"]),
    ("run", ["--network", "none", "--cpus", "1.5", "--pids-limit=20", "-m", "512m", "img",
             "--rm", "-d"]),
    ("run", ["-v", "./d:/d:ro", "-l", "a=b", "-lc=d", "-u", "1:1", "-w", "/", "-h", "x",
             "--entrypoint", "", "--net=host", "img", "--", "true"]),
    ("run", ["--", "img", "-x"]),
    ("run", ["--cpus=2e-1", "img"]),
    ("run", ["--name", "-x", "-e", "--rm", "img", "-"]),
    ("ps", []),
    ("ps", ["-aq", "--no-trunc", "--format", "json"]),
    ("ps", ["--format=table", "-a"]),
    ("inspect", ["a", "b"]),
    ("logs", ["c", "-f", "-n", "5", "-t"]),
    ("logs", ["--tail=0", "c"]),
    ("exec", ["-it", "c", "sh", "-l"]),
    ("exec", ["-e", "A=1", "-u", "0", "-w", "/tmp", "c", "env", "-i"]),
    ("exec", ["-d", "c", "--", "sleep", "1"]),
    ("stop", ["a", "-t", "1.5", "b"]),
    ("stop", ["-t0", "a"]),
    ("kill", ["-s", "TERM", "a"]),
    ("kill", ["a", "--signal=9"]),
    ("rm", ["-f", "a", "b"]),
    ("rm", ["a", "-f"]),
    ("wait", ["a", "b"]),
    ("stats", []),
    ("stats", ["--no-stream", "a", "--format", "json"]),
]
# malformed or help: the typer app must get them (its messages, its exit codes)
DECLINED = [
    ("run", []), ("run", ["--help"]), ("run", ["--rm=1", "img"]), ("run", ["-x", "img"]),
    ("run", ["--cpus", "lots", "img"]), ("run", ["--pids-limit", "1.5", "img"]),
    ("run", ["--name"]), ("run", ["-e"]), ("ps", ["extra"]), ("ps", ["--all=yes"]),
    ("ps", ["--al"]), ("logs", []), ("logs", ["a", "b"]), ("logs", ["-n", "x", "c"]),
    ("exec", ["c"]), ("stop", []), ("stop", ["-t", "soon", "a"]), ("kill", ["-s"]),
    ("rm", ["--help", "a"]), ("wait", []), ("stats", ["--format"]),
]


@pytest.fixture(scope="module")
def commands() -> Any:
    import typer

    return typer.main.get_command(_register()).commands  # type: ignore[attr-defined]


def _normal(values: dict[str, Any]) -> dict[str, Any]:
    """Lists for tuples, and an empty list for a list parameter left out (typer passes
    None or [], which every command treats alike)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, tuple | list):
            value = list(value)
        out[key] = [] if value is None and key in ("command", "containers") else value
    return out


@pytest.mark.parametrize(("name", "argv"), ACCEPTED, ids=[" ".join([c, *a]) for c, a in
                                                          ACCEPTED])
def test_fast_parse_matches_typer(commands: Any, name: str, argv: list[str]) -> None:
    fn, positional_last = COMMANDS[name]
    fast = _fast.parse(fn, argv, positional_last)
    assert fast is not None, f"{name} {argv} declined"
    ctx = commands[name].make_context(name, list(argv))
    assert _normal(fast) == _normal(dict(ctx.params))


@pytest.mark.parametrize(("name", "argv"), DECLINED, ids=[" ".join([c, *a]) for c, a in
                                                          DECLINED])
def test_fast_parse_declines_what_it_is_not_sure_of(name: str, argv: list[str]) -> None:
    fn, positional_last = COMMANDS[name]
    assert _fast.parse(fn, argv, positional_last) is None


def test_every_hot_command_is_parsed_by_the_fast_path() -> None:
    """No declaration the fast path cannot read slipped into a hot command."""
    for name, (fn, _) in COMMANDS.items():
        assert _fast._specs(fn) is not None, name


def test_dispatch_hands_other_command_lines_to_typer() -> None:
    for argv in ([], ["--help"], ["image", "ls"], ["get", "apps"], ["version", "x"],
                 ["--socket"], ["--sock=x", "ps"], ["nope"], ["--socket", "s", "--help"]):
        assert _fast.dispatch(list(argv)) is False, argv


def _in_fresh_python(code: str) -> subprocess.CompletedProcess[str]:
    python = REPO / ".venv" / "bin" / "python3"
    return subprocess.run([str(python), "-IS", "-c", "import sys; sys.path.insert(0, "
                           f"{str(REPO / 'src')!r}); " + code], capture_output=True,
                          text=True, timeout=60, check=False)


def test_hot_commands_do_not_import_typer_rich_or_http_client(tmp_path: Any) -> None:
    sock = tmp_path / "none.sock"
    code = ("from flatstack.cli.main import main\n"
            f"sys.argv = ['flatstack', '--socket', {str(sock)!r}, 'ps', '-a']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
            "heavy = [m for m in ('typer', 'rich', 'click', 'http.client', 'email', "
            "'dataclasses', 'typing') if m in sys.modules]\n"
            "print(code, heavy, file=sys.stderr)")
    proc = _in_fresh_python(code)
    assert f"cannot reach the flatstack daemon at {sock}" in proc.stderr
    assert proc.stderr.strip().endswith("1 []"), proc.stderr


def test_launcher_runs_version_and_falls_back_to_typer() -> None:
    exe = str(REPO / ".venv" / "bin" / "flatstack")
    out = subprocess.run([exe, "--socket", "/nonexistent", "version"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out == "flatstack 0.1.0\n"
    bad = subprocess.run([exe, "ps", "--no-such"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert bad.returncode == 2 and "No such option" in bad.stderr
    helped = subprocess.run([exe, "run", "--help"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert helped.returncode == 0 and "--publish" in helped.stdout, helped.stderr
    assert sys.version_info >= (3, 11)
