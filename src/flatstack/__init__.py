"""flatstack: containers straight on bare metal."""

__version__ = "0.1.0"
