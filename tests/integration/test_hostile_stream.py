"""Hostile input through a real worker on the real broker: 1,000+ messages of 30+ kinds, the three
that used to crash-loop every worker among them (10,000-deep JSON, a lone surrogate escape, an
item of 800 KB). Every message is either decided or dead-lettered with its reason and its original
bytes (or their prefix, size and sha256); the worker never exits; nothing is dropped silently."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from streams.demo.replay import replay_raw
from streams.service.reader import read_topic

from .conftest import Stack

pytestmark = pytest.mark.integration

DECIDED = "decided"


def _item(i: int, text: str, **extra: Any) -> bytes:
    return json.dumps({"item_id": f"h{i}", "text": text, **extra}).encode()


# kind -> (value for message i, what must happen to it: DECIDED or a dead-letter reason)
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
PER_KIND = 30


def _messages() -> list[tuple[str, bytes, bytes]]:
    """(kind, key, value) for every message; item ids are unique across kinds."""
    out = []
    n = 0
    for kind, (make, _) in KINDS.items():
        for _ in range(PER_KIND):
            out.append((kind, f"{kind}-{n}".encode(), make(n)))
            n += 1
    return out


def _whole_sha(letter: dict[str, Any]) -> str:
    original = base64.b64decode(letter["value_b64"])
    if letter.get("value_truncated"):
        return str(letter["value_sha256"])
    return hashlib.sha256(original).hexdigest()


def test_a_thousand_hostile_messages_cost_dead_letters_never_the_worker(stack: Stack) -> None:
    assert len(KINDS) >= 25
    worker = stack.start_worker("hostile", max_text_bytes=4000)
    messages = _messages()
    assert len(messages) >= 1000
    expected_dead = Counter(
        hashlib.sha256(v).hexdigest() for kind, _, v in messages if KINDS[kind][1] != DECIDED
    )
    expected_reason = {
        hashlib.sha256(v).hexdigest(): KINDS[kind][1]
        for kind, _, v in messages
        if KINDS[kind][1] != DECIDED
    }
    decided_ids = {json.loads(v)["item_id"] for kind, _, v in messages if KINDS[kind][1] == DECIDED}
    asyncio.run(
        replay_raw(stack.bootstrap_servers, stack.topics.items, [(k, v) for _, k, v in messages])
    )

    def dead_complete(letters: list[dict[str, Any]]) -> bool:
        seen = Counter(_whole_sha(m) for m in letters)
        return all(seen[sha] >= n for sha, n in expected_dead.items())

    dead = asyncio.run(
        read_topic(
            stack.bootstrap_servers, stack.topics.items_dlq, until=dead_complete, timeout_s=240
        )
    )
    decisions = asyncio.run(
        read_topic(
            stack.bootstrap_servers,
            stack.topics.decisions,
            until=lambda msgs: decided_ids <= {m["item_id"] for m in msgs},
            timeout_s=120,
        )
    )

    seen = Counter(_whole_sha(m) for m in dead)
    missing = {sha: n - seen[sha] for sha, n in expected_dead.items() if seen[sha] < n}
    assert not missing, (
        f"{sum(missing.values())} hostile messages neither decided nor dead-lettered"
    )
    unexpected = [
        (m["reason"], m["detail"][:200]) for m in dead if _whole_sha(m) not in expected_reason
    ]
    assert not unexpected, f"dead-lettered though they should be decided: {unexpected[:5]}"
    for letter in dead:
        sha = _whole_sha(letter)
        assert letter["reason"] == expected_reason[sha], (letter["reason"], letter["detail"])
        assert letter["source_topic"] == stack.topics.items
        assert letter["offset"] is not None and letter["detail"]
        assert len(json.dumps(letter)) < 1_000_000  # fits the broker's limit
    assert decided_ids <= {d["item_id"] for d in decisions}
    # at-least-once allows a redelivered duplicate after a rebalance, not a flood of them
    assert len(dead) <= 1.02 * sum(expected_dead.values())

    assert worker.process.poll() is None, "the worker exited"
    log = worker.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
