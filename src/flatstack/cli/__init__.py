"""The ``flatstack`` command line (typer + rich)."""
