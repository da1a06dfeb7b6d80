"""``flatstack bench``: registered by ``cli/main.py``; lives in :mod:`flatstack.bench.cli`."""

from flatstack.bench.cli import app

__all__ = ["app"]
