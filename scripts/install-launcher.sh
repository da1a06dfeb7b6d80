#!/bin/sh
# Replace pip's flatrun console script with a launcher that starts the venv's
# interpreter directly in isolated mode without site (-I -S): flatrun runs
# several times per container and site's work (.pth files, the editable
# finder) costs more than the runtime's own start path.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
py="$here/.venv/bin/python3"
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
