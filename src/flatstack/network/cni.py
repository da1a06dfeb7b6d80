"""Invoke CNI plugins (spec 1.0): ADD/DEL/CHECK/VERSION on network configuration lists.

Each plugin is executed with the ``CNI_*`` environment and its configuration on
stdin.  Chained plugins see the previous result as ``prevResult``; runtime
capabilities (``portMappings``) are passed as ``runtimeConfig`` to plugins that
declare them.  The final ADD result and the configuration used are cached per
container/network/interface (like libcni) so DEL works after a daemon restart.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from flatstack._atomic import write_json
from flatstack.errors import FlatstackError

DEFAULT_CNI_PATH = ("/usr/lib/cni", "/opt/cni/bin")
PLUGIN_TIMEOUT = 60.0


class CNIError(FlatstackError):
    """A CNI plugin failed; carries the plugin, command and the spec's error code/msg."""

    def __init__(self, plugin: str, command: str, msg: str, code: int | None = None,
                 details: str = "") -> None:
        where = f"CNI {plugin} {command}"
        text = f"{where}: {msg}" + (f" ({details})" if details else "")
        if code is not None:
            text += f" [code {code}]"
        super().__init__(text)
        self.plugin = plugin
        self.command = command
        self.code = code
        self.msg = msg
        self.details = details


def find_plugin(plugin: str, cni_path: list[str] | tuple[str, ...]) -> str:
    """The executable for plugin type ``plugin`` on ``cni_path``."""
    if not plugin or "/" in plugin or plugin in (".", ".."):
        raise CNIError(str(plugin), "lookup", "invalid plugin type")
    for directory in cni_path:
        candidate = os.path.join(directory, plugin)
        if os.access(candidate, os.X_OK) and os.path.isfile(candidate):
            return candidate
    raise CNIError(plugin, "lookup", f"plugin not found in CNI_PATH {':'.join(cni_path)}")


def exec_plugin(plugin: str, command: str, conf: dict[str, Any], *, container_id: str = "",
                netns: str = "", ifname: str = "", args: str = "",
                cni_path: list[str] | tuple[str, ...] = DEFAULT_CNI_PATH) -> dict[str, Any]:
    """Run one plugin once; returns its parsed stdout ({} when empty)."""
    binary = find_plugin(plugin, cni_path)
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_ARGS": args,
        "CNI_PATH": ":".join(cni_path),
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    }
    try:
        proc = subprocess.run([binary], input=json.dumps(conf).encode(), env=env,
                              capture_output=True, timeout=PLUGIN_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise CNIError(plugin, command, f"timed out after {PLUGIN_TIMEOUT:.0f} s") from None
    out = proc.stdout.decode(errors="replace").strip()
    if proc.returncode != 0:
        try:
            err = json.loads(out)
        except ValueError:
            err = None
        if isinstance(err, dict) and "msg" in err:
            raise CNIError(plugin, command, str(err.get("msg")), err.get("code"),
                           str(err.get("details") or ""))
        stderr = proc.stderr.decode(errors="replace").strip()
        raise CNIError(plugin, command, out or stderr or f"exit status {proc.returncode}")
    if not out:
        return {}
    try:
        result = json.loads(out)
    except ValueError as exc:
        raise CNIError(plugin, command, f"unparsable result: {exc}") from None
    if not isinstance(result, dict):
        raise CNIError(plugin, command, "result is not a JSON object")
    return result


def plugin_conf(conflist: dict[str, Any], plugin: dict[str, Any],
                runtime_config: dict[str, Any], prev: dict[str, Any] | None) -> dict[str, Any]:
    """The stdin document for one plugin of a list (name/cniVersion/runtimeConfig/prevResult)."""
    conf = dict(plugin)
    conf["name"] = conflist["name"]
    conf["cniVersion"] = conflist.get("cniVersion", "1.0.0")
    caps = plugin.get("capabilities") or {}
    wanted = {k: v for k, v in runtime_config.items() if caps.get(k)}
    if wanted:
        conf["runtimeConfig"] = wanted
    if prev is not None:
        conf["prevResult"] = prev
    return conf


class CNI:
    """Runs network configuration lists and keeps libcni-style result caches."""

    def __init__(self, cache_dir: str, cni_path: list[str] | tuple[str, ...] = DEFAULT_CNI_PATH
                 ) -> None:
        self.cache_dir = cache_dir
        self.cni_path = tuple(cni_path)

    def _cache_path(self, network: str, container_id: str, ifname: str) -> str:
        return os.path.join(self.cache_dir, f"{network}-{container_id}-{ifname}.json")

    def cached(self, network: str, container_id: str, ifname: str) -> dict[str, Any] | None:
        """The cached {config, runtimeConfig, result, netns} of an attachment, if any."""
        try:
            with open(self._cache_path(network, container_id, ifname), encoding="utf-8") as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):
            return None

    def _save(self, network: str, container_id: str, ifname: str,
              entry: dict[str, Any]) -> None:
        os.makedirs(self.cache_dir, mode=0o700, exist_ok=True)
        path = self._cache_path(network, container_id, ifname)
        write_json(path, entry, mode=0o600)

    def add(self, conflist: dict[str, Any], container_id: str, netns: str, ifname: str = "eth0",
            runtime_config: dict[str, Any] | None = None) -> dict[str, Any]:
        """ADD every plugin in order; on failure, DEL what was set up and raise."""
        runtime_config = runtime_config or {}
        entry = {"config": conflist, "runtimeConfig": runtime_config, "netns": netns,
                 "result": None}
        # Cache the config before the first plugin runs: a crash mid-ADD can still be undone.
        self._save(conflist["name"], container_id, ifname, entry)
        prev: dict[str, Any] | None = None
        try:
            for plugin in conflist["plugins"]:
                conf = plugin_conf(conflist, plugin, runtime_config, prev)
                prev = exec_plugin(plugin.get("type", ""), "ADD", conf,
                                   container_id=container_id, netns=netns, ifname=ifname,
                                   cni_path=self.cni_path) or prev
        except BaseException:
            entry["result"] = prev
            self._save(conflist["name"], container_id, ifname, entry)
            try:
                self.delete(conflist["name"], container_id, ifname, netns)
            except CNIError:
                pass  # the ADD error is the one to report
            raise
        entry["result"] = prev
        self._save(conflist["name"], container_id, ifname, entry)
        return prev or {}

    def delete(self, network: str, container_id: str, ifname: str = "eth0", netns: str = "",
               conflist: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """DEL every plugin in reverse order with the cached result; idempotent. Returns
        the configuration list it ran (None when there was nothing to delete).

        Every plugin is run even when one fails; the first failure is raised
        afterwards, and the cache entry is kept then so that DEL can be retried.
        """
        entry = self.cached(network, container_id, ifname)
        if entry is None and conflist is None:
            return None  # never attached (or already deleted)
        if entry is not None:
            conflist = entry["config"]
            netns = netns or entry.get("netns", "")
        assert conflist is not None
        runtime_config = (entry or {}).get("runtimeConfig") or {}
        prev = (entry or {}).get("result")
        if netns and not os.path.exists(netns):
            netns = ""  # plugins still release IPs and host-side rules without it
        first: CNIError | None = None
        for plugin in reversed(conflist["plugins"]):
            conf = plugin_conf(conflist, plugin, runtime_config, prev)
            try:
                exec_plugin(plugin.get("type", ""), "DEL", conf, container_id=container_id,
                            netns=netns, ifname=ifname, cni_path=self.cni_path)
            except CNIError as exc:
                if exc.command != "lookup":  # a missing plugin set nothing up
                    first = first or exc
        if first is not None:
            raise first
        try:
            os.unlink(self._cache_path(network, container_id, ifname))
        except FileNotFoundError:
            pass
        return conflist

    def check(self, network: str, container_id: str, ifname: str = "eth0") -> None:
        """CHECK every plugin against the cached result; raises CNIError on a mismatch."""
        entry = self.cached(network, container_id, ifname)
        if entry is None or entry.get("result") is None:
            raise CNIError(network, "CHECK", f"no cached result for container {container_id}")
        conflist = entry["config"]
        for plugin in conflist["plugins"]:
            conf = plugin_conf(conflist, plugin, entry.get("runtimeConfig") or {},
                               entry["result"])
            exec_plugin(plugin.get("type", ""), "CHECK", conf, container_id=container_id,
                        netns=entry.get("netns", ""), ifname=ifname, cni_path=self.cni_path)

    def version(self, plugin: str) -> dict[str, Any]:
        """The plugin's VERSION answer (cniVersion and supportedVersions)."""
        return exec_plugin(plugin, "VERSION", {"cniVersion": "1.0.0"}, cni_path=self.cni_path)
