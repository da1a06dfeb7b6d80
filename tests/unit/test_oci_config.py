"""flatstack.oci.config: validation errors name the exact field; load_config's bundle handling."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flatstack.errors import ConfigError
from flatstack.oci.config import (
    CAPABILITIES,
    MOUNT_FLAGS,
    PROPAGATION_FLAGS,
    RECURSIVE_ATTRS,
    RLIMITS,
    load_config,
    validate_config,
)

DELETE = object()

BASE: dict[str, Any] = {
    "ociVersion": "1.2.0",
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "box",
    "process": {
        "terminal": False,
        "user": {"uid": 0, "gid": 0, "additionalGids": [1, 2]},
        "args": ["sh", "-c", "true"],
        "env": ["PATH=/bin", "EMPTY="],
        "cwd": "/",
        "capabilities": {"bounding": ["CAP_KILL", "CAP_CHOWN"], "effective": ["CAP_KILL"]},
        "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024},
                    {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}],
        "noNewPrivileges": True,
    },
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]},
    ],
    "hooks": {"prestart": [{"path": "/bin/true", "args": ["true"], "timeout": 5}]},
    "annotations": {"org.example": "1"},
    "linux": {
        "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"},
                       {"type": "ipc"}, {"type": "network"}],
        "resources": {"devices": [{"allow": False, "access": "rwm"}], "pids": {"limit": 10}},
        "maskedPaths": ["/proc/kcore"],
        "readonlyPaths": ["/proc/sys"],
    },
}

USERNS = [{"type": "user"}]
MAPS = [{"containerID": 0, "hostID": 100000, "size": 65536}]


def _walk(path: str) -> list[str | int]:
    keys: list[str | int] = []
    for part in path.split("."):
        name, _, rest = part.partition("[")
        if name:
            keys.append(name)
        for index in rest.rstrip("]").split("][") if rest else ():
            keys.append(int(index))
    return keys


def mutate(config: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Set (or delete) a value by dotted path with [i] indexes, making parents."""
    keys = _walk(path)
    node: Any = config
    for key in keys[:-1]:
        if isinstance(node, dict) and key not in node:
            node[key] = {}
        node = node[key]
    if value is DELETE:
        del node[keys[-1]]
    elif isinstance(node, list) and keys[-1] == len(node):
        node.append(value)
    else:
        node[keys[-1]] = value
    return config


def config_with(*changes: tuple[str, Any]) -> dict[str, Any]:
    config = copy.deepcopy(BASE)
    for path, value in changes:
        mutate(config, path, value)
    return config


def error_of(config: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    return info.value


# (changes, field, reason)
BAD: list[tuple[list[tuple[str, Any]], str, str]] = [
    # version and root
    ([("ociVersion", DELETE)], "ociVersion", "required"),
    ([("ociVersion", 1)], "ociVersion", "expected string, got integer"),
    ([("ociVersion", "2.0.0")], "ociVersion",
     'unsupported version "2.0.0": flatrun implements runtime-spec 1.x'),
    ([("ociVersion", "1.0")], "ociVersion", 'invalid version "1.0": expected MAJOR.MINOR.PATCH'),
    ([("ociVersion", "1.x.0-rc1")], "ociVersion",
     'invalid version "1.x.0-rc1": expected MAJOR.MINOR.PATCH'),
    ([("root", DELETE)], "root", "required"),
    ([("root", "rootfs")], "root", "expected object, got string"),
    ([("root.path", DELETE)], "root.path", "required"),
    ([("root.path", "")], "root.path", "must not be empty"),
    ([("root.path", 5)], "root.path", "expected string, got integer"),
    ([("root.readonly", "yes")], "root.readonly", "expected boolean, got string"),
    # mounts
    ([("mounts", {})], "mounts", "expected array, got object"),
    ([("mounts[1]", "tmpfs")], "mounts[1]", "expected object, got string"),
    ([("mounts[1].destination", DELETE)], "mounts[1].destination", "required"),
    ([("mounts[1].destination", "")], "mounts[1].destination", "must not be empty"),
    ([("mounts[1].type", 3)], "mounts[1].type", "expected string, got integer"),
    ([("mounts[1].source", ["x"])], "mounts[1].source", "expected string, got array"),
    ([("mounts[1].options", "ro")], "mounts[1].options", "expected array, got string"),
    ([("mounts[1].options[1]", None)], "mounts[1].options[1]", "expected string, got null"),
    ([("mounts[1].uidMappings", MAPS)], "mounts[1].gidMappings",
     "required when uidMappings is set"),
    ([("mounts[1].gidMappings", [{"containerID": 0, "hostID": 1, "size": 0}]),
      ("mounts[1].uidMappings", MAPS)], "mounts[1].gidMappings[0].size",
     "must be greater than zero"),
    # process
    ([("process", [])], "process", "expected object, got array"),
    ([("process.args", DELETE)], "process.args", "required"),
    ([("process.args", [])], "process.args", "must not be empty"),
    ([("process.args", [""])], "process.args[0]", "must not be empty"),
    ([("process.args", ["sh", 3])], "process.args[1]", "expected string, got integer"),
    ([("process.args", "sh")], "process.args", "expected array, got string"),
    ([("process.cwd", DELETE)], "process.cwd", "required"),
    ([("process.cwd", "tmp")], "process.cwd", "must be an absolute path"),
    ([("process.cwd", "")], "process.cwd", "must be an absolute path"),
    ([("process.env", ["A=1", "FOO"])], "process.env[1]", 'expected KEY=VALUE, got "FOO"'),
    ([("process.env", ["=x"])], "process.env[0]", "variable name must not be empty"),
    ([("process.env", ["A=\0"])], "process.env[0]", "must not contain a NUL byte"),
    ([("process.env", [1])], "process.env[0]", "expected string, got integer"),
    ([("process.terminal", "true")], "process.terminal", "expected boolean, got string"),
    ([("process.consoleSize", {"height": 10})], "process.consoleSize.width", "required"),
    ([("process.consoleSize", {"height": -1, "width": 2})], "process.consoleSize.height",
     "must not be negative, got -1"),
    ([("process.user", 0)], "process.user", "expected object, got integer"),
    ([("process.user.uid", -1)], "process.user.uid", "must not be negative, got -1"),
    ([("process.user.uid", "0")], "process.user.uid", "expected integer, got string"),
    ([("process.user.uid", 1.0)], "process.user.uid", "expected integer, got number"),
    ([("process.user.uid", True)], "process.user.uid", "expected integer, got boolean"),
    ([("process.user.gid", 2**32)], "process.user.gid", "must be at most 4294967294, got "
                                                        "4294967296"),
    ([("process.user.additionalGids", [1, "2"])], "process.user.additionalGids[1]",
     "expected integer, got string"),
    ([("process.user.umask", 0o1000)], "process.user.umask", "must be at most 511, got 512"),
    ([("process.capabilities.bounding[1]", "CAP_FOO")], "process.capabilities.bounding[1]",
     'unknown capability "CAP_FOO"'),
    ([("process.capabilities.ambient", ["cap_kill"])], "process.capabilities.ambient[0]",
     'unknown capability "cap_kill"'),
    ([("process.capabilities.effective", "CAP_KILL")], "process.capabilities.effective",
     "expected array, got string"),
    ([("process.capabilities", ["CAP_KILL"])], "process.capabilities",
     "expected object, got array"),
    ([("process.rlimits[0].type", "RLIMIT_FOO")], "process.rlimits[0].type",
     'unknown rlimit "RLIMIT_FOO"'),
    ([("process.rlimits[1].type", "RLIMIT_NOFILE")], "process.rlimits[1].type",
     'duplicate rlimit "RLIMIT_NOFILE"'),
    ([("process.rlimits[0].soft", 2048)], "process.rlimits[0].soft",
     "2048 exceeds the hard limit 1024"),
    ([("process.rlimits[1].hard", DELETE)], "process.rlimits[1].hard", "required"),
    ([("process.rlimits[1].type", DELETE)], "process.rlimits[1].type", "required"),
    ([("process.rlimits[0].hard", 2**64)], "process.rlimits[0].hard",
     f"must be at most {2**64 - 1}, got {2**64}"),
    ([("process.noNewPrivileges", 1)], "process.noNewPrivileges",
     "expected boolean, got integer"),
    ([("process.apparmorProfile", 1)], "process.apparmorProfile", "expected string, got integer"),
    ([("process.selinuxLabel", {})], "process.selinuxLabel", "expected string, got object"),
    ([("process.oomScoreAdj", 1001)], "process.oomScoreAdj",
     "must be between -1000 and 1000, got 1001"),
    ([("process.oomScoreAdj", -1001)], "process.oomScoreAdj",
     "must be between -1000 and 1000, got -1001"),
    ([("process.ioPriority", {"class": "IOPRIO_CLASS_NONE"})], "process.ioPriority.class",
     'unknown class "IOPRIO_CLASS_NONE"'),
    ([("process.ioPriority", {"priority": 1})], "process.ioPriority.class", "required"),
    ([("process.ioPriority", {"class": "IOPRIO_CLASS_BE", "priority": 8})],
     "process.ioPriority.priority", "must be at most 7, got 8"),
    ([("process.scheduler", {"nice": 1})], "process.scheduler.policy", "required"),
    ([("process.scheduler", {"policy": "SCHED_FOO"})], "process.scheduler.policy",
     'unknown policy "SCHED_FOO"'),
    ([("process.scheduler", {"policy": "SCHED_OTHER", "nice": 20})], "process.scheduler.nice",
     "must be between -20 and 19, got 20"),
    ([("process.scheduler", {"policy": "SCHED_OTHER", "priority": 5})],
     "process.scheduler.priority", "only allowed with SCHED_FIFO or SCHED_RR"),
    ([("process.scheduler", {"policy": "SCHED_FIFO", "priority": 100})],
     "process.scheduler.priority", "must be between 1 and 99, got 100"),
    ([("process.scheduler", {"policy": "SCHED_BATCH", "runtime": 10})],
     "process.scheduler.runtime", "only allowed with SCHED_DEADLINE"),
    ([("process.scheduler", {"policy": "SCHED_DEADLINE", "runtime": 10, "deadline": 5})],
     "process.scheduler.runtime", "10 exceeds deadline 5"),
    ([("process.scheduler", {"policy": "SCHED_DEADLINE", "runtime": 1, "deadline": 5,
                             "period": 4})], "process.scheduler.deadline",
     "5 exceeds period 4"),
    ([("process.scheduler", {"policy": "SCHED_RR", "priority": 1, "flags": ["SCHED_FLAG_X"]})],
     "process.scheduler.flags[0]", 'unknown flag "SCHED_FLAG_X"'),
    ([("process.execCPUAffinity", {"initial": "0-a"})], "process.execCPUAffinity.initial",
     'invalid cpu list "0-a": expected a list like "0-3,7"'),
    ([("process.execCPUAffinity", {"final": "3-1"})], "process.execCPUAffinity.final",
     'invalid cpu list "3-1": expected a list like "0-3,7"'),
    ([("process.execCPUAffinity", {"final": "1,,2"})], "process.execCPUAffinity.final",
     'invalid cpu list "1,,2": expected a list like "0-3,7"'),
    # hostname, hooks, annotations
    ([("linux.namespaces", [{"type": "mount"}])], "hostname",
     "requires a uts namespace in linux.namespaces"),
    ([("hostname", DELETE), ("domainname", "example.org"),
      ("linux.namespaces", [{"type": "mount"}])], "domainname",
     "requires a uts namespace in linux.namespaces"),
    ([("hostname", 5)], "hostname", "expected string, got integer"),
    ([("hooks.prestart[0].path", "true")], "hooks.prestart[0].path", "must be an absolute path"),
    ([("hooks.prestart[0].path", DELETE)], "hooks.prestart[0].path", "required"),
    ([("hooks.poststop", [{"path": "/x", "timeout": 0}])], "hooks.poststop[0].timeout",
     "must be greater than zero, got 0"),
    ([("hooks.createRuntime", {"path": "/x"})], "hooks.createRuntime",
     "expected array, got object"),
    ([("hooks.poststart", [{"path": "/x", "args": "x"}])], "hooks.poststart[0].args",
     "expected array, got string"),
    ([("hooks.startContainer", [{"path": "/x", "env": [1]}])], "hooks.startContainer[0].env[0]",
     "expected string, got integer"),
    ([("hooks", [])], "hooks", "expected object, got array"),
    ([("annotations.count", 1)], "annotations.count", "expected string, got integer"),
    ([("annotations", {"": "x"})], "annotations", "keys must not be empty"),
    # namespaces and id mappings
    ([("linux", [])], "linux", "expected object, got array"),
    ([("linux.namespaces[1].type", "foo")], "linux.namespaces[1].type",
     'unknown namespace type "foo"'),
    ([("linux.namespaces[4].type", "pid")], "linux.namespaces[4].type",
     'duplicate namespace type "pid"'),
    ([("linux.namespaces[0].path", "proc/1/ns/pid")], "linux.namespaces[0].path",
     "must be an absolute path"),
    ([("linux.namespaces[2]", {"path": "/proc/1/ns/uts"})], "linux.namespaces[2].type",
     "required"),
    ([("linux.namespaces", {"pid": {}})], "linux.namespaces", "expected array, got object"),
    ([("linux.uidMappings", MAPS), ("linux.gidMappings", MAPS)], "linux.uidMappings",
     "requires a user namespace in linux.namespaces"),
    ([("linux.namespaces[5]", {"type": "user"}), ("linux.gidMappings", MAPS)],
     "linux.uidMappings", "required when creating a user namespace"),
    ([("linux.namespaces[5]", {"type": "user"}), ("linux.uidMappings", MAPS)],
     "linux.gidMappings", "required when creating a user namespace"),
    ([("linux.namespaces[5]", {"type": "user"}), ("linux.gidMappings", MAPS),
      ("linux.uidMappings", [{"containerID": 0, "hostID": 1, "size": 0}])],
     "linux.uidMappings[0].size", "must be greater than zero"),
    ([("linux.namespaces[5]", {"type": "user"}), ("linux.gidMappings", MAPS),
      ("linux.uidMappings", [{"containerID": -1, "hostID": 1, "size": 1}])],
     "linux.uidMappings[0].containerID", "must not be negative, got -1"),
    ([("linux.namespaces[5]", {"type": "user"}), ("linux.gidMappings", MAPS),
      ("linux.uidMappings", [{"containerID": 0, "size": 1}])],
     "linux.uidMappings[0].hostID", "required"),
    ([("linux.namespaces[5]", {"type": "user"}), ("linux.gidMappings", MAPS),
      ("linux.uidMappings", [{"containerID": 0, "hostID": 2**32 - 1, "size": 2}])],
     "linux.uidMappings[0].size", "hostID 4294967295 + size 2 exceeds 4294967296"),
    ([("linux.namespaces[5]", {"type": "user"}), ("linux.uidMappings", MAPS),
      ("linux.gidMappings", [{"containerID": 0, "hostID": 1000, "size": 10},
                             {"containerID": 5, "hostID": 2000, "size": 10}])],
     "linux.gidMappings[1].containerID", "range overlaps linux.gidMappings[0]"),
    ([("linux.namespaces[5]", {"type": "user"}), ("linux.uidMappings", MAPS),
      ("linux.gidMappings", [{"containerID": 100, "hostID": 1005, "size": 10},
                             {"containerID": 0, "hostID": 1000, "size": 10}])],
     "linux.gidMappings[1].hostID", "range overlaps linux.gidMappings[0]"),
    ([("linux.namespaces[5]", {"type": "user"}), ("linux.uidMappings", MAPS),
      ("linux.gidMappings", [{"containerID": i, "hostID": i, "size": 1} for i in range(341)])],
     "linux.gidMappings", "at most 340 mappings are allowed, got 341"),
    ([("linux.namespaces[5]", {"type": "user"}), ("linux.uidMappings", MAPS),
      ("linux.gidMappings", MAPS), ("process.user.uid", 70000)],
     "process.user.uid", "70000 is not mapped by linux.uidMappings"),
    ([("linux.namespaces[5]", {"type": "user"}), ("linux.uidMappings", MAPS),
      ("linux.gidMappings", MAPS), ("process.user.additionalGids", [5, 65536])],
     "process.user.additionalGids[1]", "65536 is not mapped by linux.gidMappings"),
    # time namespace
    ([("linux.timeOffsets", {"monotonic": {"secs": 1}})], "linux.timeOffsets",
     "requires a time namespace in linux.namespaces"),
    ([("linux.namespaces[5]", {"type": "time"}), ("linux.timeOffsets", {"realtime": {}})],
     "linux.timeOffsets.realtime", 'unknown clock "realtime"'),
    ([("linux.namespaces[5]", {"type": "time"}),
      ("linux.timeOffsets", {"boottime": {"nanosecs": 10**9}})],
     "linux.timeOffsets.boottime.nanosecs", "must be at most 999999999, got 1000000000"),
    ([("linux.namespaces[5]", {"type": "time", "path": "/proc/1/ns/time"}),
      ("linux.timeOffsets", {"boottime": {"secs": 1}})], "linux.timeOffsets",
     "cannot be set when joining an existing time namespace"),
    # devices
    ([("linux.devices", [{"type": "x", "path": "/dev/x"}])], "linux.devices[0].type",
     'unknown device type "x"'),
    ([("linux.devices", [{"path": "/dev/x"}])], "linux.devices[0].type", "required"),
    ([("linux.devices", [{"type": "c", "path": "dev/x", "major": 1, "minor": 3}])],
     "linux.devices[0].path", "must be an absolute path"),
    ([("linux.devices", [{"type": "c", "major": 1, "minor": 3}])], "linux.devices[0].path",
     "required"),
    ([("linux.devices", [{"type": "p", "path": "/dev/f"}, {"type": "b", "path": "/dev/sda",
                                                          "major": 8}])],
     "linux.devices[1].minor", "required"),
    ([("linux.devices", [{"type": "u", "path": "/dev/x", "major": 1, "minor": 3,
                          "fileMode": -1}])], "linux.devices[0].fileMode",
     "must not be negative, got -1"),
    ([("linux.devices", [{"type": "c", "path": "/dev/x", "major": "1", "minor": 3}])],
     "linux.devices[0].major", "expected integer, got string"),
    # resources
    ([("linux.resources.memory", {"limit": "1g"})], "linux.resources.memory.limit",
     "expected integer, got string"),
    ([("linux.resources.memory", {"swappiness": 101})], "linux.resources.memory.swappiness",
     "must be at most 100, got 101"),
    ([("linux.resources.memory", {"disableOOMKiller": "no"})],
     "linux.resources.memory.disableOOMKiller", "expected boolean, got string"),
    ([("linux.resources.cpu", {"shares": -1})], "linux.resources.cpu.shares",
     "must not be negative, got -1"),
    ([("linux.resources.cpu", {"cpus": 1})], "linux.resources.cpu.cpus",
     "expected string, got integer"),
    ([("linux.resources.pids", {"limit": "10"})], "linux.resources.pids.limit",
     "expected integer, got string"),
    ([("linux.resources.devices[0].allow", DELETE)], "linux.resources.devices[0].allow",
     "required"),
    ([("linux.resources.devices[1]", {"allow": True, "type": "x"})],
     "linux.resources.devices[1].type", 'unknown device type "x"'),
    ([("linux.resources.devices[0].access", "rwx")], "linux.resources.devices[0].access",
     'expected a combination of "r", "w" and "m", got "rwx"'),
    ([("linux.resources.devices[1]", {"allow": True, "type": "c", "major": "1"})],
     "linux.resources.devices[1].major", "expected integer, got string"),
    ([("linux.resources.hugepageLimits", [{"limit": 1}])],
     "linux.resources.hugepageLimits[0].pageSize", "required"),
    ([("linux.resources.hugepageLimits", [{"pageSize": "2MB", "limit": -1}])],
     "linux.resources.hugepageLimits[0].limit", "must not be negative, got -1"),
    ([("linux.resources.unified", {"../release_agent": "x"})],
     "linux.resources.unified.../release_agent", "must be a cgroup file name (no slashes)"),
    ([("linux.resources.unified", {"memory.high": 5})],
     "linux.resources.unified.memory.high", "expected string, got integer"),
    ([("linux.resources.blockIO", {"weight": 70000})], "linux.resources.blockIO.weight",
     "must be at most 65535, got 70000"),
    ([("linux.resources.blockIO", {"throttleReadBpsDevice": [{"major": 8, "minor": 0}]})],
     "linux.resources.blockIO.throttleReadBpsDevice[0].rate", "required"),
    ([("linux.resources.blockIO", {"weightDevice": [{"major": 8, "weight": 10}]})],
     "linux.resources.blockIO.weightDevice[0].minor", "required"),
    ([("linux.resources.network", {"priorities": [{"priority": 1}]})],
     "linux.resources.network.priorities[0].name", "required"),
    ([("linux.resources.rdma", {"mlx5_0": {"hcaHandles": -1}})],
     "linux.resources.rdma.mlx5_0.hcaHandles", "must not be negative, got -1"),
    ([("linux.resources", [])], "linux.resources", "expected object, got array"),
    ([("linux.intelRdt", {"closID": "x"})], "linux.intelRdt",
     "intel rdt is not supported by flatrun"),
    ([("linux.cgroupsPath", 1)], "linux.cgroupsPath", "expected string, got integer"),
    # sysctl
    ([("linux.sysctl", {"net.core.somaxconn": 1024})], "linux.sysctl.net.core.somaxconn",
     "expected string, got integer"),
    ([("linux.sysctl", {"kernel.hostname": "x"})], "linux.sysctl.kernel.hostname",
     'conflicts with the "hostname" field'),
    ([("linux.sysctl", {"vm.swappiness": "10"})], "linux.sysctl.vm.swappiness",
     "not isolated by a namespace of the container"),
    ([("linux.sysctl", {"kernel.panic": "1"})], "linux.sysctl.kernel.panic",
     "not isolated by a namespace of the container"),
    ([("linux.sysctl", {"net/../../x": "1"})], "linux.sysctl.net/../../x",
     "invalid sysctl name"),
    ([("linux.sysctl", {"net.ipv4..x": "1"})], "linux.sysctl.net.ipv4..x",
     "invalid sysctl name"),
    ([("linux.namespaces", [{"type": "mount"}, {"type": "uts"}]),
      ("linux.sysctl", {"net.ipv4.ip_forward": "1"})], "linux.sysctl.net.ipv4.ip_forward",
     "requires a network namespace in linux.namespaces"),
    ([("linux.namespaces", [{"type": "mount"}, {"type": "uts"}]),
      ("linux.sysctl", {"kernel.shmmax": "1"})], "linux.sysctl.kernel.shmmax",
     "requires an ipc namespace in linux.namespaces"),
    ([("linux.namespaces[4].path", "/proc/self/ns/net"),
      ("linux.sysctl", {"net.ipv4.ip_forward": "1"})], "linux.sysctl.net.ipv4.ip_forward",
     "not allowed in the host network namespace"),
    ([("linux.namespaces[4].path", "/nonexistent/net"),
      ("linux.sysctl", {"net.ipv4.ip_forward": "1"})], "linux.namespaces[4].path",
     "/nonexistent/net: no such file or directory"),
    # seccomp, propagation, paths, personality, labels
    ([("linux.seccomp", {"syscalls": []})], "linux.seccomp.defaultAction", "required"),
    ([("linux.seccomp", "default")], "linux.seccomp", "expected object, got string"),
    ([("linux.seccomp", {"defaultAction": "SCMP_ACT_ERRNO",
                         "syscalls": [{"names": [], "action": "SCMP_ACT_ALLOW"}]})],
     "linux.seccomp.syscalls[0].names", "must not be empty"),
    ([("linux.seccomp", {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]})],
     "linux.seccomp.syscalls[1].args[0].index", "must be at most 5, got 6"),
    ([("linux.seccomp", {"defaultAction": "SCMP_ACT_ERRNO", "architectures": "x86"})],
     "linux.seccomp.architectures", "expected array, got string"),
    ([("linux.rootfsPropagation", "bogus")], "linux.rootfsPropagation",
     'unknown propagation "bogus"'),
    ([("linux.maskedPaths[1]", "proc/kcore")], "linux.maskedPaths[1]",
     "must be an absolute path"),
    ([("linux.readonlyPaths[0]", 5)], "linux.readonlyPaths[0]", "expected string, got integer"),
    ([("linux.personality", {"domain": "BSD"})], "linux.personality.domain",
     'unknown domain "BSD"'),
    ([("linux.personality", {"domain": "LINUX", "flags": "x"})], "linux.personality.flags",
     "expected array, got string"),
    ([("linux.mountLabel", 1)], "linux.mountLabel", "expected string, got integer"),
]


@pytest.mark.parametrize(("changes", "field", "reason"), BAD,
                         ids=[f"{i}:{case[1]}" for i, case in enumerate(BAD)])
def test_invalid_config_names_the_field(changes: list[tuple[str, Any]], field: str,
                                        reason: str) -> None:
    err = error_of(config_with(*changes))
    assert (err.field, err.reason) == (field, reason)
    assert str(err) == f"{field}: {reason}"


def test_reasons_are_lowercase_without_trailing_period() -> None:
    for _, _, reason in BAD:
        assert not reason.endswith(".")
        assert reason[0].islower() or not reason[0].isalpha() or reason.startswith(("'", '"'))


GOOD: list[list[tuple[str, Any]]] = [
    [],
    [("ociVersion", "1.0.2-dev")],
    [("ociVersion", "1.3.0+build.5")],
    [("mounts[1].destination", "tmp")],  # relative: deprecated, still accepted
    [("unknownTopLevel", {"x": 1}), ("process.unknown", 1), ("linux.netDevices", {})],
    [("process.user", DELETE), ("process.env", DELETE), ("linux.resources", None)],
    [("process.capabilities.ambient", ["CAP_KILL"])],  # not in inheritable: runc's own spec
    [("linux.namespaces[5]", {"type": "user", "path": "/proc/1/ns/user"})],
    [("linux.namespaces[5]", {"type": "user"}), ("linux.uidMappings", MAPS),
     ("linux.gidMappings", [{"containerID": 0, "hostID": 1000, "size": 10},
                            {"containerID": 10, "hostID": 1010, "size": 65526}])],
    [("linux.namespaces[5]", {"type": "time"}),
     ("linux.timeOffsets", {"monotonic": {"secs": -5, "nanosecs": 10}, "boottime": {}})],
    [("linux.devices", [{"type": "p", "path": "/dev/fifo"},
                        {"type": "c", "path": "/dev/fuse", "major": 10, "minor": 229,
                         "fileMode": 8630, "uid": 0, "gid": 0}])],
    [("linux.sysctl", {"net.ipv4.ip_forward": "1", "net/ipv4/conf/eth0.100/forwarding": "1",
                       "net.ipv4.conf.eth0/100.forwarding": "0", "kernel.domainname": "x",
                       "fs.mqueue.msg_max": "10", "kernel.shm_rmid_forced": "1"})],
    [("linux.resources", {
        "memory": {"limit": -1, "swap": 1 << 40, "swappiness": 0, "disableOOMKiller": False},
        "cpu": {"shares": 1024, "quota": -1, "period": 100000, "cpus": "0-1", "idle": 1},
        "pids": {"limit": -1},
        "devices": [{"allow": False, "access": "rwm"},
                    {"allow": True, "type": "c", "major": 1, "minor": None, "access": "rw"}],
        "blockIO": {"weight": 500, "weightDevice": [{"major": 8, "minor": 0, "weight": 10}],
                    "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
        "network": {"classID": 1, "priorities": [{"name": "eth0", "priority": 5}]},
        "rdma": {"mlx5_0": {"hcaHandles": 3}},
        "unified": {"memory.high": "max", "cgroup.freeze": "0"},
    })],
    [("process.scheduler", {"policy": "SCHED_DEADLINE", "runtime": 10, "deadline": 20,
                            "period": 30, "flags": ["SCHED_FLAG_RESET_ON_FORK"]}),
     ("process.ioPriority", {"class": "IOPRIO_CLASS_IDLE"}),
     ("process.execCPUAffinity", {"initial": "0", "final": "0-1,3"}),
     ("process.consoleSize", {"height": 25, "width": 80}), ("process.oomScoreAdj", -1000)],
    [("linux.rootfsPropagation", "rslave"), ("linux.rootfsPropagation", ""),
     ("linux.personality", {"domain": "LINUX32", "flags": []})],
    [("hooks.unknownKind", 5), ("hooks.createContainer", [])],
]


@pytest.mark.parametrize("changes", GOOD, ids=[str(i) for i in range(len(GOOD))])
def test_valid_config_passes(changes: list[tuple[str, Any]]) -> None:
    validate_config(config_with(*changes))


def test_process_is_optional_for_validate() -> None:
    """exec and update validate fragments: no process, or a process alone."""
    validate_config({"ociVersion": "1.2.0", "root": {"path": "/"},
                     "linux": {"resources": {"pids": {"limit": 5}}}})
    validate_config({"ociVersion": "1.2.0", "root": {"path": "/"},
                     "process": {"args": ["true"], "cwd": "/"}})


def test_validate_rejects_non_object() -> None:
    with pytest.raises(ConfigError) as info:
        validate_config([])  # type: ignore[arg-type]
    assert (info.value.field, info.value.reason) == ("config.json", "expected object, got array")


@pytest.fixture(scope="module")
def runc_specs(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    runc = shutil.which("runc")
    assert runc is not None, "runc is installed by make install"
    specs = []
    for flags in ([], ["--rootless"]):
        work = tmp_path_factory.mktemp("runc-spec")
        subprocess.run([runc, "spec", *flags], cwd=work, check=True, capture_output=True)
        specs.append(json.loads((work / "config.json").read_text()))
    return specs


def test_runc_spec_is_valid(runc_specs: list[dict[str, Any]]) -> None:
    for spec in runc_specs:
        validate_config(spec)


def test_validate_does_not_modify(runc_specs: list[dict[str, Any]]) -> None:
    spec = copy.deepcopy(runc_specs[0])
    validate_config(spec)
    assert spec == runc_specs[0]


# -- load_config ---------------------------------------------------------------
def _bundle(tmp_path: Path, config: dict[str, Any] | str, rootfs: bool = True) -> str:
    if rootfs:
        (tmp_path / "rootfs").mkdir()
    text = config if isinstance(config, str) else json.dumps(config, indent=2)
    (tmp_path / "config.json").write_text(text)
    return str(tmp_path)


def _load_error(bundle: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(bundle)
    return info.value


def test_load_config_resolves_root_and_destinations(tmp_path: Path) -> None:
    config = config_with(("mounts[1].destination", "tmp"))
    bundle = _bundle(tmp_path, config)
    loaded = load_config(bundle)
    assert loaded["root"]["path"] == os.path.realpath(tmp_path / "rootfs")
    assert loaded["mounts"][1]["destination"] == "/tmp"
    assert loaded["mounts"][0]["destination"] == "/proc"


def test_load_config_relative_bundle_and_absolute_root(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    (tmp_path / "b").mkdir()
    _bundle(tmp_path / "b", config_with(("root.path", str(other))), rootfs=False)
    monkeypatch.chdir(tmp_path)
    assert load_config("b")["root"]["path"] == str(other.resolve())


def test_load_config_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    err = _load_error(str(missing))
    assert (err.field, err.reason) == ("", f"bundle {missing} does not exist")

    empty = tmp_path / "empty"
    empty.mkdir()
    err = _load_error(str(empty))
    assert (err.field, err.reason) == ("", f"config.json not found in bundle {empty}")

    def fresh(name: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        return path

    err = _load_error(_bundle(fresh("syntax"), '{\n  "ociVersion": "1.2.0",,\n}'))
    assert err.field == "config.json"
    assert err.reason.startswith("invalid JSON at line 2 column 25: ")

    err = _load_error(_bundle(fresh("array"), "[]"))
    assert (err.field, err.reason) == ("config.json", "expected object, got array")

    bad_utf8 = fresh("utf8")
    (bad_utf8 / "config.json").write_bytes(b'{"a": "\xff"}')
    err = _load_error(str(bad_utf8))
    assert (err.field, err.reason) == ("config.json", "invalid UTF-8 at byte 7")

    err = _load_error(_bundle(fresh("noproc"), config_with(("process", DELETE))))
    assert (err.field, err.reason) == ("process", "required")

    err = _load_error(_bundle(fresh("invalid"), config_with(("process.cwd", "x"))))
    assert (err.field, err.reason) == ("process.cwd", "must be an absolute path")

    noroot = fresh("noroot")
    err = _load_error(_bundle(noroot, BASE, rootfs=False))
    assert (err.field, err.reason) == ("root.path", f"{noroot.resolve()}/rootfs does not exist")

    fileroot = fresh("fileroot")
    (fileroot / "rootfs").write_text("")
    err = _load_error(_bundle(fileroot, BASE, rootfs=False))
    assert (err.field, err.reason) == ("root.path",
                                       f"{fileroot.resolve()}/rootfs is not a directory")


# -- tables ----------------------------------------------------------------------
def test_capability_and_rlimit_tables() -> None:
    assert sorted(CAPABILITIES.values()) == list(range(41))
    assert CAPABILITIES["CAP_CHOWN"] == 0
    assert CAPABILITIES["CAP_SYS_ADMIN"] == 21
    assert CAPABILITIES["CAP_CHECKPOINT_RESTORE"] == 40
    assert sorted(RLIMITS.values()) == list(range(16))
    assert RLIMITS["RLIMIT_NOFILE"] == 7
    assert RLIMITS["RLIMIT_RTTIME"] == 15
    from flatstack.kernel import caps

    assert caps.CAPABILITIES == CAPABILITIES


def test_mount_tables() -> None:
    from flatstack.kernel import mount as m

    runc = {"ro", "rw", "suid", "nosuid", "dev", "nodev", "exec", "noexec", "sync", "async",
            "dirsync", "remount", "mand", "nomand", "atime", "noatime", "diratime",
            "nodiratime", "bind", "rbind", "relatime", "norelatime", "strictatime",
            "nostrictatime", "lazytime", "nolazytime", "nosymfollow", "symfollow", "silent",
            "loud"}
    assert runc <= set(MOUNT_FLAGS)
    assert MOUNT_FLAGS["ro"] == (False, m.MS_RDONLY)
    assert MOUNT_FLAGS["rw"] == (True, m.MS_RDONLY)
    assert MOUNT_FLAGS["rbind"] == (False, m.MS_BIND | m.MS_REC)
    assert MOUNT_FLAGS["atime"] == (True, m.MS_NOATIME)
    assert MOUNT_FLAGS["defaults"] == (False, 0)
    assert PROPAGATION_FLAGS == {
        "private": m.MS_PRIVATE, "rprivate": m.MS_PRIVATE | m.MS_REC,
        "shared": m.MS_SHARED, "rshared": m.MS_SHARED | m.MS_REC,
        "slave": m.MS_SLAVE, "rslave": m.MS_SLAVE | m.MS_REC,
        "unbindable": m.MS_UNBINDABLE, "runbindable": m.MS_UNBINDABLE | m.MS_REC,
    }
    assert RECURSIVE_ATTRS["rro"] == (False, 0x1)
    assert RECURSIVE_ATTRS["rrw"] == (True, 0x1)
    assert RECURSIVE_ATTRS["rnosymfollow"] == (False, 0x200000)
    assert RECURSIVE_ATTRS["ridmap"] == RECURSIVE_ATTRS["idmap"] == (False, 0x100000)
    assert not set(RECURSIVE_ATTRS) & set(MOUNT_FLAGS)


def test_import_is_light() -> None:
    """The create hot path: no ctypes, json, re or typing behind flatstack.oci.config."""
    code = ("import sys; import flatstack.oci.config as c; "
            "print(sorted(m for m in ('ctypes', 'json', 're', 'typing', 'flatstack.kernel.mount')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
