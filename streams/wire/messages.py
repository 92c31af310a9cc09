"""The messages of the loop: one typed model per message, each with a ``schema_version``, JSON
on the wire. `export_schemas` writes one JSON Schema file per message, so that reviewers' tools
and producers in any language can validate what they send and read.

Decoding never raises anything but `MessageError`, whose ``reason`` is a short, low-cardinality
code (it becomes a metric label and the dead letter's reason).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adapters.review.routing import Action
from streams.wire.errors import MessageError
from streams.wire.hostile import parse_json

__all__ = [
    "MESSAGE_TYPES",
    "Action",
    "AdapterActivated",
    "AdapterEvent",
    "AdapterRegistered",
    "ConsoleAccount",
    "DeadLetter",
    "Decision",
    "Evidence",
    "IncomingItem",
    "PolicyCategory",
    "PolicyRecorded",
    "PolicyUpdate",
    "ReviewLabel",
    "ReviewReason",
    "ReviewRequest",
    "ReviewerEvent",
    "decode",
    "decode_item",
    "encode",
    "export_schemas",
]

SCHEMA_VERSION: Literal[1] = 1
ItemId = Annotated[str, Field(min_length=1, max_length=256)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: Literal[1] = SCHEMA_VERSION


class IncomingItem(_Message):
    """An ad (or any content item) to moderate. Keyed by ``item_id`` on the topic."""

    item_id: ItemId
    text: str
    produced_at: float | None = Field(
        default=None,
        ge=0.0,
        le=1e11,  # epoch seconds (not milliseconds): before the year 5138
        allow_inf_nan=False,
        description="epoch seconds when the item entered the stream",
    )
    metadata: dict[str, str] = Field(default_factory=dict)


class Decision(_Message):
    """The model's decision on one item. Keyed by ``item_id``."""

    item_id: ItemId
    action: Action
    probabilities: dict[str, float] = Field(description="probability per policy category")
    model_version: str
    adapter_version: str
    policy_version: str
    latency_s: float | None = Field(
        default=None, description="seconds from produced_at to decision, when produced_at is set"
    )
    scoring_s: float = Field(description="seconds the batch that held this item took to score")
    decided_at: float
    worker: str
    cached: bool = Field(
        default=False,
        description="decided from the decision cache: an item with the same normalised text was "
        "scored under the same model, adapter and policy version (scoring_s is then 0)",
    )


class ReviewReason(StrEnum):
    UNCERTAIN = "uncertain"  # the model's probability fell in the review band
    BOUNDARY = "boundary"  # one of a cross-label pair where the classes' clusters overlap
    AUDIT = "audit"  # a small random sample, so the evaluation set is not only hard items
    SECOND_OPINION = "second_opinion"  # experts disagreed on this item
    POLICY_CHANGE = "policy_change"  # near the new policy's examples of what changed


class Evidence(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    item_id: ItemId
    label: str
    similarity: float


class ReviewRequest(_Message):
    """An item sent to expert reviewers. ``request_id`` is deterministic, so a consumer can drop
    the rare duplicate that at-least-once delivery lets through."""

    request_id: str
    item_id: ItemId
    text: str
    reason: ReviewReason
    probabilities: dict[str, float]
    policy_version: str
    priority: float = Field(ge=0, description="higher is reviewed first")
    pair_item_id: str | None = Field(default=None, description="boundary pair partner")
    evidence: list[Evidence] = Field(
        default_factory=list, description="nearest already-labelled items, with their labels"
    )
    already_labeled_by: list[str] = Field(
        default_factory=list, description="reviewers who labelled it (second opinions)"
    )
    requested_at: float
    audit_drawn: bool = Field(
        default=False,
        description="drawn by the uniform audit sample, whatever its first reason (unbiased "
        "estimates use these items only)",
    )
    audit_rate: float | None = Field(
        default=None, ge=0, le=1, description="the audit draw probability in force"
    )
    opinions: int = Field(
        default=1,
        ge=1,
        le=10,
        description="expert opinions wanted: 2 for audit draws and the seeded overlap sample, "
        "else 1 (a disagreement with the model asks for a second later)",
    )


class ReviewLabel(_Message):
    """An expert's label for one item under one policy version."""

    item_id: ItemId
    reviewer_id: str = Field(min_length=1, max_length=128)
    label: str = Field(min_length=1, description="a policy category, or 'benign'")
    policy_version: str
    request_id: str | None = None
    labeled_at: float
    signature: str | None = Field(
        default=None,
        max_length=256,
        description="HMAC-SHA256 over the canonical label by the reviewer's key (Kafka clients)",
    )


class PolicyCategory(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)
    definition: str
    block_threshold: float = Field(default=0.5, ge=0, le=1)


class PolicyUpdate(_Message):
    """A new version of the moderation policy."""

    policy_version: str = Field(min_length=1)
    categories: list[PolicyCategory] = Field(min_length=1)
    review_low: float = Field(ge=0, le=1)
    review_high: float = Field(ge=0, le=1)
    examples: list[dict[str, str]] = Field(default_factory=list)
    published_at: float


class PolicyRecorded(_Message):
    """A publication as the policy store recorded it, with the whole document: what the policy
    store is rebuilt from (`PolicyUpdate` on ``moderation.policy.published`` stays the
    announcement workers and tools read). Keyed by version."""

    policy_version: str = Field(min_length=1)
    document: dict[str, Any] = Field(description="the policy document (canonical JSON object)")
    sha256: str = Field(description="sha256 of the document's canonical JSON")
    action: Literal["published", "reactivated"]
    previous: str | None = None
    actor: str
    at: float


class AdapterEvent(_Message):
    """A change to the adapter registry: registered, promoted, rolled back, refused."""

    event: Literal["registered", "promoted", "rolled_back", "refused"]
    adapter_id: str
    policy_version: str
    actor: str
    reason: str = ""
    at: float


class ConsoleAccount(BaseModel):
    """A reviewer console account as recorded: name, role, the Argon2id hash of its password
    (never the password), whether it is disabled, when it was made."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    role: Literal["reviewer", "lead"]
    password_hash: str | None = Field(default=None, max_length=512)
    disabled: bool = False
    created_at: float


class ReviewerEvent(_Message):
    """A change to the reviewer registry: reviewers ``added``, one ``cleared`` (a person vouched
    for them: their labels count for training again), or one issued a signing key
    (``key_issued``, with the key's nonce: the key itself is derived from the service's secret
    and is never recorded); for the reviewer console, an ``account`` made, changed or disabled
    (the whole account), or an API token issued to one (``token_issued``, with the token's
    SHA-256: the token is never recorded). Keyed by reviewer id (the first one)."""

    event: Literal["added", "cleared", "key_issued", "account", "token_issued"]
    reviewer_ids: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(min_length=1)
    key_nonce: str | None = Field(
        default=None, max_length=128, description="key_issued: the nonce the key derives from"
    )
    account: ConsoleAccount | None = Field(default=None, description="account: the account")
    token_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="token_issued: the token's SHA-256"
    )
    actor: str = ""
    at: float


class AdapterRegistered(_Message):
    """An adapter as registered: its manifest and its adapter file (base64, ~400 KB for a 300 KB
    adapter), so that the registry can be rebuilt from the topic alone. Keyed by adapter id."""

    adapter_id: str = Field(min_length=1, max_length=128)
    policy_version: str
    manifest_json: str = Field(description="the manifest file's bytes (UTF-8 JSON), verbatim")
    file_b64: str = Field(description="the adapter file, base64")
    file_sha256: str = Field(description="sha256 of the adapter file (the manifest lists it too)")
    signature_json: str | None = Field(
        default=None,
        description="the trainer's signature document once the gate passed (recorded again, "
        "with the files, when the adapter is signed)",
    )
    actor: str = ""
    at: float

    def file_bytes(self) -> bytes:
        """The adapter file; `MessageError` when it is not valid base64 or not the bytes named."""
        try:
            data = base64.b64decode(self.file_b64, validate=True)
        except ValueError as exc:
            raise MessageError("invalid_fields", f"file_b64: {exc}") from None
        if hashlib.sha256(data).hexdigest() != self.file_sha256:
            raise MessageError("invalid_fields", f"adapter {self.adapter_id}: sha256 mismatch")
        return data


class AdapterActivated(_Message):
    """A change of the adapter serving a policy, as the registry recorded it (its time and
    epoch): what the registry's active adapter and history are rebuilt from. Keyed by policy
    version. (`AdapterEvent` on ``moderation.adapter.changed`` stays the announcement.)"""

    action: Literal["promote", "rollback"]
    adapter_id: str = Field(min_length=1, max_length=128)
    previous: str | None = None
    policy_version: str
    epoch: int = Field(ge=1)
    actor: str
    reason: str
    at: float


# What a dead letter keeps of the original: the broker refuses a message over its limit (1 MB by
# default), and base64 adds a third, so originals above the cap are kept as a prefix.
DEAD_LETTER_VALUE_CAP = 256 * 1024
DEAD_LETTER_KEY_CAP = 4 * 1024


class DeadLetter(_Message):
    """A message that could not be processed, with why and the original bytes (base64). An
    original larger than 256 KiB is kept as its first 256 KiB (``value_truncated``), with the
    size and sha256 of the whole, so a dead letter always fits the broker's limit."""

    reason: str
    detail: str
    source_topic: str
    partition: int | None = None
    offset: int | None = None
    key_b64: str | None = None
    value_b64: str
    value_size: int | None = Field(default=None, description="bytes of the whole original value")
    value_sha256: str | None = Field(default=None, description="sha256 of the whole original")
    value_truncated: bool = Field(
        default=False, description="value_b64 holds only the first 256 KiB of the original"
    )
    failed_at: float
    worker: str

    @classmethod
    def of(
        cls,
        error: MessageError,
        value: bytes,
        *,
        source_topic: str,
        partition: int | None,
        offset: int | None,
        key: bytes | None,
        worker: str,
        now: float | None = None,
    ) -> DeadLetter:
        kept = value[:DEAD_LETTER_VALUE_CAP]
        return cls(
            reason=error.reason,
            detail=_printable(error.detail[:2000]),
            source_topic=source_topic,
            partition=partition,
            offset=offset,
            key_b64=None if key is None else base64.b64encode(key[:DEAD_LETTER_KEY_CAP]).decode(),
            value_b64=base64.b64encode(kept).decode(),
            value_size=len(value),
            value_sha256=hashlib.sha256(value).hexdigest(),
            value_truncated=len(kept) < len(value),
            failed_at=time.time() if now is None else now,
            worker=worker,
        )

    def original(self) -> bytes:
        return base64.b64decode(self.value_b64)


def _printable(text: str) -> str:
    """A detail can quote hostile input: lone surrogates would make the dead letter unencodable."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


MESSAGE_TYPES: dict[str, type[_Message]] = {
    "incoming_item": IncomingItem,
    "decision": Decision,
    "review_request": ReviewRequest,
    "review_label": ReviewLabel,
    "policy_update": PolicyUpdate,
    "policy_recorded": PolicyRecorded,
    "adapter_event": AdapterEvent,
    "adapter_activated": AdapterActivated,
    "adapter_registered": AdapterRegistered,
    "reviewer_event": ReviewerEvent,
    "dead_letter": DeadLetter,
}

M = TypeVar("M", bound=_Message)


def encode(message: _Message) -> bytes:
    return message.model_dump_json().encode()


# A message is a few hundred bytes of JSON; text is capped by the worker's max_text_bytes (which
# JSON escapes can inflate up to six times). Nothing we read nests deeper than 4 levels.
MAX_MESSAGE_BYTES = 512 * 1024
# An `AdapterRegistered` carries the adapter file: ~400 KB of base64 for a 300 KB adapter.
MAX_ADAPTER_MESSAGE_BYTES = 1024 * 1024
MAX_DEPTH = 16


def decode(raw: bytes | None, model: type[M], *, max_bytes: int = MAX_MESSAGE_BYTES) -> M:
    """Decode one message; any problem becomes a `MessageError` with a stable reason."""
    if raw is None:
        raise MessageError("empty_value", "the message has no value (tombstone)")
    doc = parse_json(raw, max_bytes=max_bytes, max_depth=MAX_DEPTH)
    if not isinstance(doc, dict):
        raise MessageError("invalid_json", f"expected a JSON object, got {type(doc).__name__}")
    version = doc.get("schema_version", SCHEMA_VERSION)
    if type(version) is not int or version != SCHEMA_VERSION:  # True == 1 in Python
        raise MessageError(
            "unknown_schema_version",
            f"schema_version {version!r} is not supported (this worker reads {SCHEMA_VERSION})",
        )
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise MessageError("invalid_fields", f"{where}: {first['msg']}") from exc


def decode_item(raw: bytes | None, max_text_bytes: int) -> IncomingItem:
    """Decode an incoming item and apply the content rules (non-empty, bounded size)."""
    item = decode(raw, IncomingItem, max_bytes=max(MAX_MESSAGE_BYTES, 6 * max_text_bytes + 4096))
    if not item.text.strip():
        raise MessageError("empty_text", f"item {item.item_id!r} has no text")
    size = len(item.text.encode("utf-8"))
    if size > max_text_bytes:
        raise MessageError(
            "text_too_large",
            f"item {item.item_id!r} has {size} bytes of text (max {max_text_bytes})",
        )
    return item


def export_schemas(out_dir: Path) -> list[Path]:
    """Write ``<name>.schema.json`` for every message; return the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in MESSAGE_TYPES.items():
        schema = model.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://borderline.dev/schemas/v{SCHEMA_VERSION}/{name}.schema.json"
        path = out_dir / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
