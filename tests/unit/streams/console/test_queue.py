"""The console's review queue on a real redis-server: priority order, leases (one opinion, one
reviewer; an expired lease returns it), never twice, skip, undo, opinions wanted, and requests
closed as expired in the label store's open set too."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from adapters.labels.store import LabelStore, ReviewedItem
from streams.console.queue import TaskQueue
from streams.wire.messages import ReviewReason, ReviewRequest
from tests.unit.conftest import RunRedis

NOW = 1_900_000_000.0


def request(
    item: str,
    priority: float,
    *,
    at: float = NOW,
    already: list[str] | None = None,
    reason: ReviewReason = ReviewReason.UNCERTAIN,
) -> ReviewRequest:
    return ReviewRequest(
        request_id=f"rr-{item}",
        item_id=item,
        text=f"text of {item}",
        reason=reason,
        probabilities={"violating": 0.5},
        policy_version="v1",
        priority=priority,
        requested_at=at,
        already_labeled_by=already or [],
    )


def test_highest_priority_first_one_lease_per_opinion_and_held_task_returned(
    run_redis: RunRedis, prefix: str
) -> None:
    async def body(redis: Redis) -> None:
        q = TaskQueue(redis, prefix, lease_s=60)
        for item, p in [("a", 0.2), ("b", 0.9), ("c", 0.5)]:
            await q.add(request(item, p))
        await q.add(request("b", 0.9))  # a duplicate delivery changes nothing
        first = await q.claim("v1", "alice", now=NOW)
        assert first is not None and first.request.item_id == "b" and first.fresh
        again = await q.claim("v1", "alice", now=NOW + 1)
        assert again is not None and again.request.item_id == "b" and not again.fresh
        other = await q.claim("v1", "bob", now=NOW)
        assert other is not None and other.request.item_id == "c"
        assert await q.depth("v1") == {"uncertain": 3}

    run_redis(body)


def test_an_expired_lease_returns_the_opinion_and_a_late_answer_is_refused(
    run_redis: RunRedis, prefix: str
) -> None:
    async def body(redis: Redis) -> None:
        q = TaskQueue(redis, prefix, lease_s=60)
        await q.add(request("a", 0.5))
        assert (await q.claim("v1", "alice", now=NOW)).request.item_id == "a"
        assert await q.claim("v1", "bob", now=NOW + 30) is None  # leased to alice
        taken = await q.claim("v1", "bob", now=NOW + 61)  # alice's lease ran out
        assert taken is not None and taken.request.item_id == "a"
        assert not await q.finish("v1", "a", "alice", now=NOW + 62)
        assert await q.finish("v1", "a", "bob", now=NOW + 62)
        assert not await q.finish("v1", "a", "bob", now=NOW + 63)  # answered once
        assert await q.claim("v1", "alice", now=NOW + 64) is None  # closed: one opinion
        assert await q.depth("v1") == {} and await q.oldest("v1") is None

    run_redis(body)


def test_never_twice_skip_release_undo_and_opinions_wanted(
    run_redis: RunRedis, prefix: str
) -> None:
    async def body(redis: Redis) -> None:
        q = TaskQueue(redis, prefix, lease_s=60, opinions=2)
        await q.add(request("a", 0.5))
        await q.add(request("b", 0.1, already=["carol"]))
        assert (await q.claim("v1", "alice", now=NOW)).request.item_id == "a"
        assert await q.finish("v1", "a", "alice", now=NOW)
        # two opinions wanted: bob gets a; alice never again, she gets b
        assert (await q.claim("v1", "bob", now=NOW)).request.item_id == "a"
        assert (await q.claim("v1", "alice", now=NOW)).request.item_id == "b"
        # carol labelled b already (named in the request): nothing for her but a, held by bob
        assert await q.claim("v1", "carol", now=NOW) is None
        assert await q.release("v1", "a", "bob")
        assert not await q.release("v1", "a", "bob")
        assert (await q.claim("v1", "carol", now=NOW)).request.item_id == "a"
        assert await q.release("v1", "a", "carol", skip=True)
        assert await q.claim("v1", "carol", now=NOW) is None  # skipped: not offered again
        # undo: alice's answer to a is taken back, a is her task again
        assert await q.reopen("v1", "a", "alice", now=NOW)
        assert not await q.reopen("v1", "a", "alice", now=NOW)
        assert (await q.claim("v1", "alice", now=NOW)).request.item_id == "a"

    run_redis(body)


def test_labels_stored_by_any_client_count_as_opinions(run_redis: RunRedis, prefix: str) -> None:
    async def body(redis: Redis) -> None:
        q = TaskQueue(redis, prefix, lease_s=60)
        store = LabelStore(redis, prefix)
        await q.add(request("a", 0.5))
        await q.add(request("b", 0.4))
        await store.add_label("v1", "a", "randy", "benign", NOW)  # e.g. over Kafka
        got = await q.claim("v1", "alice", now=NOW)
        assert got is not None and got.request.item_id == "b"

    run_redis(body)


def test_expired_requests_are_closed_in_the_queue_and_the_open_set(
    run_redis: RunRedis, prefix: str
) -> None:
    async def body(redis: Redis) -> None:
        q = TaskQueue(redis, prefix, lease_s=60, max_age_s=3600)
        store = LabelStore(redis, prefix)
        old, new = request("old", 0.9, at=NOW - 7200), request("new", 0.1, at=NOW)
        for r in (old, new):
            await q.add(r)
        items = [
            ReviewedItem("old", "t", None, 0.5, "uncertain", NOW - 7200),
            ReviewedItem("stale", "t", None, 0.5, "uncertain", NOW - 9000),
            ReviewedItem("new", "t", None, 0.5, "uncertain", NOW),
        ]
        await store.record_requests("v1", items)
        assert await store.open_count("v1") == 3
        assert await q.oldest("v1") == NOW - 7200
        assert await q.expire("v1", now=NOW) == 2
        assert await q.expire("v1", now=NOW) == 0
        assert await store.open_count("v1") == 1
        assert await q.expired_total("v1") == 2
        got = await q.claim("v1", "alice", now=NOW)
        assert got is not None and got.request.item_id == "new"

    run_redis(body)


def test_concurrent_claims_never_share_an_opinion(run_redis: RunRedis, prefix: str) -> None:
    async def body(redis: Redis) -> None:
        q = TaskQueue(redis, prefix, lease_s=60)
        for i in range(20):
            await q.add(request(f"i{i}", i / 20))
        got = await asyncio.gather(*(q.claim("v1", f"r{n}", now=NOW) for n in range(30)))
        items = [g.request.item_id for g in got if g is not None]
        assert len(items) == 20 and len(set(items)) == 20

    run_redis(body)
