"""Hostile input for the item topic, by kind: what an attacker or a broken producer sends (values
nested 10,000 deep, lone surrogate escapes, 800 KB items, NaN, a BOM, wrong types, ...) and what
must become of each: decided, or dead-lettered with a named reason. Shared by the hostile-stream
integration test and `borderline bench chaos`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["DECIDED", "KINDS", "hostile_messages"]

DECIDED = "decided"


def _item(i: int, text: str, **extra: Any) -> bytes:
    return json.dumps({"item_id": f"h{i}", "text": text, **extra}).encode()


# kind -> (value for message i, what must happen to it: DECIDED or a dead-letter reason);
# `text_too_large` assumes BORDERLINE_WORKER__MAX_TEXT_BYTES=4000 (under the default it is decided)
KINDS: dict[str, tuple[Callable[[int], bytes], str]] = {
    "not_json": (lambda i: b"{not json %d" % i, "invalid_json"),
    "bom": (lambda i: b"\xef\xbb\xbf" + _item(i, "x"), "invalid_json"),
    "bad_utf8": (lambda i: b'{"item_id": "h%d", "text": "\xff\xfe"}' % i, "invalid_utf8"),
    "missing_text": (lambda i: json.dumps({"item_id": f"h{i}"}).encode(), "invalid_fields"),
    "empty_text": (lambda i: _item(i, "   "), "empty_text"),
    "ideographic_space": (lambda i: _item(i, "\u3000\u3000"), "empty_text"),
    "text_too_large": (lambda i: _item(i, "a" * 5000), "text_too_large"),
    "future_schema": (lambda i: _item(i, "x", schema_version=9), "unknown_schema_version"),
    "schema_true": (lambda i: _item(i, "x", schema_version=True), "unknown_schema_version"),
    "deep_array": (lambda i: b"[" * 10_000 + b"]" * 10_000 + b" " * i, "too_deeply_nested"),
    "deep_metadata": (
        lambda i: (
            b'{"item_id": "h%d", "text": "x", "metadata": ' % i
            + b'{"k": ' * 10_000
            + b'"v"'
            + b"}" * 10_001
        ),
        "too_deeply_nested",
    ),
    "lone_surrogate": (
        lambda i: b'{"item_id": "h%d", "text": "buy \\ud800 now"}' % i,
        "invalid_unicode",
    ),
    "surrogate_id": (lambda i: b'{"item_id": "\\udfff%d", "text": "x"}' % i, "invalid_unicode"),
    "surrogate_metadata": (
        lambda i: b'{"item_id": "h%d", "text": "x", "metadata": {"\\ud800": "v"}}' % i,
        "invalid_unicode",
    ),
    "huge": (lambda i: _item(i, "x" * 800_000), "value_too_large"),
    "empty_value": (lambda i: b"", "empty_value"),
    "nan": (lambda i: b'{"item_id": "h%d", "text": "x", "produced_at": NaN}' % i, "invalid_json"),
    "infinity": (
        lambda i: b'{"item_id": "h%d", "text": "x", "produced_at": -Infinity}' % i,
        "invalid_json",
    ),
    "overflow": (
        lambda i: b'{"item_id": "h%d", "text": "x", "produced_at": 1e400}' % i,
        "invalid_fields",
    ),
    "negative_time": (lambda i: _item(i, "x", produced_at=-5), "invalid_fields"),
    "milliseconds": (lambda i: _item(i, "x", produced_at=1_700_000_000_000), "invalid_fields"),
    "array": (lambda i: json.dumps([i, "x"]).encode(), "invalid_json"),
    "string": (lambda i: json.dumps(f"item {i}").encode(), "invalid_json"),
    "null": (lambda i: b"null" + b" " * i, "invalid_json"),
    "extra_field": (lambda i: _item(i, "x", admin=True), "invalid_fields"),
    "metadata_not_strings": (lambda i: _item(i, "x", metadata={"n": [1, 2]}), "invalid_fields"),
    "long_id": (
        lambda i: json.dumps({"item_id": f"{i}" + "x" * 300, "text": "x"}).encode(),
        "invalid_fields",
    ),
    "empty_id": (lambda i: json.dumps({"item_id": "", "text": f"x{i}"}).encode(), "invalid_fields"),
    "numeric_id": (lambda i: json.dumps({"item_id": i, "text": "x"}).encode(), "invalid_fields"),
    # hostile but legitimate: decided
    "script": (
        lambda i: _item(i, "<script>alert(1)</script><img src=x onerror=alert(2)>"),
        DECIDED,
    ),
    "emoji_rtl_zero_width": (
        lambda i: _item(i, "free \U0001f600 \u202e\u200b\u200d gift"),
        DECIDED,
    ),
    "nul_and_controls": (lambda i: _item(i, "cheap\u0000pills\u0007\u001b[31m now"), DECIDED),
    "combining_flood": (lambda i: _item(i, "Z" + "\u0301" * 1500), DECIDED),
    "surrogate_pair": (lambda i: b'{"item_id": "h%d", "text": "win \\ud83d\\ude00"}' % i, DECIDED),
    "duplicate_keys": (lambda i: b'{"item_id": "h%d", "text": "a", "text": "b"}' % i, DECIDED),
}


def hostile_messages(per_kind: int, *, total: int | None = None) -> list[tuple[str, bytes, bytes]]:
    """(kind, key, value) for ``per_kind`` messages of every kind, kind after kind (or the first
    ``total`` of them taken round-robin over the kinds); item ids are unique across kinds.

    >>> [kind for kind, _, _ in hostile_messages(1)][:2]
    ['not_json', 'bom']
    >>> len(hostile_messages(30)), len(hostile_messages(30, total=100))
    (1050, 100)
    >>> len({kind for kind, _, _ in hostile_messages(30, total=100)}) == len(KINDS)
    True
    """
    out = []
    n = 0
    for kind, (make, _) in KINDS.items():
        for _ in range(per_kind):
            out.append((kind, f"{kind}-{n}".encode(), make(n)))
            n += 1
    if total is None:
        return out
    by_round = sorted(range(len(out)), key=lambda k: (k % per_kind, k))
    return [out[k] for k in by_round[:total]]
