"""The few path helpers the runtime's hot verbs need, over ``posix`` alone.

``import os`` costs about 1.4 ms here (it builds the ``collections.abc`` classes
for ``os.environ``), a tenth of a ``flatrun start``; ``os.path`` imports ``os``.
``start``, ``delete``, ``kill`` and ``state`` use ``posix`` and these instead.
"""

from __future__ import annotations

import posix

_S_IFMT, _S_IFDIR = 0o170000, 0o040000


def exists(path: str) -> bool:
    """``os.path.exists``: whether ``path`` names anything (links followed)."""
    try:
        posix.stat(path)
    except (OSError, ValueError):
        return False
    return True


def is_dir(path: str) -> bool:
    """``os.path.isdir``."""
    try:
        return posix.stat(path).st_mode & _S_IFMT == _S_IFDIR
    except (OSError, ValueError):
        return False


def abspath(path: str) -> str:
    """``os.path.abspath``; a clean absolute path is returned as it is."""
    if (path.startswith("/") and not path.startswith("//") and not path.endswith("/")
            and "/./" not in path and "/../" not in path and "//" not in path
            and not path.endswith(("/.", "/.."))):
        return path
    if path == "/":
        return path
    import os

    return os.path.abspath(path)


def dirname(path: str) -> str:
    """``os.path.dirname``."""
    head = path[:path.rfind("/") + 1]
    if head and head != "/" * len(head):
        head = head.rstrip("/")
    return head


def unescape_mountinfo(field: str) -> str:
    """A /proc/*/mountinfo path field: space, tab, newline and backslash come as ``\\ooo``."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        code = field[i + 1:i + 4]
        if field[i] == "\\" and len(code) == 3 and all(c in "01234567" for c in code):
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)
