"""The review-request ledger in Redis: which items were already sent to review under a policy
version, so that a redelivered item is not requested twice. Keys:
``{prefix}:review:requested:{policy_version}:{item_id}``. Marking happens only after the request
was delivered (at-least-once; the request id is deterministic for the rare duplicate)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from redis.asyncio import Redis

__all__ = ["RedisReviewLedger", "ReviewLedger"]


class ReviewLedger(Protocol):
    async def already_requested(
        self, policy_version: str, item_ids: Sequence[str]
    ) -> list[bool]: ...

    async def mark_requested(self, policy_version: str, item_ids: Sequence[str]) -> None: ...


class RedisReviewLedger:
    def __init__(self, redis: Redis, prefix: str, ttl_s: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s

    def key(self, policy_version: str, item_id: str) -> str:
        return f"{self.prefix}:review:requested:{policy_version}:{item_id}"

    async def already_requested(self, policy_version: str, item_ids: Sequence[str]) -> list[bool]:
        if not item_ids:
            return []
        values = await self.redis.mget([self.key(policy_version, i) for i in item_ids])
        return [v is not None for v in values]

    async def mark_requested(self, policy_version: str, item_ids: Sequence[str]) -> None:
        if not item_ids:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for item_id in item_ids:
                pipe.set(self.key(policy_version, item_id), b"1", ex=self.ttl_s)
            await pipe.execute()
