"""OCI images: a content-addressable store, importers, a registry client, layer unpacking.

- :mod:`.reference` parses image references (``registry/repo:tag@digest``).
- :mod:`.store` keeps blobs and names in OCI image-layout form, verifying every digest.
- :mod:`.archive` imports OCI layouts, oci-archive and docker-archive tarballs.
- :mod:`.registry` pulls from registries speaking the OCI distribution API.
- :mod:`.unpack` turns layers into directories for overlayfs, safely.
"""

from __future__ import annotations

from flatstack.errors import FlatstackError


class ImageError(FlatstackError):
    """An image, reference, archive, registry or layer problem a user can act on."""
