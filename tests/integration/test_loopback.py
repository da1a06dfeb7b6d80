"""A new network namespace gets its loopback interface up (runc's and crun's behaviour)."""

from __future__ import annotations

from tests.conftest import Bundles, Flatrun


def test_loopback_is_up_and_carries_tcp(flatrun: Flatrun, make_bundle: Bundles) -> None:
    script = ("cat /sys/class/net/lo/operstate /sys/class/net/lo/flags;"
              " nc -l -p 8080 -e echo pong & sleep 0.2; nc 127.0.0.1 8080 </dev/null")
    result = flatrun("run", "--bundle", make_bundle(["sh", "-c", script]), flatrun.new_id())
    lines = result.stdout.split()
    assert int(lines[1], 16) & 0x1, "IFF_UP must be set on lo"
    assert "pong" in lines[2:], result.stdout + result.stderr
