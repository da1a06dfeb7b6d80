"""The VM platform: QEMU with a Debian kernel and an initramfs built from the bench rootfs.

Every run boots the VM: the kernel command line carries the argv (base64), the
initramfs' ``/init`` loads the virtio modules, mounts the volume (a raw ext4 image,
``cache=none``) at ``/vol``, runs the argv and powers off; the output comes back on
the serial console.  KVM is used only when ``/dev/kvm`` can boot a stock kernel; on a
PVM host (``kvm_pvm`` loaded, as here) QEMU runs under TCG and every figure is
labelled software-emulated.  Networking: ``bridge`` is a tap device with a host
address (virtio-net), ``port`` is QEMU's user-mode network with a forwarded host port.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import os
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from flatstack.bench.platforms import (
    Env,
    Platform,
    PlatformError,
    Served,
    free_port,
    tool_version,
)
from flatstack.bench.workloads import Case

QEMU = "qemu-system-x86_64"
MEMORY = "512M"
TAP = "fsbtap0"
TAP_HOST, TAP_GUEST = "10.89.78.1", "10.89.78.2"
SLIRP_GUEST = "10.0.2.15"
MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "crc32c_generic", "ext4")
BOOT_TIMEOUT = 180.0

INIT = r"""#!/bin/sh
export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /lib/fsb/order); do insmod /lib/fsb/$m 2>/dev/null; done
ip link set lo up
for w in $(cat /proc/cmdline); do
  case "$w" in
    fsb.cmd=*) CMD=$(echo "${w#fsb.cmd=}" | base64 -d) ;;
    fsb.ip=*) IP="${w#fsb.ip=}" ;;
    fsb.serve=1) SERVE=1 ;;
  esac
done
i=0; while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
[ -b /dev/vda ] && mount -t ext4 /dev/vda /vol
if [ -n "$IP" ]; then ip addr add "$IP/24" dev eth0; ip link set eth0 up; fi
echo FSB-BEGIN
if [ -n "$SERVE" ]; then
  sh -c "$CMD" &
  echo FSB-READY
  wait
else
  sh -c "$CMD"
  echo "FSB-END rc=$?"
fi
sync
sleep 1  # let the serial line drain before the power goes
poweroff -f
"""


def is_pvm() -> bool:
    """True when /dev/kvm is the PVM flavour (a stock guest kernel hangs under it)."""
    return os.path.isdir("/sys/module/kvm_pvm")


def kvm_usable() -> bool:
    """KVM for the VM: /dev/kvm present and not PVM (override: FLATSTACK_BENCH_VM_ACCEL)."""
    forced = os.environ.get("FLATSTACK_BENCH_VM_ACCEL", "")
    if forced in ("kvm", "tcg"):
        return forced == "kvm"
    return os.path.exists("/dev/kvm") and not is_pvm()


def find_kernel() -> tuple[str, str] | None:
    """(vmlinuz path, release) of the newest Debian kernel in /boot with its modules."""
    for path in sorted(glob.glob("/boot/vmlinuz-*"), reverse=True):
        release = path.split("vmlinuz-", 1)[1]
        if os.path.isdir(f"/lib/modules/{release}"):
            return path, release
    return None


def module_closure(release: str, wanted: tuple[str, ...]) -> list[str]:
    """Module files (relative to /lib/modules/RELEASE) for ``wanted``, dependencies first."""
    base = Path("/lib/modules") / release
    deps: dict[str, list[str]] = {}
    for line in (base / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    by_name = {Path(m).name.split(".ko")[0].replace("-", "_"): m for m in deps}
    order: list[str] = []

    def visit(mod: str) -> None:
        if mod in order:
            return
        for dep in deps.get(mod, []):
            visit(dep)
        order.append(mod)
    for name in wanted:
        if name in by_name:  # absent: built into this kernel
            visit(by_name[name])
    return order


def build_initramfs(rootfs: Path, release: str, dest: Path) -> Path:
    """cpio(newc) of the rootfs (without the copy-up file) + /init + the virtio modules."""
    extra = dest.parent / "initramfs-extra"
    shutil.rmtree(extra, ignore_errors=True)
    (extra / "lib" / "fsb").mkdir(parents=True)
    names = []
    for mod in module_closure(release, MODULES):
        src = Path("/lib/modules") / release / mod
        data = src.read_bytes()
        if mod.endswith(".xz"):
            import lzma

            data = lzma.decompress(data)
        name = Path(mod).name.split(".ko")[0] + ".ko"
        (extra / "lib" / "fsb" / name).write_bytes(data)
        names.append(name)
    (extra / "lib" / "fsb" / "order").write_text("\n".join(names) + "\n")
    init = extra / "init"
    init.write_text(INIT)
    init.chmod(0o755)
    with open(dest, "wb") as out:
        for top, exclude in ((rootfs, "./data/lower.dat"), (extra, "")):
            files = subprocess.run(["find", "."], cwd=top, capture_output=True, text=True,
                                   check=True).stdout.splitlines()
            listing = "\n".join(f for f in files if f != exclude) + "\n"
            subprocess.run(["cpio", "--quiet", "-o", "-H", "newc"], cwd=top, input=listing,
                           stdout=out, text=True, check=True)
    shutil.rmtree(extra, ignore_errors=True)
    return dest


class VM(Platform):
    """A QEMU guest; software-emulated (TCG) unless KVM can run a stock kernel."""

    name = "vm"
    repeats_attr = "vm_repeats"

    def __init__(self) -> None:
        self.kvm = kvm_usable()
        self.label = "VM (QEMU/KVM)" if self.kvm else "VM (QEMU TCG, software-emulated)"
        self.tap_ready = False

    def missing(self) -> str | None:
        if shutil.which(QEMU) is None:
            return f"{QEMU} is not installed (Debian package qemu-system-x86)"
        if find_kernel() is None:
            return "no kernel in /boot with modules (Debian package linux-image-amd64)"
        if shutil.which("cpio") is None:
            return "cpio is not installed"
        return None

    def unsupported(self, case: Case) -> str | None:
        allowed = getattr(getattr(self, "env", None), "vm_cases", None)
        if allowed is not None and case.name not in allowed:
            return ("left out of the quick profile: every VM sample boots a guest "
                    "(15-25 s under TCG)")
        if case.name in ("copyup", "fio-root-randwrite"):
            return "the VM's root is an initramfs in guest RAM: no overlay, no O_DIRECT"
        if case.kind == "serve" and case.mode == "host":
            return "a VM has no host-network mode"
        return None

    def prepare(self, env: Env) -> None:
        super().prepare(env)
        kernel = find_kernel()
        assert kernel is not None
        self.kernel, self.release = kernel
        self.dir = env.work / "vm"
        self.dir.mkdir(exist_ok=True)
        self.initrd = build_initramfs(env.rootfs, self.release, self.dir / "initramfs.cpio")
        self.volume = self.dir / "volume.img"

    def versions(self) -> dict[str, str]:
        return {"qemu": tool_version([QEMU, "--version"]),
                "vm-kernel": getattr(self, "release", "?"),
                "vm-accel": "kvm" if self.kvm else "tcg (software emulation)"}

    def _volume(self) -> Path:
        if not self.volume.exists():
            with open(self.volume, "wb") as f:
                f.truncate(1 << 30)
            subprocess.run(["mkfs.ext4", "-q", "-F", str(self.volume)], check=True,
                           capture_output=True)
        return self.volume

    def _tap(self) -> None:
        if self.tap_ready:
            return
        subprocess.run(["ip", "link", "del", TAP], capture_output=True, check=False)
        for cmd in (["ip", "tuntap", "add", "dev", TAP, "mode", "tap"],
                    ["ip", "addr", "add", f"{TAP_HOST}/24", "dev", TAP],
                    ["ip", "link", "set", TAP, "up"]):
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise PlatformError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
        self.tap_ready = True

    def _qemu(self, argv: list[str], *, volume: bool, net: str, serve: bool,
              fwd: tuple[int, int] | None = None) -> tuple[subprocess.Popen[bytes], Path]:
        cmd = base64.b64encode(shlex.join(argv).encode()).decode()
        append = f"console=ttyS0 loglevel=1 panic=-1 rdinit=/init fsb.cmd={cmd}"
        args = [QEMU, "-machine", "q35", "-accel", "kvm" if self.kvm else "tcg",
                "-cpu", "host" if self.kvm else "max", "-smp", "1", "-m", MEMORY,
                "-kernel", self.kernel, "-initrd", str(self.initrd), "-display", "none",
                "-monitor", "none", "-no-reboot"]
        if volume:
            args += ["-drive", f"file={self._volume()},format=raw,if=virtio,cache=none,"
                     "aio=threads"]
        if net == "bridge":
            self._tap()
            args += ["-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no",
                     "-device", "virtio-net-pci,netdev=n0"]
            append += f" fsb.ip={TAP_GUEST}"
        elif net == "port" and fwd is not None:
            args += ["-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{fwd[0]}-:{fwd[1]}",
                     "-device", "virtio-net-pci,netdev=n0"]
            append += f" fsb.ip={SLIRP_GUEST}"
        else:
            args += ["-nic", "none"]
        if serve:
            append += " fsb.serve=1"
        log = self.dir / f"console-{uuid.uuid4().hex[:8]}.log"
        log.touch()  # read before QEMU opens it
        args += ["-serial", f"file:{log}", "-append", append]
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=open(log.with_suffix(".err"), "w"))  # noqa: SIM115
        return proc, log

    @staticmethod
    def _output(log: Path) -> str:
        text = log.read_text(errors="replace").replace("\r", "")
        return text.split("FSB-BEGIN\n", 1)[1] if "FSB-BEGIN\n" in text else text

    def _finish(self, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> str:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.wait()
            raise PlatformError(f"VM timed out after {timeout:.0f} s: "
                                f"{self._output(log)[-300:]!r}") from exc
        out = self._output(log)
        err = log.with_suffix(".err")
        for f in (log, err):
            f.unlink(missing_ok=True)
        marker = out.rfind("FSB-END rc=")
        if marker < 0:
            raise PlatformError(f"VM did not finish its command: {out[-400:]!r}")
        rc = out[marker:].split("=", 1)[1].split()[0]
        if rc != "0":
            body = out[:marker]
            raise PlatformError(f"VM command exited {rc}: {body[:300]!r} ... {body[-200:]!r}")
        return out[:marker]

    def run(self, argv: list[str], *, volume: Path | None, timeout: float) -> str:
        proc, log = self._qemu(argv, volume=volume is not None, net="none", serve=False)
        return self._finish(proc, log, timeout + BOOT_TIMEOUT)

    def _wait_ready(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            if log.exists() and "FSB-READY" in log.read_text(errors="replace"):
                return
            if proc.poll() is not None:
                raise PlatformError(f"VM exited early: {self._output(log)[-300:]!r}")
            time.sleep(0.2)
        proc.kill()
        proc.wait()
        raise PlatformError("VM did not become ready")

    def _stopper(self, proc: subprocess.Popen[bytes], log: Path) -> Callable[[], None]:
        def stop() -> None:
            proc.kill()
            proc.wait()
            for f in (log, log.with_suffix(".err")):
                f.unlink(missing_ok=True)
        return stop

    def serve(self, argv: list[str], mode: str, port: int) -> Served:
        host_port = free_port()
        proc, log = self._qemu(argv, volume=False, net=mode, serve=True,
                               fwd=(host_port, port))
        try:
            self._wait_ready(proc, log)
        except BaseException:
            self._stopper(proc, log)()
            raise
        if mode == "port":
            return Served("127.0.0.1", host_port, self._stopper(proc, log))
        return Served(TAP_GUEST, port, self._stopper(proc, log))

    def startup(self) -> float:
        started = time.perf_counter()
        proc, log = self._qemu(["true"], volume=False, net="none", serve=False)
        self._finish(proc, log, BOOT_TIMEOUT)
        return time.perf_counter() - started

    @contextlib.contextmanager
    def idle(self, n: int) -> Iterator[None]:
        stops = []
        try:
            for _ in range(n):
                proc, log = self._qemu(["sleep", "3600"], volume=False, net="none",
                                       serve=True)
                stops.append(self._stopper(proc, log))
                self._wait_ready(proc, log)
            yield
        finally:
            for stop in stops:
                stop()

    def close(self) -> None:
        if self.tap_ready:
            subprocess.run(["ip", "link", "del", TAP], capture_output=True, check=False)
            self.tap_ready = False
