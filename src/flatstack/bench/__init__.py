"""``flatstack bench``: bare metal vs flatstack vs runc, crun, podman, gVisor and a VM.

Modules: :mod:`rootfs` (the same binaries for every platform), :mod:`workloads` (what
runs and how samples are parsed), :mod:`platforms` and :mod:`vm` (where it runs),
:mod:`runner` (interleaving, samples), :mod:`report` (JSON, Markdown, PNG), :mod:`cli`.
"""
