"""The review-request ledger on a real redis-server (the unit session's own, on a unix socket):
an item is "already requested" only after it was marked, under the same policy version, and each
mark carries the ledger's time to live."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from streams.service.ledger import RedisReviewLedger, ReviewLedger


def test_marked_items_are_already_requested_under_their_policy_only(
    run_redis: Any, prefix: str
) -> None:
    async def body(redis: Redis) -> None:
        ledger: ReviewLedger = RedisReviewLedger(redis, prefix, ttl_s=3600)
        assert await ledger.already_requested("v1", []) == []
        assert await ledger.already_requested("v1", ["a", "b"]) == [False, False]
        await ledger.mark_requested("v1", [])
        await ledger.mark_requested("v1", ["b", "c"])
        await ledger.mark_requested("v1", ["c"])  # marking again is harmless
        assert await ledger.already_requested("v1", ["a", "b", "c"]) == [False, True, True]
        assert await ledger.already_requested("v2", ["a", "b", "c"]) == [False, False, False]
        # the documented key, with its time to live
        ttl = await redis.ttl(f"{prefix}:review:requested:v1:b")
        assert 3590 <= ttl <= 3600

    run_redis(body)
