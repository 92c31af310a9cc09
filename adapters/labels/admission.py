"""Which expert labels are admitted: a label counts only when its reviewer signed it with their key
(HMAC-SHA256 over the label's canonical bytes), it answers a request the service issued for that
item, under that request's policy version, with one of that policy's categories or ``benign``,
and its time is not in the future. Pure: the caller gathers what the service knows (the
reviewer's key, the requests issued for the item, the policy's categories, the time) and acts on
the answer.

Canonical bytes, for a client in any language: the compact JSON array (``ensure_ascii``, no
spaces) ``["borderline.review-label", schema_version, item_id, reviewer_id, label,
policy_version, request_id or null, labeled_at in whole milliseconds]``; the signature is its
HMAC-SHA256 under the reviewer's key, as lowercase hex. A reviewer's key is derived from the
service's key secret and a random nonce issued per reviewer (`derive_key`): only the nonce is
ever written down (Redis and the record), never the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

__all__ = [
    "BENIGN",
    "REASONS",
    "Evidence",
    "LabelClaim",
    "Refusal",
    "canonical_label",
    "derive_key",
    "refusal",
    "sign_label",
    "signature_valid",
]

BENIGN = "benign"  # the label of an item that violates no category (as in adapters.policy)
DOMAIN = "borderline.review-label"
KEY_DOMAIN = b"borderline.reviewer-key\x00"

REASONS = (
    "invalid_timestamp",
    "unsigned_label",
    "bad_signature",
    "unrequested_item",
    "request_mismatch",
    "policy_mismatch",
    "unknown_category",
    "future_timestamp",
)
"""Every refusal reason, in the order they are checked."""


@dataclass(frozen=True)
class LabelClaim:
    """What a label says (every field of the message but its signature)."""

    item_id: str
    reviewer_id: str
    label: str
    policy_version: str
    request_id: str | None
    labeled_at: float
    schema_version: int = 1


@dataclass(frozen=True)
class Evidence:
    """What the service knows when a label arrives. ``key``: the reviewer's key (None: none was
    issued); ``requests``: request id -> policy version of every request issued for the item;
    ``categories``: the categories of the policy version the label names (None: no such policy);
    ``max_skew_s``: how far in the future a label's time may be (clocks differ)."""

    key: bytes | None
    requests: Mapping[str, str]
    categories: Collection[str] | None
    now: float
    max_skew_s: float


@dataclass(frozen=True)
class Refusal:
    reason: str
    detail: str


def _millis(at: float) -> int | None:
    return round(at * 1000) if math.isfinite(at) else None


def canonical_label(claim: LabelClaim) -> bytes:
    """The bytes a reviewer signs.

    >>> claim = LabelClaim("ad-1", "alice", "violating", "v1", "rq-1", 1700000000.25)
    >>> canonical_label(claim)
    b'["borderline.review-label",1,"ad-1","alice","violating","v1","rq-1",1700000000250]'
    """
    fields = [
        DOMAIN,
        claim.schema_version,
        claim.item_id,
        claim.reviewer_id,
        claim.label,
        claim.policy_version,
        claim.request_id,
        _millis(claim.labeled_at),
    ]
    return json.dumps(fields, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def derive_key(secret: bytes, reviewer_id: str, nonce: str) -> bytes:
    """A reviewer's key: HMAC-SHA256 of (reviewer id, nonce) under the service's key secret. A
    new nonce is a new key (rotation); the secret never leaves the service's settings.

    >>> len(derive_key(b"s", "alice", "n1")), derive_key(b"s", "alice", "n1") == derive_key(
    ...     b"s", "alice", "n2")
    (32, False)
    """
    message = KEY_DOMAIN + json.dumps([reviewer_id, nonce], ensure_ascii=True).encode("ascii")
    return hmac.new(secret, message, hashlib.sha256).digest()


def sign_label(key: bytes, claim: LabelClaim) -> str:
    """The label's signature: HMAC-SHA256 of its canonical bytes, lowercase hex.

    >>> sig = sign_label(b"k", LabelClaim("ad-1", "alice", "benign", "v1", None, 1.0))
    >>> len(sig)
    64
    """
    return hmac.new(key, canonical_label(claim), hashlib.sha256).hexdigest()


def signature_valid(key: bytes, claim: LabelClaim, signature: str) -> bool:
    """Whether ``signature`` is ``claim``'s under ``key`` (a constant-time comparison).

    >>> claim = LabelClaim("ad-1", "alice", "benign", "v1", None, 1.0)
    >>> signature_valid(b"k", claim, sign_label(b"k", claim))
    True
    >>> signature_valid(b"other", claim, sign_label(b"k", claim))
    False
    """
    expected = sign_label(key, claim)
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8"))


def _authentic(claim: LabelClaim, signature: str | None, key: bytes | None) -> Refusal | None:
    if not signature:
        return Refusal("unsigned_label", f"label by {claim.reviewer_id!r} carries no signature")
    if key is None:
        return Refusal(
            "bad_signature",
            f"reviewer {claim.reviewer_id!r} has no key (borderline reviewers rotate-key ID)",
        )
    if not signature_valid(key, claim, signature):
        return Refusal("bad_signature", f"signature does not match {claim.reviewer_id!r}'s key")
    return None


def _requested(claim: LabelClaim, requests: Mapping[str, str]) -> Refusal | None:
    if not requests:
        return Refusal("unrequested_item", f"item {claim.item_id!r} was never sent to review")
    if claim.request_id is None or claim.request_id not in requests:
        return Refusal(
            "request_mismatch",
            f"request id {claim.request_id!r} is not a request issued for item {claim.item_id!r}",
        )
    asked = requests[claim.request_id]
    if claim.policy_version != asked:
        return Refusal(
            "policy_mismatch",
            f"label under policy {claim.policy_version!r}, request {claim.request_id!r} "
            f"under {asked!r}",
        )
    return None


def refusal(claim: LabelClaim, signature: str | None, evidence: Evidence) -> Refusal | None:
    """Why the label is refused (None: it is admitted). Checked in `REASONS` order.

    >>> claim = LabelClaim("ad-1", "alice", "violating", "v1", "rq-1", 100.0)
    >>> ev = Evidence(b"k", {"rq-1": "v1"}, ["violating"], now=100.0, max_skew_s=60.0)
    >>> refusal(claim, sign_label(b"k", claim), ev) is None
    True
    >>> refusal(claim, None, ev).reason
    'unsigned_label'
    >>> forged = LabelClaim("ad-1", "alice", "violating", "v999", "rq-1", 100.0)
    >>> refusal(forged, sign_label(b"k", forged), ev).reason
    'policy_mismatch'
    """
    if _millis(claim.labeled_at) is None:
        return Refusal("invalid_timestamp", f"labeled_at {claim.labeled_at!r} is not a time")
    found = _authentic(claim, signature, evidence.key) or _requested(claim, evidence.requests)
    if found is not None:
        return found
    allowed = evidence.categories
    if allowed is None or (claim.label != BENIGN and claim.label not in allowed):
        known = "no such policy" if allowed is None else f"one of {sorted(allowed)} or 'benign'"
        return Refusal(
            "unknown_category",
            f"label {claim.label!r} is not a category of policy {claim.policy_version!r} ({known})",
        )
    if claim.labeled_at > evidence.now + evidence.max_skew_s:
        return Refusal(
            "future_timestamp",
            f"labeled_at {claim.labeled_at:.3f} is {claim.labeled_at - evidence.now:.0f}s "
            f"ahead of the service's clock (at most {evidence.max_skew_s:g}s allowed)",
        )
    return None
