"""A bridge network's host rules: outbound masquerade and FORWARD accept, once per network.

CNI's bridge ``ipMasq`` and the firewall plugin write a chain and several rules per
container on every ADD and remove them on every DEL: about 150 ms of iptables calls per
container start and removal on this machine. Like podman's netavark and Docker, flatstack
keeps them per network instead, in two chains named after the bridge:

- ``nat`` ``FS-MASQ-<bridge>`` (from ``POSTROUTING``): traffic from the subnet leaving by
  another interface is masqueraded (``ip_masq``);
- ``filter`` ``FS-FWD-<bridge>`` (from ``FORWARD``, first): traffic from the bridge, replies
  to it and connections DNAT'd to it (published ports) are accepted, so a host whose
  ``FORWARD`` policy is ``DROP`` still forwards for containers (``firewall``).

Installing re-declares both chains in one transaction (idempotent); they stay when the
daemon exits, with the containers still serving, and go with :func:`remove`.
"""

from __future__ import annotations

from flatstack.network import iptables

WHAT = "network rules"


def chains(bridge: str) -> tuple[str, str]:
    """The (nat, filter) chain names of a bridge network."""
    return f"FS-MASQ-{bridge}", f"FS-FWD-{bridge}"


def _hooks(bridge: str) -> list[tuple[str, list[str]]]:
    nat, fwd = chains(bridge)
    return [("nat", ["POSTROUTING", "-j", nat]), ("filter", ["FORWARD", "-j", fwd])]


def install(name: str, bridge: str, subnet: str, *, masquerade: bool = True,
            forward: bool = True) -> None:
    """Write the network's chains (re-declared, so repeated calls converge) and hook them."""
    nat, fwd = chains(bridge)
    comment = f'-m comment --comment "flatstack network {name}"'
    lines = ["*nat", f":{nat} - [0:0]"]
    if masquerade:
        lines.append(f"-A {nat} -s {subnet} ! -o {bridge} {comment} -j MASQUERADE")
    lines += ["COMMIT", "*filter", f":{fwd} - [0:0]"]
    if forward:
        lines += [f"-A {fwd} -o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED "
                  f"{comment} -j ACCEPT",
                  f"-A {fwd} -o {bridge} -m conntrack --ctstate DNAT {comment} -j ACCEPT",
                  f"-A {fwd} -i {bridge} {comment} -j ACCEPT"]
    lines.append("COMMIT")
    iptables.restore(lines, WHAT)
    for table, hook in _hooks(bridge):
        iptables.ensure_jump(table, hook, WHAT)


def remove(bridge: str) -> None:
    """Unhook and delete the network's chains; absent ones are fine."""
    nat, fwd = chains(bridge)
    for table, hook in _hooks(bridge):
        iptables.delete_jump(table, hook)
    iptables.drop_chains("nat", [nat])
    iptables.drop_chains("filter", [fwd])


def remove_bridge(bridge: str) -> None:
    """Remove a bridge network from the host: its rules and its bridge device."""
    import subprocess

    remove(bridge)
    subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
