"""Image references: ``[registry[:port]/]repository[:tag][@sha256:digest]``.

Names follow docker's rules: a first component holding ``.`` or ``:`` or equal to
``localhost`` is a registry; otherwise the registry is ``docker.io`` and a
single-component repository lives under ``library/``. Without tag or digest the
tag is ``latest``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flatstack.image import ImageError

DEFAULT_REGISTRY = "docker.io"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
_REGISTRY_RE = re.compile(r"^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::\d+)?$")


@dataclass(frozen=True)
class Reference:
    """A parsed, normalized image reference."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        """The canonical form stored as the image's name."""
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def host(self) -> str:
        """The host[:port] to contact (docker.io's API lives elsewhere)."""
        return "registry-1.docker.io" if self.registry == DEFAULT_REGISTRY else self.registry

    @property
    def api_ref(self) -> str:
        """What goes after ``/manifests/`` when pulling: the digest wins over the tag."""
        return self.digest or self.tag or "latest"


def parse(text: str) -> Reference:
    """Parse and normalize ``text``; raise :class:`ImageError` naming what is wrong."""
    if not text or text != text.strip():
        raise ImageError(f"invalid reference {text!r}: empty or surrounded by spaces")
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise ImageError(f"invalid reference {text!r}: digest must be sha256:<64 hex>")
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG_RE.match(tag):
            raise ImageError(f"invalid reference {text!r}: bad tag {tag!r}")
    first, _, remainder = rest.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost"):
        if not _REGISTRY_RE.match(first):
            raise ImageError(f"invalid reference {text!r}: bad registry {first!r}")
        registry, repo = first, remainder
    else:
        registry, repo = DEFAULT_REGISTRY, rest
        if "/" not in repo:
            repo = f"library/{repo}"
    if not _REPO_RE.match(repo):
        raise ImageError(f"invalid reference {text!r}: repository must be lowercase "
                         "letters, digits and separators")
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry, repo, tag, digest)


def is_digest(text: str) -> bool:
    """Whether ``text`` is a well-formed sha256 digest (safe to use in a path)."""
    return bool(_DIGEST_RE.match(text))
