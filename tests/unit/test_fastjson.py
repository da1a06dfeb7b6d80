"""The hot path's JSON (``flatstack._fastjson``) reads and writes what ``json`` does."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from flatstack import _fastjson

SAMPLES = [
    {"ociVersion": "1.2.0", "id": "c1", "pid": 42, "status": "running", "bundle": "/b",
     "annotations": {"x": "ü \"quoted\" \\ back"}, "created": "2026-12-01T00:00:00Z"},
    [1, [2, [3, []]], {}], {"a": {"b": {"c": [None, True, False, 1.5, -0.0]}}},
    [], {}, "text", 7, None,
]


@pytest.mark.parametrize("value", SAMPLES)
def test_round_trip_and_same_text_as_json(value: object) -> None:
    assert _fastjson.loads(_fastjson.dumps(value)) == value
    assert _fastjson.dumps(value, compact=True) == json.dumps(
        value, separators=(",", ":"), ensure_ascii=False)
    assert _fastjson.dumps(value, indent=2) == json.dumps(value, indent=2,
                                                          ensure_ascii=False)


def test_errors_name_line_and_column() -> None:
    with pytest.raises(_fastjson.JSONError) as err:
        _fastjson.loads('{\n  "a": 1,\n  "b": }')
    assert (err.value.line, err.value.column) == (3, 8)
    with pytest.raises(_fastjson.JSONError, match="extra data"):
        _fastjson.loads("{} []")


def test_importing_it_does_not_import_re() -> None:
    """The point of the module: ``json`` drags in ``re`` and ``enum`` (~10 ms)."""
    code = ("import sys; from flatstack import _fastjson; "
            "_fastjson.dumps({'a': [1]}, indent=2); _fastjson.loads('{}'); "
            "print(sorted(m for m in ('re', 'enum', 'json') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", f"import sys; sys.path[:0] = "
                          f"{sys.path!r}; {code}"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
