"""`borderline reviewers add | rotate-key | list` and the simulated panel's keys, on the unit
session's redis-server: a new reviewer's key is printed once and its nonce (never the key) is
recorded; rotating gives a new key and the old one stops verifying; an unknown reviewer is one
line and a non-zero exit; the panel signs with the keys `panel_keys` issues."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import Redis

from adapters.labels.admission import signature_valid
from adapters.labels.keyring import ReviewerKeys
from adapters.labels.store import LabelStore
from streams.cli.review import _add, _rotate, reviewers_command
from streams.demo.panel import _signed, panel_keys
from streams.service.admission import claim_of
from streams.wire.messages import ReviewLabel
from streams.wire.settings import Settings

SECRET = b"cli-test-secret"


@dataclass
class Journal:
    """A `ReviewerJournal` and `KeyJournal` that remembers what it was told."""

    told: list[tuple[str, ...]] = field(default_factory=list)

    async def reviewers_added(self, reviewer_ids: Sequence[str]) -> None:
        self.told.append(("added", *reviewer_ids))

    async def reviewer_cleared(self, reviewer_id: str) -> None:
        self.told.append(("cleared", reviewer_id))

    async def reviewer_key_issued(self, reviewer_id: str, nonce: str) -> None:
        self.told.append(("key", reviewer_id, nonce))


def test_add_prints_each_new_key_once_and_records_only_its_nonce(
    run_redis: Any, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = Journal()

    async def body(redis: Redis) -> tuple[bytes | None, bytes | None]:
        store = LabelStore(redis, prefix, journal=journal)
        keys = ReviewerKeys(redis, prefix, SECRET, journal=journal)
        assert await _add(store, keys, ["alice", "bob", "alice"]) == 0
        assert await _add(store, keys, ["alice"]) == 0  # again: the key is not shown again
        return await keys.key_for("alice"), await keys.key_for("bob")

    alice, bob = run_redis(body)
    out = capsys.readouterr().out
    assert alice is not None and bob is not None
    assert out.count(alice.hex()) == 1 and out.count(bob.hex()) == 1
    assert "alice: already has a signing key" in out
    assert "registered 2 new reviewer(s); 2 in all" in out
    assert "registered 0 new reviewer(s); 2 in all" in out
    assert [t[:2] for t in journal.told] == [("added", "alice"), ("key", "alice"), ("key", "bob")]
    for entry in journal.told:  # no key is ever recorded
        assert alice.hex() not in entry and bob.hex() not in entry


def test_rotate_key_replaces_the_key_and_refuses_an_unknown_reviewer(
    run_redis: Any, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    label = ReviewLabel(
        item_id="ad-1", reviewer_id="alice", label="benign", policy_version="v1", labeled_at=1.0
    )

    async def body(redis: Redis) -> tuple[int, int, bool, bool]:
        store, keys = LabelStore(redis, prefix), ReviewerKeys(redis, prefix, SECRET)
        await _add(store, keys, ["alice"])
        old = await keys.key_for("alice")
        assert old is not None
        signed = _signed(label, {"alice": old})
        assert signed.signature is not None
        ok = await _rotate(store, keys, "alice")
        new = await keys.key_for("alice")
        assert new is not None and new != old
        unknown = await _rotate(store, keys, "mallory")
        return (
            ok,
            unknown,
            signature_valid(old, claim_of(label), signed.signature),
            signature_valid(new, claim_of(label), signed.signature),
        )

    ok, unknown, with_old, with_new = run_redis(body)
    assert (ok, unknown, with_old, with_new) == (0, 2, True, False)
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[-1] == "error: 'mallory' is not a registered reviewer (borderline reviewers add ID)"
    )


def test_list_says_who_has_a_key(
    run_redis: Any, redis_url: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def setup(redis: Redis) -> None:
        await LabelStore(redis, prefix).register_reviewers(["alice", "old-timer"])
        await ReviewerKeys(redis, prefix, SECRET).issue("alice")

    run_redis(setup)
    settings = Settings.model_validate(
        {
            "kafka": {"bootstrap_servers": "127.0.0.1:1"},
            "redis": {"url": redis_url, "key_prefix": prefix},
            "review": {"key_secret": "x"},
        }
    )
    args = argparse.Namespace(action="list")
    assert run_redis(lambda _r: reviewers_command(args, settings)) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split() for line in out] == [
        ["alice", "active", "key"],
        ["old-timer", "active", "no", "key"],
    ]


def test_the_panel_signs_with_the_keys_it_is_given(
    run_redis: Any, redis_url: str, prefix: str
) -> None:
    settings = Settings.model_validate(
        {
            "kafka": {"bootstrap_servers": "127.0.0.1:1"},
            "redis": {"url": redis_url, "key_prefix": prefix},
            "review": {"key_secret": "s3"},
        }
    )
    label = ReviewLabel(
        item_id="ad-1", reviewer_id="ann", label="benign", policy_version="v1", labeled_at=1.0
    )

    async def body(redis: Redis) -> tuple[dict[str, bytes], dict[str, bytes], set[str]]:
        first = await panel_keys(settings, ["ann", "ben"], register=True)
        again = await panel_keys(settings, ["ann", "ben"])
        return first, again, await LabelStore(redis, prefix).registered()

    first, again, registered = run_redis(body)
    assert first == again and registered == {"ann", "ben"}
    signed = _signed(label, first)
    assert signed.signature and signature_valid(first["ann"], claim_of(label), signed.signature)
    assert _signed(label, {}).signature is None  # no key: unsigned (the collector refuses it)
