"""A real unprivileged user for the rootless tests, and flatrun run as that user.

The session creates ``flatstack-rl-<random>`` with ``useradd`` (no automatic
subordinate ids), gives it a /etc/subuid and /etc/subgid range of its own that
overlaps no existing entry (300000 + 65536*k), a home and an XDG_RUNTIME_DIR
under a world-traversable temporary directory, and removes all of it at the end
(the subid files are restored byte for byte).

flatrun for that user: the repo venv's interpreter is a symlink into
/root/.pyenv, which sits under /root (mode 0700), so the user cannot execute
it.  The fixture writes a launcher with the same shape as the venv's
(``#!<python> -IS``, sys.path -> src, ``cli.run()``) whose interpreter is the
first Python >= 3.11 the user can run (Debian's /usr/bin/python3.11 here; flatrun's
runtime needs the standard library only).  If the user cannot read the repo's
src/, the launcher points at a copy of it instead.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
SUBID_BLOCK = 65536
SUBID_FIRST = 300000  # clear of useradd's default 100000-165535 allocation
PYTHONS = ("/usr/bin/python3.11", "/usr/local/bin/python3.11", "/usr/bin/python3",
           "/usr/local/bin/python3")
PROBE = ("import sys; sys.path.insert(0, {src!r}); import flatstack.runtime.cli; "
         "assert sys.version_info >= (3, 11)")


class RootlessUser:
    """The test user, its directories and a launcher for flatrun it can execute."""

    def __init__(self, name: str, base: Path) -> None:
        self.name = name
        self.base = base
        self.home = base / "home"
        self.runtime_dir = base / "run"
        self.uid = 0
        self.gid = 0
        self.subid_start = 0
        self.subid_count = SUBID_BLOCK
        self.python = ""
        self.src = str(SRC)
        self.flatrun = str(base / "bin" / "flatrun")
        self.rootfs = str(base / "rootfs")

    def env(self) -> dict[str, str]:
        return {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name,
                "XDG_RUNTIME_DIR": str(self.runtime_dir),
                "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}

    def popen_args(self) -> dict[str, Any]:
        """subprocess arguments that drop to the user: setgroups([]), setgid, setuid."""
        return {"user": self.uid, "group": self.gid, "extra_groups": [], "env": self.env(),
                "cwd": str(self.home)}

    def run(self, argv: list[str], *, out_dir: Path, check: bool = True,
            timeout: float = 30, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as the user; stdout/stderr go through files, never pipes."""
        tag = uuid.uuid4().hex[:8]
        out_path, err_path = out_dir / f"out-{tag}", out_dir / f"err-{tag}"
        kwargs = self.popen_args()
        if cwd is not None:
            kwargs["cwd"] = cwd
        with open(out_path, "w+") as out, open(err_path, "w+") as err:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                  timeout=timeout, check=False, **kwargs)
        result = subprocess.CompletedProcess(argv, proc.returncode, out_path.read_text(),
                                             err_path.read_text())
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} as {self.name} failed "
                                 f"({proc.returncode}): {result.stderr}")
        return result

    def chown(self, path: Path | str) -> None:
        os.chown(path, self.uid, self.gid)


def _subid_ranges(path: str) -> list[tuple[int, int]]:
    ranges = []
    for line in Path(path).read_text().splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            ranges.append((int(parts[1]), int(parts[2])))
    return ranges


def _free_subid_start() -> int:
    taken = _subid_ranges("/etc/subuid") + _subid_ranges("/etc/subgid")
    start = SUBID_FIRST
    while any(start < first + count and first < start + SUBID_BLOCK for first, count in taken):
        start += SUBID_BLOCK
    return start


def _drop_lines(path: str, prefix: str) -> None:
    text = Path(path).read_text()
    kept = "".join(line for line in text.splitlines(keepends=True)
                   if not line.startswith(prefix))
    if kept != text:
        Path(path).write_text(kept)


def _kill_user_processes(uid: int) -> None:
    """Kill, by pid, whatever the test user still runs (a container a failed test left)."""
    for _ in range(50):
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            uids = next((ln.split()[1:] for ln in status.splitlines()
                         if ln.startswith("Uid:")), [])
            if str(uid) in uids:
                pids.append(int(entry))
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)


def _launcher(user: RootlessUser, out_dir: Path) -> None:
    """Pick a Python the user can execute and write flatrun's launcher for it."""
    for candidate in PYTHONS:
        if not os.path.exists(candidate):
            continue
        for src in (str(SRC), str(user.base / "src")):
            if src != str(SRC) and not os.path.isdir(src):
                shutil.copytree(SRC, src, ignore=shutil.ignore_patterns("__pycache__"))
            probe = user.run([candidate, "-IS", "-c", PROBE.format(src=src)],
                             out_dir=out_dir, check=False)
            if probe.returncode == 0:
                user.python, user.src = candidate, src
                break
        if user.python:
            break
    if not user.python:
        raise AssertionError(f"no Python >= 3.11 that {user.name} can execute among "
                             f"{', '.join(PYTHONS)}")
    bindir = user.base / "bin"
    bindir.mkdir(mode=0o755)
    Path(user.flatrun).write_text(
        f"#!{user.python} -IS\nimport sys\nsys.path.insert(0, {user.src!r})\n"
        "from flatstack.runtime.cli import run\nrun()\n")
    os.chmod(user.flatrun, 0o755)


@pytest.fixture(scope="session")
def rootless_user(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RootlessUser]:
    """A real unprivileged user with its own subordinate id range; removed at the end."""
    assert os.geteuid() == 0, "creating the unprivileged test user needs root (make test)"
    for tool in ("useradd", "userdel", "newuidmap", "newgidmap"):
        assert shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin"), \
            f"{tool} missing: run make install (packages passwd, uidmap)"
    out_dir = tmp_path_factory.mktemp("rootless-out")
    base = Path(tempfile.mkdtemp(prefix="flatstack-rl-", dir="/tmp"))
    os.chmod(base, 0o755)  # mkdtemp makes it 0700: the user must traverse it
    user = RootlessUser(f"flatstack-rl-{secrets.token_hex(4)}", base)
    originals = {p: Path(p).read_bytes() for p in ("/etc/subuid", "/etc/subgid")}
    created = False
    try:
        subprocess.run(["useradd", "--no-create-home", "--home-dir", str(user.home),
                        "--shell", "/bin/sh", "--user-group",
                        "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", user.name],
                       check=True, capture_output=True)
        created = True
        import pwd

        entry = pwd.getpwnam(user.name)
        user.uid, user.gid = entry.pw_uid, entry.pw_gid
        assert user.uid != 0 and user.gid != 0
        user.subid_start = _free_subid_start()
        for path in originals:
            with open(path, "a") as f:
                f.write(f"{user.name}:{user.subid_start}:{user.subid_count}\n")
        for directory, mode in ((user.home, 0o755), (user.runtime_dir, 0o700)):
            directory.mkdir(mode=mode)
            user.chown(directory)
        from flatstack.tools.busybox import build_rootfs

        build_rootfs(user.rootfs)  # owned by host root, readable by everyone
        _launcher(user, out_dir)
        yield user
    finally:
        if created:
            _kill_user_processes(user.uid)
            subprocess.run(["userdel", user.name], check=False, capture_output=True)
        for path in originals:
            # userdel drops the user's lines already; dropping only ours (rather than
            # writing the saved bytes back) restores the file exactly without losing
            # an entry someone else added meanwhile.
            _drop_lines(path, f"{user.name}:")
        shutil.rmtree(base, ignore_errors=True)


class RootlessFlatrun:
    """flatrun run as the test user, with its default state root (XDG_RUNTIME_DIR)."""

    def __init__(self, user: RootlessUser, out_dir: Path) -> None:
        self.user = user
        self.out_dir = out_dir
        self.created: list[str] = []
        self.count = 0

    def __call__(self, *args: str, check: bool = True,
                 timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return self.user.run([self.user.flatrun, *args], out_dir=self.out_dir, check=check,
                             timeout=timeout)

    def new_id(self) -> str:
        cid = f"rl{uuid.uuid4().hex[:10]}"
        self.created.append(cid)
        return cid

    def state(self, cid: str) -> dict[str, Any]:
        return json.loads(self("state", cid).stdout)

    @property
    def state_root(self) -> Path:
        return self.user.runtime_dir / "flatrun"

    def bundle(self, config: dict[str, Any]) -> str:
        """A bundle directory the user owns, holding ``config``."""
        self.count += 1
        bundle = self.user.home / f"bundle-{uuid.uuid4().hex[:8]}"
        bundle.mkdir(mode=0o755)
        (bundle / "config.json").write_text(json.dumps(config, indent=2))
        self.user.chown(bundle)
        self.user.chown(bundle / "config.json")
        return str(bundle)


@pytest.fixture
def rootless(rootless_user: RootlessUser, tmp_path: Path) -> Iterator[RootlessFlatrun]:
    runner = RootlessFlatrun(rootless_user, tmp_path)
    yield runner
    for cid in runner.created:
        runner("delete", "--force", cid, check=False)


@pytest.fixture
def rootless_spec(rootless_user: RootlessUser) -> dict[str, Any]:
    """``default_spec(rootless=True)`` as the user would get it, on the busybox rootfs."""
    from flatstack.oci.defaults import default_spec

    spec = default_spec(rootless=True)
    for key in ("uidMappings", "gidMappings"):
        for m in spec["linux"][key]:
            m["hostID"] = rootless_user.uid if key == "uidMappings" else rootless_user.gid
    spec["root"] = {"path": rootless_user.rootfs, "readonly": True}
    spec["process"]["terminal"] = False
    return spec
