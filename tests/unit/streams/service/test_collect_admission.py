"""Forged labels, sent the way an attacker who can produce to the labels topic would, through the
collector's batch path against a real redis-server (the unit session's own): each is refused
with its reason on the dead-letter topic, counted, and nothing in the store changes, the
store's policy list included. A label signed by its reviewer that answers a request (or a
second opinion the collector sent) is stored."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from redis.asyncio import Redis

from adapters.labels.admission import LabelClaim, derive_key, sign_label
from adapters.labels.keyring import ReviewerKeys
from adapters.labels.store import LabelStore, ReviewedItem
from adapters.policy.schema import Category, Policy, ReviewBand
from adapters.policy.store import PolicyStore
from streams.service.admission import LabelAdmission
from streams.service.collect import Collector, CollectResult
from streams.service.metrics import Metrics
from streams.service.outbox import RawRecord
from streams.wire.messages import DeadLetter, ReviewLabel, decode
from streams.wire.settings import PolicySettings
from tests.unit.streams.service.test_collect import TOPICS, FakeRoutings, FakeSink

SECRET = b"unit-test-secret"
NOW = 1_800_000_000.0
YEAR_2100 = 4_102_444_800.0


@dataclass
class World:
    redis: Redis
    prefix: str
    store: LabelStore
    keys: ReviewerKeys
    policies: PolicyStore
    collector: Collector
    sink: FakeSink
    metrics: Metrics
    alice: bytes


async def _world(redis: Redis, prefix: str) -> World:
    store, keys = LabelStore(redis, prefix), ReviewerKeys(redis, prefix, SECRET)
    policies = PolicyStore(redis, prefix)
    v1 = Policy(
        version="v1",
        description="Spam is refused.",
        categories=[Category(name="violating", definition="Spam.", block_threshold=0.5)],
        review_band=ReviewBand(low=0.3, high=0.7),
    )
    await policies.publish(v1, actor="test", now=NOW - 100)
    await store.register_reviewers(["alice", "bob", "carol"])
    alice = await keys.issue("alice")
    await keys.issue("bob")
    await keys.issue("carol")
    await store.record_requests(
        "v1",
        [ReviewedItem("ad-1", "text", None, 0.6, "uncertain", NOW - 50, request_id="rq-1")],
    )
    sink, metrics = FakeSink(), Metrics()
    admission = LabelAdmission(store, keys, policies, PolicySettings(), max_skew_s=300.0)
    collector = Collector(
        store=store,
        admission=admission,
        routings=FakeRoutings(),
        sink=sink,
        metrics=metrics,
        topics=TOPICS,
        worker="collector-1",
        clock=lambda: NOW,
    )
    return World(redis, prefix, store, keys, policies, collector, sink, metrics, alice)


def _doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "item_id": "ad-1",
        "reviewer_id": "alice",
        "label": "violating",
        "policy_version": "v1",
        "request_id": "rq-1",
        "labeled_at": NOW - 10,
    }
    doc.update(changes)
    return doc


def _signed(key: bytes, doc: dict[str, Any]) -> dict[str, Any]:
    claim = LabelClaim(
        item_id=doc["item_id"],
        reviewer_id=doc["reviewer_id"],
        label=doc["label"],
        policy_version=doc["policy_version"],
        request_id=doc.get("request_id"),
        labeled_at=doc["labeled_at"],
    )
    return {**doc, "signature": sign_label(key, claim)}


def _record(doc: dict[str, Any]) -> RawRecord:
    return RawRecord(TOPICS.review_labels, 0, 7, doc["item_id"].encode(), json.dumps(doc).encode())


async def _snapshot(redis: Redis, prefix: str) -> dict[bytes, bytes | None]:
    return {key: await redis.dump(key) async for key in redis.scan_iter(f"{prefix}:*")}


Forge = Callable[[World], dict[str, Any]]

FORGED: dict[str, tuple[Forge, str]] = {
    "an item never requested": (
        lambda w: _signed(w.alice, _doc(item_id="ad-never-streamed", request_id="rq-1")),
        "unrequested_item",
    ),
    "a forged policy version v999": (
        lambda w: _signed(w.alice, _doc(policy_version="v999")),
        "policy_mismatch",
    ),
    "an unpublished policy version v2": (
        lambda w: _signed(w.alice, _doc(policy_version="v2")),
        "policy_mismatch",
    ),
    "a label that is no category": (
        lambda w: _signed(w.alice, _doc(label="totally-not-a-category")),
        "unknown_category",
    ),
    "a label from the year 2100": (
        lambda w: _signed(w.alice, _doc(labeled_at=YEAR_2100)),
        "future_timestamp",
    ),
    "a forged request id": (
        lambda w: _signed(w.alice, _doc(request_id="rq-forged")),
        "request_mismatch",
    ),
    "no request id": (
        lambda w: _signed(w.alice, _doc(request_id=None)),
        "request_mismatch",
    ),
    "alice without a signature": (lambda w: _doc(), "unsigned_label"),
    "alice with a wrong signature": (
        lambda w: _signed(derive_key(b"guessed", "alice", "x"), _doc()),
        "bad_signature",
    ),
    "alice signed with bob's key": (
        lambda w: _signed(derive_key(SECRET, "bob", "guessed-nonce"), _doc()),
        "bad_signature",
    ),
    "an empty label": (lambda w: _signed(w.alice, _doc(label="")), "invalid_message"),
    "an unregistered reviewer": (
        lambda w: _signed(w.alice, _doc(reviewer_id="mallory")),
        "unregistered_reviewer",
    ),
}


def _dead_letters(sink: FakeSink) -> list[DeadLetter]:
    return [
        decode(value, DeadLetter)
        for topic, _key, value in sink.sent
        if topic == TOPICS.review_labels + ".dlq"
    ]


@pytest.mark.parametrize("case", sorted(FORGED))
def test_a_forged_label_is_dead_lettered_with_its_reason_and_changes_nothing(
    case: str, run_redis: Any, prefix: str
) -> None:
    forge, reason = FORGED[case]

    async def body(redis: Redis) -> tuple[CollectResult, World, bool, list[str]]:
        world = await _world(redis, prefix)
        before = await _snapshot(redis, prefix)
        history = [r.version for r in await world.policies.history()]
        result = await world.collector.handle([_record(forge(world))])
        unchanged = await _snapshot(redis, prefix) == before
        assert await world.store.policies() == set()  # v999 or v2 never enters the list
        assert [r.version for r in await world.policies.history()] == history
        return result, world, unchanged, [r.version for r in await world.policies.history()]

    result, world, unchanged, _ = run_redis(body)
    assert result.stored == [] and result.duplicates == 0
    letters = _dead_letters(world.sink)
    if reason == "invalid_message":  # refused when decoded, before any admission
        assert len(letters) == 1 and letters[0].reason not in ("", None)
        reason = letters[0].reason
    else:
        assert [dl.reason for dl in letters] == [reason]
    assert letters[0].source_topic == TOPICS.review_labels
    assert unchanged, "the store changed"
    counted = world.metrics.registry.get_sample_value("borderline_labels_total", {"result": reason})
    assert counted == 1.0


def test_a_signed_label_answering_a_request_is_stored_and_so_is_a_second_opinion(
    run_redis: Any, prefix: str
) -> None:
    async def body(redis: Redis) -> tuple[list[str], list[str], dict[str, str]]:
        world = await _world(redis, prefix)
        bob = await world.keys.key_for("bob")
        assert bob is not None
        first = await world.collector.handle(
            [
                _record(_signed(world.alice, _doc())),
                _record(_signed(bob, _doc(reviewer_id="bob", label="benign"))),
            ]
        )
        # they disagree: the collector sent a second opinion, and a label answering it counts
        assert len(first.second_opinions) == 1
        assert first.second_opinion_why == {"split": 1}  # one each, no strict majority
        second = first.second_opinions[0]
        carol = await world.keys.key_for("carol")
        assert carol is not None
        answer = _signed(carol, _doc(reviewer_id="carol", request_id=second.request_id))
        then = await world.collector.handle([_record(answer)])
        stored = [label.reviewer_id for label in first.stored + then.stored]
        letters = [dl.reason for dl in _dead_letters(world.sink)]
        return stored, letters, await world.store.votes("v1", "ad-1")

    stored, letters, votes = run_redis(body)
    assert stored == ["alice", "bob", "carol"]
    assert letters == []
    assert votes == {"alice": "violating", "bob": "benign", "carol": "violating"}


def test_a_rotated_key_refuses_labels_signed_with_the_old_one(run_redis: Any, prefix: str) -> None:
    async def body(redis: Redis) -> list[str]:
        world = await _world(redis, prefix)
        old = world.alice
        new = await world.keys.issue("alice")
        assert new != old and await world.keys.key_for("alice") == new
        await world.collector.handle([_record(_signed(old, _doc()))])
        await world.collector.handle([_record(_signed(new, _doc()))])
        return [dl.reason for dl in _dead_letters(world.sink)]

    assert run_redis(body) == ["bad_signature"]


def test_keys_are_issued_once_by_ensure_and_never_stored(run_redis: Any, prefix: str) -> None:
    async def body(redis: Redis) -> None:
        keys = ReviewerKeys(redis, prefix, SECRET)
        first = await keys.ensure(["dora", "eve"])
        assert await keys.ensure(["dora", "eve"]) == first  # issued once
        stored = await redis.hgetall(f"{prefix}:reviewers:keys")
        for key in first.values():  # Redis holds nonces; no key appears in it
            assert all(key.hex().encode() not in v and key not in v for v in stored.values())
        assert await keys.key_for("nobody") is None and await keys.nonce_of("nobody") is None
        assert await ReviewerKeys(redis, prefix, b"other").key_for("dora") != first["dora"]
        with pytest.raises(ValueError, match="empty"):
            ReviewerKeys(redis, prefix, b"")

    run_redis(body)


def test_categories_come_from_the_published_policy_or_the_default(
    run_redis: Any, prefix: str
) -> None:
    async def body(redis: Redis) -> list[list[str] | None]:
        world = await _world(redis, prefix)
        admission = world.collector.admission
        assert isinstance(admission, LabelAdmission)
        defaults = LabelAdmission(
            world.store, world.keys, world.policies, PolicySettings(version="v0"), max_skew_s=1
        )
        return [
            await admission.categories("v1"),
            await admission.categories("v1"),  # cached
            await defaults.categories("v0"),  # never published: the configured default
            await admission.categories("v999"),
        ]

    assert run_redis(body) == [["violating"], ["violating"], ["violating"], None]


def test_the_store_lists_every_request_of_an_item(run_redis: Any, prefix: str) -> None:
    async def body(redis: Redis) -> list[dict[str, str]]:
        store = LabelStore(redis, prefix)
        # an item recorded before requests were listed: its own request still counts
        await redis.hset(
            f"{prefix}:review:item:old",
            mapping={"request_id": "rq-old", "policy_version": "v1", "text": "t"},
        )
        await store.record_asked("old", "rr-2", "v1")
        return [await store.requests_of("old"), await store.requests_of("none")]

    assert run_redis(body) == [{"rq-old": "v1", "rr-2": "v1"}, {}]


def test_the_collector_handles_a_batch_in_one_event_loop() -> None:
    # guard against a fake that would hide an un-awaited coroutine: handle is a coroutine
    assert asyncio.iscoroutinefunction(Collector.handle)


def test_a_refusal_read_from_a_redis_that_came_back_empty_is_asked_again_after_the_guard(
    run_redis: Any, prefix: str
) -> None:
    """Redis restarted empty in the middle of a batch: the label's key is not there when it is
    checked; the guard rebuilds the store (here: puts the nonce back) and the label is stored."""

    @dataclass
    class Guard:
        redis: Redis
        nonce: str
        asked: int = 0

        async def ensure(self) -> str | None:
            self.asked += 1  # the first look is before the batch, when Redis still had it all
            if (
                self.asked > 1
                and await self.redis.hget(f"{prefix}:reviewers:keys", "alice") is None
            ):
                await self.redis.hset(f"{prefix}:reviewers:keys", "alice", self.nonce)
                return "no epoch marker"
            return None

    async def body(redis: Redis) -> tuple[list[str], int]:
        world = await _world(redis, prefix)
        nonce = await world.keys.nonce_of("alice")
        assert nonce is not None
        guard = Guard(redis, nonce)
        world.collector.guard = guard  # type: ignore[assignment]
        await redis.hdel(f"{prefix}:reviewers:keys", "alice")  # lost with Redis, mid-batch
        world.collector.guard = None
        label = _record(_signed(world.alice, _doc()))
        assert (await world.collector._refusal(decode(label.value, ReviewLabel))) is not None
        world.collector.guard = guard  # type: ignore[assignment]
        result = await world.collector.handle([label])
        return [lab.reviewer_id for lab in result.stored], guard.asked

    stored, asked = run_redis(body)
    assert stored == ["alice"]
    assert asked == 2  # before the batch, and after the refusal: rebuilt, asked again, stored
