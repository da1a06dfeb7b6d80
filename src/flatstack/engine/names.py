"""Container names: validation and generated ``adjective_noun`` names (as docker/podman)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Container

from flatstack.errors import ConfigError

NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")

_ADJECTIVES = (
    "agile", "bold", "brave", "bright", "calm", "clever", "cool", "crisp", "eager", "fancy",
    "fast", "fierce", "gentle", "happy", "jolly", "keen", "kind", "lucid", "merry", "nimble",
    "noble", "proud", "quick", "quiet", "rapid", "sharp", "shiny", "silent", "sleek", "smart",
    "solid", "steady", "sunny", "swift", "tidy", "vivid", "warm", "wise", "witty", "zen",
)
_NOUNS = (
    "albatross", "badger", "beaver", "bison", "cheetah", "condor", "crane", "dolphin", "eagle",
    "falcon", "ferret", "gecko", "heron", "ibex", "jaguar", "kestrel", "koala", "lemur", "lynx",
    "marmot", "narwhal", "ocelot", "otter", "panda", "pelican", "puffin", "quokka", "raven",
    "salmon", "seal", "sparrow", "stork", "tapir", "tiger", "toucan", "turtle", "walrus",
    "weasel", "wombat", "yak",
)


def validate(name: str) -> str:
    """A user-given container name, or ConfigError naming the field."""
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError("name", f"{name!r} is not a valid container name (letters, digits, "
                          "'_', '.', '-'; starts with a letter or digit; up to 128)")
    if len(name) == 64 and all(c in "0123456789abcdef" for c in name):
        raise ConfigError("name", f"{name!r} looks like a container id")
    return name


def validate_hostname(hostname: str) -> str:
    """A host name (RFC 1123 labels, at most 64 bytes: sethostname's limit)."""
    if not isinstance(hostname, str) or len(hostname) > 64 or not HOSTNAME.match(hostname):
        raise ConfigError("hostname", f"{hostname!r} is not a valid host name (letters, "
                          "digits, '-' and dots; at most 64 characters)")
    return hostname


def generate(taken: Container[str]) -> str:
    """A free ``adjective_noun`` name (a numeric suffix once the plain ones run out)."""
    for attempt in range(200):
        name = f"{secrets.choice(_ADJECTIVES)}_{secrets.choice(_NOUNS)}"
        if attempt >= 50:
            name += f"{secrets.randbelow(10_000)}"
        if name not in taken:
            return name
    raise ConfigError("name", "could not generate a free container name")
