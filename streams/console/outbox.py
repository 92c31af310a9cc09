"""Labels given in the console on their way to ``moderation.review.labeled``.

A label waits ``undo_s`` seconds in Redis (so the reviewer can undo it), then a sender takes it
(atomically: a label undone is never sent, a label taken can no longer be undone), signs it with
the reviewer's key and produces it through the same schema as any client; the collector stores
it. A label taken but not confirmed sent (the process died) is taken again after ``retake_s``:
at-least-once, and the collector keeps the first label of (item, reviewer)."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from streams.console.keys import ConsoleKeys
from streams.service.record import Producer
from streams.wire.messages import ReviewLabel, encode

__all__ = ["LabelOutbox", "LabelSigner", "label_id"]

# KEYS: pending, sending. ARGV: now, limit, retake before.
_TAKE = """
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])) do
  redis.call('ZADD', KEYS[2], ARGV[1], id)
  table.insert(out, id)
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], ARGV[1], id)
  table.insert(out, id)
end
return out
"""

# KEYS: pending, undo, label prefix. ARGV: none.
_UNDO = """
local id = redis.call('GET', KEYS[2])
if not id then return false end
redis.call('DEL', KEYS[2])
if redis.call('ZREM', KEYS[1], id) == 0 then return false end
local label = redis.call('GET', KEYS[3] .. id)
redis.call('DEL', KEYS[3] .. id)
return label
"""


LabelSigner = Callable[[ReviewLabel], Awaitable[ReviewLabel]]
"""Signs a label with its reviewer's key (issue 14: the collector refuses unsigned labels)."""


def label_id(label: ReviewLabel) -> str:
    """One id per (policy, item, reviewer): a label given twice is one label.

    >>> from streams.wire.messages import ReviewLabel
    >>> label_id(ReviewLabel(item_id="ad-1", reviewer_id="alice", label="benign",
    ...                      policy_version="v1", labeled_at=1.0))
    'v1|ad-1|alice'
    """
    return f"{label.policy_version}|{label.item_id}|{label.reviewer_id}"


@dataclass
class LabelOutbox:
    redis: Redis
    keys: ConsoleKeys
    producer: Producer
    topic: str
    signer: LabelSigner
    undo_s: float
    retake_s: float = 30.0

    def __post_init__(self) -> None:
        self._take: Any = self.redis.register_script(_TAKE)
        self._undo: Any = self.redis.register_script(_UNDO)

    async def put(self, label: ReviewLabel, *, now: float) -> str:
        """Hold the label for ``undo_s``; the reviewer's last label is the one undo takes."""
        lid = label_id(label)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.label(lid), label.model_dump_json())
            pipe.zadd(self.keys.pending, {lid: now + self.undo_s}, nx=True)
            if self.undo_s > 0:
                ttl = max(1, math.ceil(self.undo_s))
                pipe.set(self.keys.undo(label.reviewer_id), lid, ex=ttl)
            await pipe.execute()
        return lid

    async def undo(self, reviewer: str) -> ReviewLabel | None:
        """Take back the reviewer's last label if it was not sent yet."""
        raw = await self._undo(
            keys=[self.keys.pending, self.keys.undo(reviewer), self.keys.label("")], args=[]
        )
        return None if not raw else ReviewLabel.model_validate_json(raw)

    async def send_due(self, *, now: float, limit: int = 100) -> list[ReviewLabel]:
        """Sign and produce every label whose undo time is over; return them."""
        ids = [
            i.decode()
            for i in await self._take(
                keys=[self.keys.pending, self.keys.sending],
                args=[repr(now), limit, repr(now - self.retake_s)],
            )
        ]
        sent = []
        for lid in ids:
            raw = await self.redis.get(self.keys.label(lid))
            if raw is None:  # sent by another replica meanwhile
                await self.redis.zrem(self.keys.sending, lid)
                continue
            label = await self.signer(ReviewLabel.model_validate_json(raw))
            await self.producer.send_and_wait(self.topic, encode(label), key=label.item_id.encode())
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self.keys.sending, lid)
                pipe.delete(self.keys.label(lid))
                pipe.hincrby(self.keys.labelled, label.reviewer_id, 1)
                await pipe.execute()
            sent.append(label)
        return sent

    async def waiting(self) -> int:
        return int(await self.redis.zcard(self.keys.pending)) + int(
            await self.redis.zcard(self.keys.sending)
        )
