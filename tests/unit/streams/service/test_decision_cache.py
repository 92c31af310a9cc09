"""Unit tests for streams.service.decision_cache: which texts count as one creative (whitespace,
case, NFKC, tracking parameters, and what is kept), keys that change with the model, the adapter
and the policy version, the packed scores, and the LRU's bounds in entries and bytes."""

from __future__ import annotations

import numpy as np
import pytest

from streams.service.decision_cache import (
    ENTRY_OVERHEAD_BYTES,
    DecisionLRU,
    cache_key,
    normalise,
    pack_scores,
    text_hash,
    unpack_scores,
)

# --- normalisation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "canonical"),
    [
        ("Cheap  pills\n\ttoday ", "cheap pills today"),  # whitespace runs and ends
        ("CHEAP Pills Today", "cheap pills today"),  # case
        ("Straße", "strasse"),  # casefold, not lower
        ("ｃｈｅａｐ　ｐｉｌｌｓ", "cheap pills"),  # full-width forms and ideographic space (NFKC)
        ("ﬁne print", "fine print"),  # ligature (NFKC)
        ("go https://ad.example/x?utm_source=fb&utm_Medium=cpc", "go https://ad.example/x"),
        ("https://ad.example/x?id=3&gclid=abc&fbclid=d&msclkid=e", "https://ad.example/x?id=3"),
        ("https://ad.example/x?UTM_CAMPAIGN=1&b=2#top", "https://ad.example/x?b=2#top"),
        ("HTTPS://AD.EXAMPLE/?_ga=1.2&&a=1", "https://ad.example/?a=1"),
    ],
)
def test_normalise_folds_what_does_not_make_another_creative(variant: str, canonical: str) -> None:
    assert normalise(variant) == canonical


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("buy pills", "buy pill"),
        ("https://ad.example/x?id=3", "https://ad.example/x?id=4"),  # other parameters count
        ("https://ad.example/x?utm=1", "https://ad.example/x"),  # not a utm_ parameter
        ("see ad.example/x?utm_source=fb", "see ad.example/x"),  # no scheme: not a URL here
        ("café", "cafe"),  # accents are kept (NFKC composes, it does not strip)
    ],
)
def test_normalise_keeps_what_does(one: str, other: str) -> None:
    assert text_hash(one) != text_hash(other)


def test_text_hash_is_of_the_normalised_text_and_takes_any_code_point() -> None:
    assert text_hash("Hello  World") == text_hash("hello world")
    assert len(text_hash("\ud800 lone surrogate")) == 64  # hostile input hashes, never raises
    assert text_hash("") == text_hash("   ")


# --- keys ----------------------------------------------------------------------------------------


def test_key_changes_with_a_swap_a_policy_change_or_another_base() -> None:
    digest = text_hash("win a prize")
    key = cache_key(digest, model="m1", adapter="a1", policy="v1")
    assert key == cache_key(text_hash("WIN a  prize"), model="m1", adapter="a1", policy="v1")
    others = {
        cache_key(digest, model="m1", adapter="a2", policy="v1"),  # swap
        cache_key(digest, model="m1", adapter="a1", policy="v2"),  # policy change
        cache_key(digest, model="m2", adapter="a1", policy="v1"),  # another base
        cache_key(text_hash("win a prize!"), model="m1", adapter="a1", policy="v1"),
    }
    assert key not in others and len(others) == 4


def test_key_parts_cannot_run_into_each_other() -> None:
    digest = text_hash("x")
    assert cache_key(digest, model="m", adapter="a1", policy="v") != cache_key(
        digest, model="m", adapter="a", policy="1v"
    )


# --- packed scores -------------------------------------------------------------------------------


def test_scores_round_trip_in_float32() -> None:
    p = np.array([0.1, 0.7, 0.2], dtype=np.float32)
    e = np.linspace(-1, 1, 8, dtype=np.float32)
    blob = pack_scores(p, e)
    assert len(blob) == 4 + 4 * 11
    got = unpack_scores(blob, 3, 8)
    assert got is not None
    np.testing.assert_array_equal(got[0], p)
    np.testing.assert_array_equal(got[1], e)
    assert got[0].dtype == np.float32 and got[0].flags.writeable


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        pack_scores(np.ones(2), np.ones(9)),  # another label count, same length
        pack_scores(np.ones(3), np.ones(7)),  # another dimension
        pack_scores(np.array([np.nan, 0.5, 0.5]), np.ones(8)),  # not finite
        pack_scores(np.ones(3), np.ones(8))[:-1],  # cut short
    ],
)
def test_a_damaged_or_foreign_entry_is_a_miss(blob: bytes) -> None:
    assert unpack_scores(blob, 3, 8) is None


# --- the LRU -------------------------------------------------------------------------------------


def test_lru_evicts_the_least_recently_used_at_the_item_bound() -> None:
    lru = DecisionLRU(max_items=3, max_bytes=1 << 20)
    for k in "abc":
        lru.put(k, b"v" + k.encode())
    assert lru.get("a") == b"va"  # a is now the most recent
    lru.put("d", b"vd")
    assert lru.get("b") is None and lru.get("a") == b"va" and lru.get("d") == b"vd"
    assert len(lru) == 3 and lru.evictions == 1


def test_lru_holds_its_byte_bound_and_counts_bytes_exactly() -> None:
    value = bytes(100)
    one = DecisionLRU.cost("k0", value)
    assert one == 2 + 100 + ENTRY_OVERHEAD_BYTES
    lru = DecisionLRU(max_items=1000, max_bytes=3 * one + one // 2)
    for i in range(10):
        lru.put(f"k{i}", value)
        assert lru.bytes <= lru.max_bytes
    assert len(lru) == 3 and lru.bytes == 3 * one and lru.evictions == 7
    assert [lru.get(f"k{i}") is not None for i in range(10)] == [False] * 7 + [True] * 3


def test_lru_replacing_an_entry_recounts_it_and_an_oversized_one_is_not_kept() -> None:
    lru = DecisionLRU(max_items=10, max_bytes=1000)
    lru.put("k", bytes(10))
    lru.put("k", bytes(20))
    assert len(lru) == 1 and lru.bytes == DecisionLRU.cost("k", bytes(20))
    lru.put("big", bytes(1000))
    assert lru.get("big") is None and lru.get("k") is not None and lru.evictions == 0
    lru.put("k", bytes(2000))  # replaced by something too big: gone, bytes back to zero
    assert len(lru) == 0 and lru.bytes == 0


@pytest.mark.parametrize(("items", "size"), [(0, 100), (10, 0)])
def test_lru_bounds_must_be_positive(items: int, size: int) -> None:
    with pytest.raises(ValueError, match="bounds must be positive"):
        DecisionLRU(max_items=items, max_bytes=size)
