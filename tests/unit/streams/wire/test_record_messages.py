"""The messages of the record (what the Redis store is rebuilt from): an adapter registration
carries its file and refuses bytes that are not the ones named, a reviewer event names at least one
reviewer, an activation has a real epoch, a policy record carries the whole document (the same
sha256 once parsed back) beside the announcement, which is unchanged, and each has a published
JSON Schema."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from adapters.policy.schema import Policy, load_policy
from adapters.policy.store import PolicyRecord
from streams.service.publication import policy_record
from streams.wire.errors import MessageError
from streams.wire.messages import (
    MAX_ADAPTER_MESSAGE_BYTES,
    MAX_MESSAGE_BYTES,
    AdapterActivated,
    AdapterRegistered,
    PolicyRecorded,
    ReviewerEvent,
    decode,
    encode,
    export_schemas,
)

REPO = Path(__file__).resolve().parents[4]


def _registered(
    data: bytes, *, sha256: str | None = None, b64: str | None = None
) -> AdapterRegistered:
    return AdapterRegistered(
        adapter_id="a-1",
        policy_version="v1",
        manifest_json="{}",
        file_b64=base64.b64encode(data).decode() if b64 is None else b64,
        file_sha256=hashlib.sha256(data).hexdigest() if sha256 is None else sha256,
        at=1.0,
    )


def test_an_adapter_registration_gives_back_the_bytes_it_names() -> None:
    data = bytes(range(256)) * 4
    assert _registered(data).file_bytes() == data


@pytest.mark.parametrize(
    ("message", "detail"),
    [
        (_registered(b"abc", sha256="0" * 64), "sha256 mismatch"),
        (_registered(b"abc", b64="not base64!"), "file_b64"),
    ],
)
def test_an_adapter_registration_refuses_other_bytes(
    message: AdapterRegistered, detail: str
) -> None:
    with pytest.raises(MessageError) as caught:
        message.file_bytes()
    assert caught.value.reason == "invalid_fields"
    assert detail in caught.value.detail


def test_an_adapter_twice_todays_size_fits_the_adapter_limit_not_the_default_one() -> None:
    assert len(encode(_registered(b"\x01" * 300 * 1024))) < MAX_MESSAGE_BYTES  # today's ~300 KB
    raw = encode(_registered(b"\x01" * 600 * 1024))
    assert MAX_MESSAGE_BYTES < len(raw) < MAX_ADAPTER_MESSAGE_BYTES
    with pytest.raises(MessageError):
        decode(raw, AdapterRegistered)
    assert decode(raw, AdapterRegistered, max_bytes=MAX_ADAPTER_MESSAGE_BYTES).adapter_id == "a-1"


def test_a_reviewer_event_names_someone_and_an_activation_has_an_epoch() -> None:
    with pytest.raises(ValidationError):
        ReviewerEvent(event="added", reviewer_ids=[], at=1.0)
    with pytest.raises(ValidationError):
        ReviewerEvent(event="added", reviewer_ids=[""], at=1.0)
    with pytest.raises(ValidationError):
        ReviewerEvent.model_validate({"event": "removed", "reviewer_ids": ["a"], "at": 1.0})
    with pytest.raises(ValidationError):
        AdapterActivated(
            action="promote",
            adapter_id="a",
            policy_version="v1",
            epoch=0,
            actor="x",
            reason="",
            at=1.0,
        )


@pytest.mark.parametrize("name", ["v1.yaml", "v2.yaml"])
def test_a_policy_record_carries_the_whole_document(name: str) -> None:
    policy = load_policy(REPO / "deploy" / "policies" / name)
    record = PolicyRecord(
        version=policy.version,
        previous="v0",
        action="reactivated",
        actor="ops",
        at=5.0,
        sha256=policy.sha256(),
    )
    message = decode(encode(policy_record(policy, record)), PolicyRecorded)
    assert (message.actor, message.at, message.action, message.previous) == (
        "ops",
        5.0,
        "reactivated",
        "v0",
    )
    assert message.sha256 == policy.sha256()
    assert Policy.model_validate(message.document).sha256() == policy.sha256()


def test_the_record_messages_have_published_schemas(tmp_path: Path) -> None:
    names = {p.name for p in export_schemas(tmp_path)}
    assert {
        "adapter_registered.schema.json",
        "adapter_activated.schema.json",
        "reviewer_event.schema.json",
        "policy_recorded.schema.json",
    } <= names
    schema = json.loads((tmp_path / "adapter_registered.schema.json").read_text())
    assert {"file_b64", "file_sha256", "manifest_json"} <= set(schema["required"])
    policy = json.loads((tmp_path / "policy_recorded.schema.json").read_text())
    assert {"document", "sha256", "actor", "at"} <= set(policy["required"])
