"""The console's background work: review requests from ``moderation.review.requested`` into the
queue (a consumer group of its own, from the earliest offset, committed after Redis took them),
labels out of the outbox once their undo time is over, and expired requests closed. A broker or
Redis error in sending or sweeping is logged and tried again; anything else ends the task, and
`borderline console` then exits non-zero (a supervisor restarts it) rather than serve without
its background work."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from streams.console.metrics import ConsoleMetrics
from streams.console.outbox import LabelOutbox
from streams.console.queue import TaskQueue
from streams.wire.errors import MessageError
from streams.wire.messages import ReviewRequest, decode

__all__ = ["Background"]

log = logging.getLogger(__name__)


@dataclass
class Background:
    queue: TaskQueue
    outbox: LabelOutbox
    metrics: ConsoleMetrics
    active_policy: Callable[[], Awaitable[str]]
    clock: Callable[[], float] = time.time
    send_every_s: float = 0.2
    expire_every_s: float = 30.0

    async def feed(self, consumer: AIOKafkaConsumer) -> None:
        """Queue every review request read; a malformed one is logged and counted, not
        queued (the console only reads this topic)."""
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            for records in batches.values():
                for record in records:
                    try:
                        request = decode(record.value, ReviewRequest)
                    except MessageError as exc:
                        log.warning("review request not queued: %s", exc)
                        self.metrics.actions.labels(action="bad_request").inc()
                        continue
                    await self.queue.add(request)
            if batches:
                await consumer.commit()

    async def send_labels(self) -> None:
        while True:
            try:
                sent = await self.outbox.send_due(now=self.clock())
                self.metrics.labels_sent.inc(len(sent))
            except (OSError, RedisError, KafkaError):  # said, and tried again (at-least-once)
                log.exception("labels not sent yet; retrying")
                await asyncio.sleep(1.0)
            await asyncio.sleep(self.send_every_s)

    async def expire_requests(self) -> None:
        while True:
            try:
                policy = await self.active_policy()
                now = self.clock()
                closed = await self.queue.expire(policy, now=now)
                if closed:
                    log.info("closed %d review request(s) as expired (policy %s)", closed, policy)
                    self.metrics.requests_expired.labels(policy=policy).inc(closed)
                depth = await self.queue.depth(policy)
                oldest = await self.queue.oldest(policy)
                self.metrics.queue_open.set(sum(depth.values()))
                self.metrics.oldest_request_age.set(0 if oldest is None else now - oldest)
            except (OSError, RedisError):
                log.exception("expiry sweep failed; retrying")
            await asyncio.sleep(self.expire_every_s)
