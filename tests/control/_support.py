"""Helpers for the control-plane tests: the example files and App documents."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

DATA = Path(__file__).parent / "data"


def text(name: str) -> str:
    return (DATA / name).read_text()


def app_doc(name: str = "app.yaml") -> dict[str, Any]:
    """The App document of ``data/<name>`` as a fresh dictionary."""
    return copy.deepcopy(yaml.safe_load(text(name)))


def minimal(**spec: Any) -> dict[str, Any]:
    """A minimal valid App document with ``spec`` fields added."""
    return {"apiVersion": "flatstack.io/v1", "kind": "App", "metadata": {"name": "web"},
            "spec": {"image": "busybox:latest", **spec}}
