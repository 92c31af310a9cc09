"""The label admission decision: one test per refusal, in order, and the signature's bytes."""

from __future__ import annotations

import math

import pytest

from adapters.labels.admission import (
    REASONS,
    Evidence,
    LabelClaim,
    canonical_label,
    derive_key,
    refusal,
    sign_label,
    signature_valid,
)

KEY = derive_key(b"secret", "alice", "nonce-1")
GOOD = LabelClaim("ad-1", "alice", "violating", "v1", "rq-1", 1000.0)


def evidence(**changes: object) -> Evidence:
    base: dict[str, object] = {
        "key": KEY,
        "requests": {"rq-1": "v1", "rr-2": "v1"},
        "categories": ["violating"],
        "now": 1000.0,
        "max_skew_s": 60.0,
    }
    base.update(changes)
    return Evidence(**base)  # type: ignore[arg-type]


def claim(**changes: object) -> LabelClaim:
    fields = {**GOOD.__dict__, **changes}
    return LabelClaim(**fields)  # type: ignore[arg-type]


def reason(c: LabelClaim, ev: Evidence | None = None, signature: str | None = "sign") -> str | None:
    sig = sign_label(KEY, c) if signature == "sign" else signature
    found = refusal(c, sig, ev or evidence())
    return None if found is None else found.reason


def test_a_signed_label_answering_its_request_is_admitted() -> None:
    assert reason(GOOD) is None
    assert reason(claim(label="benign")) is None
    assert reason(claim(request_id="rr-2")) is None  # a second opinion's request
    assert reason(claim(labeled_at=1059.0)) is None  # within the skew


def test_unsigned_and_wrongly_signed_labels_are_refused() -> None:
    assert reason(GOOD, signature=None) == "unsigned_label"
    assert reason(GOOD, signature="") == "unsigned_label"
    assert reason(GOOD, signature="0" * 64) == "bad_signature"
    other = derive_key(b"secret", "mallory", "nonce-1")
    assert refusal(GOOD, sign_label(other, GOOD), evidence()).reason == "bad_signature"  # type: ignore[union-attr]
    # no key issued to the reviewer: nothing can be verified
    assert reason(GOOD, evidence(key=None)) == "bad_signature"
    # a signature over another label does not carry over
    assert refusal(claim(label="benign"), sign_label(KEY, GOOD), evidence()).reason == (  # type: ignore[union-attr]
        "bad_signature"
    )


def test_a_label_for_an_item_never_requested_is_refused() -> None:
    assert reason(GOOD, evidence(requests={})) == "unrequested_item"


def test_a_forged_or_missing_request_id_is_refused() -> None:
    assert reason(claim(request_id="rq-forged")) == "request_mismatch"
    assert reason(claim(request_id=None)) == "request_mismatch"


def test_another_policy_version_than_the_request_is_refused() -> None:
    assert reason(claim(policy_version="v999")) == "policy_mismatch"
    assert reason(claim(policy_version="v2")) == "policy_mismatch"


def test_a_label_that_is_no_category_of_the_policy_is_refused() -> None:
    assert reason(claim(label="totally-not-a-category")) == "unknown_category"
    assert reason(claim(label="")) == "unknown_category"  # an empty label is no category
    assert reason(GOOD, evidence(categories=None)) == "unknown_category"  # no such policy


def test_a_label_from_the_future_is_refused() -> None:
    year_2100 = 4102444800.0
    assert reason(claim(labeled_at=year_2100)) == "future_timestamp"
    assert reason(claim(labeled_at=1061.0)) == "future_timestamp"


@pytest.mark.parametrize("at", [math.nan, math.inf, -math.inf])
def test_a_time_that_is_no_time_is_refused_before_anything_else(at: float) -> None:
    assert reason(claim(labeled_at=at), signature=None) == "invalid_timestamp"


def test_every_reason_is_listed_once() -> None:
    assert len(set(REASONS)) == len(REASONS) == 8


def test_the_canonical_bytes_cover_every_field_but_the_signature() -> None:
    base = canonical_label(GOOD)
    for change in (
        {"item_id": "ad-2"},
        {"reviewer_id": "bob"},
        {"label": "benign"},
        {"policy_version": "v2"},
        {"request_id": None},
        {"labeled_at": 1000.5},
        {"schema_version": 2},
    ):
        assert canonical_label(claim(**change)) != base, change
    # a field's text cannot move into its neighbour (JSON, not a separator)
    a = canonical_label(claim(item_id='a","b', reviewer_id="c"))
    b = canonical_label(claim(item_id="a", reviewer_id='b","c'))
    assert a != b
    assert canonical_label(claim(reviewer_id="zoë")).isascii()


def test_keys_differ_by_secret_reviewer_and_nonce() -> None:
    keys = {
        derive_key(b"secret", "alice", "n1"),
        derive_key(b"other", "alice", "n1"),
        derive_key(b"secret", "bob", "n1"),
        derive_key(b"secret", "alice", "n2"),
    }
    assert len(keys) == 4


def test_a_signature_in_another_encoding_does_not_verify() -> None:
    sig = sign_label(KEY, GOOD)
    assert signature_valid(KEY, GOOD, sig)
    assert not signature_valid(KEY, GOOD, sig.upper())
    assert not signature_valid(KEY, GOOD, "é" * 64)
