"""Unit tests for streams.wire.hostile and the decode path built on it: whatever bytes a message
holds, decoding either returns a valid message or raises `MessageError` with a stable reason, and
a dead letter of it can always be encoded and stays under the broker's limit. Property-based
(Hypothesis) over arbitrary bytes, arbitrary JSON and hand-made hostile shapes; the three values
that crash-looped every worker before (10,000-deep nesting, a lone surrogate escape, an item over
~750 KB) are pinned as examples."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streams.wire.errors import MessageError
from streams.wire.hostile import nesting_depth, parse_json
from streams.wire.messages import (
    DEAD_LETTER_VALUE_CAP,
    MAX_DEPTH,
    DeadLetter,
    IncomingItem,
    decode,
    decode_item,
    encode,
)

MAX_TEXT = 64_000
BROKER_LIMIT = 1_000_000  # Kafka's default max message size
REASONS = {
    "empty_value",
    "value_too_large",
    "too_deeply_nested",
    "invalid_utf8",
    "invalid_json",
    "invalid_unicode",
    "unknown_schema_version",
    "invalid_fields",
    "empty_text",
    "text_too_large",
}

DEEP_ARRAY = b"[" * 10_000 + b"]" * 10_000
DEEP_METADATA = (
    b'{"item_id": "a", "text": "x", "metadata": ' + b'{"k": ' * 10_000 + b"1" + b"}" * 10_001
)
LONE_SURROGATE = b'{"item_id": "a", "text": "buy \\ud800 now"}'
HUGE_ITEM = b'{"item_id": "a", "text": "' + b"x" * 800_000 + b'"}'


def _dead_letter_of(raw: bytes, error: MessageError) -> bytes:
    letter = DeadLetter.of(
        error, raw, source_topic="t", partition=0, offset=1, key=raw[:100], worker="w", now=0.0
    )
    return encode(letter)


def _outcome(raw: bytes) -> str:
    """Decode as the worker does; a dead letter is encoded as the worker would send it."""
    try:
        item = decode_item(raw, MAX_TEXT)
    except MessageError as exc:
        assert exc.reason in REASONS, exc.reason
        out = _dead_letter_of(raw, exc)
        assert len(out) < BROKER_LIMIT
        return exc.reason
    encode(item)  # the decision quotes the item id: it must encode too
    item.text.encode("utf-8")
    return "ok"


# --- the three crash-loopers, and the minor defects -----------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (DEEP_ARRAY, "too_deeply_nested"),
        (DEEP_METADATA, "too_deeply_nested"),
        (LONE_SURROGATE, "invalid_unicode"),
        (HUGE_ITEM, "value_too_large"),
        (b"", "empty_value"),
        (b'{"schema_version": true, "item_id": "a", "text": "x"}', "unknown_schema_version"),
        (b'{"item_id": "a", "text": "x", "produced_at": NaN}', "invalid_json"),
        (b'{"item_id": "a", "text": "x", "produced_at": Infinity}', "invalid_json"),
        (b'{"item_id": "a", "text": "x", "produced_at": 1e400}', "invalid_fields"),
        (b'{"item_id": "a", "text": "x", "produced_at": 1e308}', "invalid_fields"),
        (b'{"item_id": "a", "text": "x", "produced_at": -1}', "invalid_fields"),
        (b'{"item_id": "a", "text": "x", "produced_at": 1700000000000}', "invalid_fields"),
        (b'{"item_id": "\\udfff", "text": "x"}', "invalid_unicode"),
        (b'{"item_id": "a", "text": "x", "metadata": {"\\ud800": "v"}}', "invalid_unicode"),
        # Python refuses to read an integer of more than 4,300 digits (ValueError, not a
        # JSONDecodeError): it crashed the collector's label path until isolated as poison
        (b'{"item_id": "a", "text": "x", "produced_at": ' + b"9" * 5000 + b"}", "invalid_json"),
        (
            b'{"item_id": "a", "text": "x", "metadata": {"n": -' + b"1" * 4301 + b"}}",
            "invalid_json",
        ),
    ],
)
def test_hostile_values_get_a_reason_and_an_encodable_dead_letter(raw: bytes, reason: str) -> None:
    assert _outcome(raw) == reason


def test_a_surrogate_pair_is_a_character_not_an_error() -> None:
    item = decode_item(b'{"item_id": "a", "text": "hi \\ud83d\\ude00"}', MAX_TEXT)
    assert item.text == "hi \U0001f600"


def test_a_dead_letter_keeps_a_prefix_size_and_hash_of_a_huge_original() -> None:
    letter = json.loads(_dead_letter_of(HUGE_ITEM, MessageError("value_too_large", "x")))
    assert letter["value_truncated"] is True
    assert letter["value_size"] == len(HUGE_ITEM)
    assert base64.b64decode(letter["value_b64"]) == HUGE_ITEM[:DEAD_LETTER_VALUE_CAP]
    assert letter["value_sha256"] == hashlib.sha256(HUGE_ITEM).hexdigest()


def test_a_small_original_is_kept_whole() -> None:
    raw = b"not json"
    letter = DeadLetter.model_validate_json(_dead_letter_of(raw, MessageError("invalid_json", "x")))
    assert letter.original() == raw and not letter.value_truncated and letter.value_size == 8


def test_a_detail_quoting_a_lone_surrogate_still_encodes() -> None:
    letter = DeadLetter.of(
        MessageError("invalid_fields", "item_id: '\ud800' is bad"),
        b"{}",
        source_topic="t",
        partition=None,
        offset=None,
        key=None,
        worker="w",
        now=0.0,
    )
    assert "\\ud800" in json.loads(encode(letter))["detail"]


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b"{}", 1),
        (b"[[[]]]", 3),
        (b'{"a": "[[[[[[", "b": {"c": []}}', 3),
        (b'["\\"[[[[", [1]]', 2),
        (b"1", 0),
    ],
)
def test_nesting_depth_ignores_brackets_in_strings(raw: bytes, depth: int) -> None:
    assert nesting_depth(raw, stop_above=100) == depth
    assert nesting_depth(raw, stop_above=100) == _reference_depth(json.loads(raw))


def _reference_depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_reference_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_reference_depth(v) for v in value), default=0)
    return 0


def test_nesting_at_the_limit_parses_and_one_deeper_does_not() -> None:
    assert parse_json(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, max_bytes=10_000, max_depth=MAX_DEPTH)
    with pytest.raises(MessageError) as caught:
        parse_json(
            b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), max_bytes=10_000, max_depth=MAX_DEPTH
        )
    assert caught.value.reason == "too_deeply_nested"


# --- properties -----------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2_000))
@example(DEEP_ARRAY)
@example(LONE_SURROGATE)
@example(b"\xff\xfe")
def test_any_bytes_decode_or_fail_with_a_reason(raw: bytes) -> None:
    _outcome(raw)


@settings(max_examples=400, deadline=None)
@given(JSON_VALUES)
def test_any_json_document_decodes_or_fails_with_a_reason(value: object) -> None:
    _outcome(json.dumps(value).encode())


@settings(max_examples=300, deadline=None)
@given(
    item_id=st.text(max_size=300),
    text=st.text(max_size=300),
    produced_at=st.one_of(st.none(), st.floats(), st.integers(min_value=-(2**70), max_value=2**70)),
    metadata=st.dictionaries(st.text(max_size=20), st.text(max_size=20), max_size=5),
)
def test_any_item_shaped_document_decodes_or_fails_with_a_reason(
    item_id: str, text: str, produced_at: float | None, metadata: dict[str, str]
) -> None:
    doc = {"item_id": item_id, "text": text, "produced_at": produced_at, "metadata": metadata}
    raw = json.dumps(doc).encode()  # json.dumps writes NaN/Infinity and escapes surrogates
    outcome = _outcome(raw)
    if outcome == "ok":
        item = decode(raw, IncomingItem)
        assert item.item_id == item_id and item.text == text


@settings(max_examples=200, deadline=None)
@given(depth=st.integers(min_value=0, max_value=3_000), wrap=st.sampled_from([b"[]", b"{}"]))
def test_any_nesting_is_bounded(depth: int, wrap: bytes) -> None:
    arrays = b"[" * depth + b"]" * depth
    raw = arrays if wrap == b"[]" else b'{"k": ' * depth + b"1" + b"}" * depth
    outcome = _outcome(raw)
    assert (outcome == "too_deeply_nested") == (depth > MAX_DEPTH)


def test_a_depth_limit_above_the_parsers_own_is_still_a_reason_not_a_crash() -> None:
    deep = b"[" * 200_000 + b"]" * 200_000
    with pytest.raises(MessageError) as caught:
        parse_json(deep, max_bytes=10**6, max_depth=10**6)
    assert caught.value.reason == "too_deeply_nested"
