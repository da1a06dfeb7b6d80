#!/bin/sh
# Replace pip's flatrun console script with a launcher that starts a Python
# interpreter directly in isolated mode without site (-I -S): flatrun runs
# several times per container and site's work (.pth files, the editable
# finder) costs more than the runtime's own start path. flatrun needs only
# the standard library, so the launcher prefers the system's statically linked
# python3.11 (about 1.5 ms faster to start here than pyenv's shared-library
# build) and falls back to the venv's interpreter.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
py="$here/.venv/bin/python3"
for candidate in /usr/bin/python3.11 /usr/bin/python3; do
    if [ -x "$candidate" ] && "$candidate" -IS -c \
        'import sys, _json, _sha256, fcntl, marshal; assert sys.version_info >= (3, 11)' \
        2>/dev/null; then
        py=$candidate
        break
    fi
done
# The exec trampoline (src/flatstack/runtime/trampoline.py): a libc-free static binary.
tsrc="$here/src/flatstack/runtime/trampoline.c"
tbin="$here/src/flatstack/runtime/_trampoline"
if [ ! -x "$tbin" ] || [ "$tsrc" -nt "$tbin" ]; then
    gcc -Os -static -nostdlib -fno-stack-protector -fno-builtin \
        -fno-asynchronous-unwind-tables -fno-pie -no-pie -Wl,--build-id=none \
        -Wl,-z,noexecstack -s -o "$tbin.tmp.$$" "$tsrc"
    mv "$tbin.tmp.$$" "$tbin"
fi
# The runtime's system calls (src/flatstack/kernel/_sys.c): a C extension on the stable
# ABI, so the venv's interpreter and the system's python3.11 both load it.
ssrc="$here/src/flatstack/kernel/_sys.c"
sbin="$here/src/flatstack/kernel/_sys.abi3.so"
if [ ! -f "$sbin" ] || [ "$ssrc" -nt "$sbin" ]; then
    include=$("$here/.venv/bin/python3" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    gcc -shared -fPIC -O2 -Wall -Werror -Wno-unused-parameter -I"$include" \
        -o "$sbin.tmp.$$" "$ssrc"
    mv "$sbin.tmp.$$" "$sbin"
fi
out="$here/.venv/bin/flatrun"
tmp="$out.tmp.$$"
cat > "$tmp" <<PY
#!$py -IS
import sys
sys.path.insert(0, "$here/src")
from flatstack.runtime.cli import run
run()
PY
chmod 0755 "$tmp"
mv "$tmp" "$out"

# flatstack: the venv's interpreter (its compiled dependencies) in isolated mode without
# site (-I -S), with src/ and site-packages put on sys.path here instead of by site's
# .pth processing. The CLI's hot commands need only the standard library (see
# src/flatstack/cli/_fast.py); the rest (typer, the daemon's FastAPI) import from
# site-packages as usual.
venv_py="$here/.venv/bin/python3"
site_packages=$("$venv_py" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
out="$here/.venv/bin/flatstack"
tmp="$out.tmp.$$"
cat > "$tmp" <<PY
#!$venv_py -IS
import sys
sys.path.insert(0, "$here/src")
sys.path.append("$site_packages")
from flatstack.cli.main import main
sys.exit(main())
PY
chmod 0755 "$tmp"
mv "$tmp" "$out"
