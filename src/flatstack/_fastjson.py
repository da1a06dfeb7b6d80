"""JSON on the runtime's hot path, through CPython's C accelerator only.

``import json`` pulls in ``re`` and ``enum`` (about 10 ms on this machine),
which is most of a runtime invocation's budget.  The C scanner and encoder in
``_json`` need neither, so the runtime parses and writes JSON with them and
only falls back to the ``json`` package to build an error message.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_WHITESPACE = " \t\n\r"


class _ScanContext:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict[str, str] = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return float(name.replace("Infinity", "inf"))


_scan_once = _json.make_scanner(_ScanContext())


class JSONError(ValueError):
    """Invalid JSON; ``line`` and ``column`` locate the fault (1-based)."""

    def __init__(self, reason: str, doc: str, pos: int) -> None:
        line = doc.count("\n", 0, pos) + 1
        column = pos - doc.rfind("\n", 0, pos)
        super().__init__(f"{reason} at line {line} column {column}")
        self.reason = reason
        self.line = line
        self.column = column


def _skip(doc: str, pos: int) -> int:
    end = len(doc)
    while pos < end and doc[pos] in _WHITESPACE:
        pos += 1
    return pos


def loads(doc: str | bytes) -> Any:
    """Parse a complete JSON document."""
    if isinstance(doc, bytes | bytearray):
        doc = doc.decode("utf-8-sig" if doc[:3] == b"\xef\xbb\xbf" else "utf-8")
    start = _skip(doc, 0)
    try:
        value, end = _scan_once(doc, start)
    except StopIteration as stop:
        raise JSONError("expecting value", doc, stop.value) from None
    except ValueError as err:  # json.JSONDecodeError from the C scanner
        raise JSONError(getattr(err, "msg", str(err)).lower(), doc,
                        getattr(err, "pos", start)) from None
    finally:
        _ScanContext.memo.clear()
    end = _skip(doc, end)
    if end != len(doc):
        raise JSONError("extra data", doc, end)
    return value


_encoder = _json.make_encoder(
    None, None, _json.encode_basestring, None, ": ", ", ", False, False, False
)
_compact_encoder = _json.make_encoder(
    None, None, _json.encode_basestring, None, ":", ",", False, False, False
)


def dumps(value: Any, *, compact: bool = False, indent: int | None = None) -> str:
    """Serialise plain data (dict, list, str, int, float, bool, None); with ``indent``,
    as ``json.dumps(value, indent=indent, ensure_ascii=False)`` writes it."""
    if indent is not None:
        return _indented(value, indent, 0)
    return "".join((_compact_encoder if compact else _encoder)(value, 0))


def _indented(value: Any, indent: int, level: int) -> str:
    if isinstance(value, dict) and value:
        pad = " " * (indent * (level + 1))
        items = [f"{pad}{_encoder(str(k), 0)[0]}: {_indented(v, indent, level + 1)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * (indent * level) + "}"
    if isinstance(value, list | tuple) and value:
        pad = " " * (indent * (level + 1))
        items = [pad + _indented(v, indent, level + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + " " * (indent * level) + "]"
    return "".join(_encoder(value, 0))
