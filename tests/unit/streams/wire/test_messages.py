"""Unit tests for streams.messages: the wire format of every message, the decode reasons that
become dead-letter reasons and metric labels, dead letters that keep the original bytes, and the
exported JSON Schemas."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from streams.wire.errors import MessageError
from streams.wire.messages import (
    MESSAGE_TYPES,
    Action,
    AdapterActivated,
    AdapterEvent,
    AdapterRegistered,
    DeadLetter,
    Decision,
    Evidence,
    IncomingItem,
    PolicyCategory,
    PolicyRecorded,
    PolicyUpdate,
    ReviewerEvent,
    ReviewLabel,
    ReviewReason,
    ReviewRequest,
    decode,
    decode_item,
    encode,
    export_schemas,
)

MAX = 1000


def _dead_letter() -> DeadLetter:
    return DeadLetter.of(
        MessageError("invalid_json", "Expecting value at line 1 col 1"),
        b"not json",
        source_topic="moderation.item.received",
        partition=3,
        offset=42,
        key=b"item-1",
        worker="w-1",
        now=1700000000.0,
    )


# One valid instance of every message type, with optional fields filled in where they exist,
# so that a field that does not survive the round trip is noticed.
SAMPLES = {
    "incoming_item": IncomingItem(
        item_id="item-1", text="Buy now, 50% off ✓", produced_at=1700000000.5, metadata={"k": "v"}
    ),
    "decision": Decision(
        item_id="item-1",
        action=Action.REVIEW,
        probabilities={"violating": 0.42},
        model_version="m-1",
        adapter_version="a-1",
        policy_version="v1",
        latency_s=0.25,
        scoring_s=0.01,
        decided_at=1700000001.0,
        worker="w-1",
    ),
    "review_request": ReviewRequest(
        request_id="rr-abc",
        item_id="item-1",
        text="Buy now",
        reason=ReviewReason.BOUNDARY,
        probabilities={"violating": 0.5},
        policy_version="v1",
        priority=0.9,
        pair_item_id="item-2",
        evidence=[Evidence(item_id="item-3", label="violating", similarity=0.8)],
        requested_at=1700000002.0,
    ),
    "review_label": ReviewLabel(
        item_id="item-1",
        reviewer_id="alice",
        label="violating",
        policy_version="v1",
        request_id="rr-abc",
        labeled_at=1700000003.0,
    ),
    "policy_update": PolicyUpdate(
        policy_version="v2",
        categories=[PolicyCategory(name="violating", definition="spam", block_threshold=0.6)],
        review_low=0.2,
        review_high=0.8,
        examples=[{"text": "free money", "label": "violating"}],
        published_at=1700000004.0,
    ),
    "policy_recorded": PolicyRecorded(
        policy_version="v2",
        document={"version": "v2", "description": "spam", "categories": [{"name": "spam"}]},
        sha256="0" * 64,
        action="published",
        previous="v1",
        actor="ops@host",
        at=1700000004.0,
    ),
    "adapter_event": AdapterEvent(
        event="promoted",
        adapter_id="a-2",
        policy_version="v2",
        actor="gate",
        reason="kappa 0.81 >= 0.75",
        at=1700000005.0,
    ),
    "adapter_registered": AdapterRegistered(
        adapter_id="a-2",
        policy_version="v2",
        manifest_json='{"adapter_id": "a-2"}',
        file_b64=base64.b64encode(b"\x00adapter").decode(),
        file_sha256="0" * 64,
        actor="trainer",
        at=1700000005.0,
    ),
    "adapter_activated": AdapterActivated(
        action="rollback",
        adapter_id="a-1",
        previous="a-2",
        policy_version="v2",
        epoch=7,
        actor="ops",
        reason="live kappa fell",
        at=1700000006.0,
    ),
    "reviewer_event": ReviewerEvent(
        event="added", reviewer_ids=["alice", "bob"], actor="ops", at=1700000007.0
    ),
    "dead_letter": _dead_letter(),
}


def test_samples_cover_every_message_type() -> None:
    assert set(SAMPLES) == set(MESSAGE_TYPES)
    for name, message in SAMPLES.items():
        assert type(message) is MESSAGE_TYPES[name]


@pytest.mark.parametrize("name", sorted(MESSAGE_TYPES))
def test_encode_decode_round_trip(name: str) -> None:
    message = SAMPLES[name]
    raw = encode(message)
    assert isinstance(raw, bytes)
    doc = json.loads(raw)
    assert doc["schema_version"] == 1
    assert decode(raw, MESSAGE_TYPES[name]) == message


def test_encode_is_utf8_json() -> None:
    raw = encode(SAMPLES["incoming_item"])
    assert json.loads(raw.decode("utf-8"))["text"] == "Buy now, 50% off ✓"


# --- decode_item reasons -------------------------------------------------------------------------


def _item_bytes(**fields: object) -> bytes:
    doc: dict[str, object] = {"item_id": "item-1", "text": "hello"}
    doc.update(fields)
    return json.dumps(doc).encode()


def _reason(raw: bytes | None, max_text_bytes: int = MAX) -> str:
    with pytest.raises(MessageError) as info:
        decode_item(raw, max_text_bytes)
    return info.value.reason


def test_decode_item_accepts_a_valid_item() -> None:
    item = decode_item(_item_bytes(produced_at=12.5), MAX)
    assert item == IncomingItem(item_id="item-1", text="hello", produced_at=12.5)


def test_missing_schema_version_means_the_current_one() -> None:
    assert decode_item(_item_bytes(), MAX).schema_version == 1


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe", "invalid_utf8"),
        (b"{not json", "invalid_json"),
        (b"", "empty_value"),  # the README promised empty_value; it said invalid_json
        (b'["item-1", "hello"]', "invalid_json"),
        (b'"a string"', "invalid_json"),
        (b"null", "invalid_json"),
        (None, "empty_value"),
    ],
)
def test_undecodable_values(raw: bytes | None, reason: str) -> None:
    assert _reason(raw) == reason


def test_unknown_schema_version() -> None:
    with pytest.raises(MessageError) as info:
        decode_item(_item_bytes(schema_version=2), MAX)
    assert info.value.reason == "unknown_schema_version"
    assert "2" in info.value.detail


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (json.dumps({"text": "hello"}).encode(), "item_id"),
        (_item_bytes(item_id=5), "item_id"),
        (_item_bytes(item_id=""), "item_id"),
        (_item_bytes(text=["hello"]), "text"),
        (_item_bytes(produced_at="yesterday"), "produced_at"),
        (_item_bytes(colour="red"), "colour"),
    ],
    ids=["missing-item-id", "int-item-id", "empty-item-id", "list-text", "str-time", "extra"],
)
def test_invalid_fields_name_the_field(raw: bytes, field: str) -> None:
    with pytest.raises(MessageError) as info:
        decode_item(raw, MAX)
    assert info.value.reason == "invalid_fields"
    assert field in info.value.detail


@pytest.mark.parametrize("text", ["", " ", "\n\t  \r\n"])
def test_empty_text(text: str) -> None:
    assert _reason(_item_bytes(text=text)) == "empty_text"


def test_text_size_is_counted_in_utf8_bytes() -> None:
    text = "é" * 3  # 3 characters, 6 bytes
    assert decode_item(_item_bytes(text=text), max_text_bytes=6).text == text
    with pytest.raises(MessageError) as info:
        decode_item(_item_bytes(text=text), max_text_bytes=5)
    assert info.value.reason == "text_too_large"
    assert "6 bytes" in info.value.detail


def test_decode_never_raises_anything_but_message_error() -> None:
    for raw in (b"\x00", b"{}", b"[]", b"1e999", b'{"item_id": null}', b"\xc3"):
        with pytest.raises(MessageError):
            decode_item(raw, MAX)


# --- dead letters --------------------------------------------------------------------------------


def test_dead_letter_keeps_the_original_bytes_and_key() -> None:
    original = b"\xff\xfe\x00 binary \x80"
    dl = DeadLetter.of(
        MessageError("invalid_utf8", "byte 0 is not UTF-8"),
        original,
        source_topic="moderation.item.received",
        partition=1,
        offset=7,
        key=b"\x01key",
        worker="w-1",
        now=123.0,
    )
    assert dl.original() == original
    assert base64.b64decode(dl.key_b64 or "") == b"\x01key"
    assert (dl.reason, dl.source_topic, dl.partition, dl.offset, dl.failed_at) == (
        "invalid_utf8",
        "moderation.item.received",
        1,
        7,
        123.0,
    )
    # and survives the wire
    again = decode(encode(dl), DeadLetter)
    assert again.original() == original
    assert again.key_b64 == dl.key_b64


def test_dead_letter_without_key() -> None:
    dl = DeadLetter.of(
        MessageError("empty_value", "tombstone"),
        b"",
        source_topic="t",
        partition=None,
        offset=None,
        key=None,
        worker="w",
        now=1.0,
    )
    assert dl.key_b64 is None
    assert dl.original() == b""


# --- JSON Schemas --------------------------------------------------------------------------------


def test_export_schemas_writes_one_file_per_message(tmp_path: Path) -> None:
    out = tmp_path / "schemas"
    written = export_schemas(out)
    assert sorted(p.name for p in written) == sorted(f"{n}.schema.json" for n in MESSAGE_TYPES)
    for path in written:
        assert path.parent == out
        schema = json.loads(path.read_text())
        assert schema["$schema"].startswith("https://json-schema.org/")
        assert "schema_version" in schema["properties"]


def test_a_decision_validates_against_its_exported_schema(tmp_path: Path) -> None:
    import jsonschema  # a dev dependency

    export_schemas(tmp_path)
    schema = json.loads((tmp_path / "decision.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    validator.check_schema(schema)

    doc = json.loads(encode(SAMPLES["decision"]))
    validator.validate(doc)

    for bad in (
        {**doc, "action": "maybe"},
        {**doc, "unexpected": 1},
        {k: v for k, v in doc.items() if k != "item_id"},
    ):
        assert not validator.is_valid(bad), bad
