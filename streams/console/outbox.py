"""Labels given in the console on their way to ``moderation.review.labeled``.

A label waits ``undo_s`` seconds in Redis (so the reviewer can undo it), then a sender takes it
(atomically: a label undone is never sent, a label taken can no longer be undone), signs it with
the reviewer's key and produces it through the same schema as any client; the collector stores
it. A label taken but not confirmed sent (the process died) is taken again after ``retake_s``:
at-least-once, and the collector keeps the first label of (item, reviewer)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from streams.console.keys import ConsoleKeys, text
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


HOURS_KEPT = 7 * 24  # labels per reviewer per hour, for the lead's view

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

    async def put(
        self, label: ReviewLabel, *, now: float, also: Callable[[Pipeline], None] | None = None
    ) -> str:
        """Hold the label for ``undo_s``; the reviewer's last label is the one undo takes.
        ``also`` queues more commands in the same transaction (the audit entry)."""
        lid = label_id(label)
        async with self.redis.pipeline(transaction=True) as pipe:
            if also is not None:
                also(pipe)
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
        if not ids:
            return []
        raws = await self.redis.mget([self.keys.label(lid) for lid in ids])
        labels = [ReviewLabel.model_validate_json(raw) for raw in raws if raw is not None]
        signed = [await self.signer(label) for label in labels]
        await asyncio.gather(  # one produce request for the batch, acknowledged together
            *(
                self.producer.send_and_wait(self.topic, encode(s), key=s.item_id.encode())
                for s in signed
            )
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.keys.sending, *ids)  # a label gone was sent by another replica
            if signed:
                pipe.delete(*(self.keys.label(label_id(s)) for s in signed))
            for s in signed:
                hour = self.keys.labelled_in(int(s.labeled_at // 3600))
                pipe.hincrby(self.keys.labelled, s.reviewer_id, 1)
                pipe.hincrby(hour, s.reviewer_id, 1)
                pipe.expire(hour, HOURS_KEPT * 3600)
            await pipe.execute()
        return signed

    async def per_hour(self, *, now: float, hours: int) -> tuple[list[int], dict[str, list[int]]]:
        """Labels sent per reviewer in each of the last ``hours`` hours (the current one last):
        the hours (since the epoch) and reviewer -> counts in that order."""
        last = int(now // 3600)
        shown = list(range(last - hours + 1, last + 1))
        async with self.redis.pipeline(transaction=False) as pipe:
            for hour in shown:
                pipe.hgetall(self.keys.labelled_in(hour))
            counts = await pipe.execute()
        out: dict[str, list[int]] = {}
        for i, by_reviewer in enumerate(counts):
            for reviewer, n in by_reviewer.items():
                out.setdefault(text(reviewer), [0] * hours)[i] = int(n)
        return shown, dict(sorted(out.items()))

    async def waiting(self) -> int:
        return int(await self.redis.zcard(self.keys.pending)) + int(
            await self.redis.zcard(self.keys.sending)
        )
