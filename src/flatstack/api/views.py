"""JSON views of images, shared by the API and the CLI's direct (daemonless) mode."""

from __future__ import annotations

from typing import Any


def image_summary(image: Any) -> dict[str, Any]:
    """A row of ``image ls``."""
    return {"Name": image.name, "Digest": image.digest, "Id": image.config_digest,
            "Created": image.config.get("created", ""), "Size": image.size}


def image_detail(image: Any) -> dict[str, Any]:
    """``image inspect``: manifest, config and the summary."""
    return {"Name": image.name, "Digest": image.digest, "Id": image.config_digest,
            "Created": image.config.get("created"),
            "Architecture": image.config.get("architecture"), "Os": image.config.get("os"),
            "Size": image.size, "Config": image.config.get("config") or {},
            "RootFS": image.config.get("rootfs") or {}, "Manifest": image.manifest}
