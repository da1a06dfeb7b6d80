"""One module per flatrun command, imported only when that command runs."""
