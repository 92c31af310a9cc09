"""The console's background work: review requests from ``moderation.review.requested`` into the
queue (a consumer group of its own, from the earliest offset, committed after Redis took them;
each batch fed and each commit noted in the `Progress` behind ``/healthz``),
labels out of the outbox once their undo time is over, and expired requests closed. A broker or
Redis error is retried under the project's one policy (`streams.service.retry`: backoff with
jitter until the target has been down for the outage budget), so the console rides out a broker
restart; past the budget, or on anything else, the task ends and `borderline console` exits
non-zero (a supervisor restarts it) rather than serve without its background work."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from aiokafka import TopicPartition

from streams.console.metrics import ConsoleMetrics
from streams.console.outbox import LabelOutbox
from streams.console.queue import TaskQueue
from streams.service.health import Progress
from streams.service.retry import Retrying, RetryPolicy
from streams.wire.errors import MessageError
from streams.wire.messages import ReviewRequest, decode

__all__ = ["Background"]

log = logging.getLogger(__name__)


class RequestReader(Protocol):
    """What the feed needs of its consumer (aiokafka's `AIOKafkaConsumer`)."""

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]: ...

    async def commit(self) -> None: ...


@dataclass
class Background:
    queue: TaskQueue
    outbox: LabelOutbox
    metrics: ConsoleMetrics
    active_policy: Callable[[], Awaitable[str]]
    clock: Callable[[], float] = time.time
    retry: Retrying = field(default_factory=lambda: Retrying(RetryPolicy()))
    send_every_s: float = 0.2
    expire_every_s: float = 30.0
    progress: Progress | None = None  # the feed's, read by /healthz (None: not reported)

    async def feed(self, consumer: RequestReader) -> None:
        """Queue every review request read; a malformed one is logged and counted, not
        queued (the console only reads this topic). Committed once Redis took the batch: a
        batch read again after a failure is queued again, which changes nothing."""
        while True:
            batches = await self.retry(
                "kafka", lambda: consumer.getmany(timeout_ms=500, max_records=500)
            )
            requests = []
            for records in batches.values():
                for record in records:
                    try:
                        requests.append(decode(record.value, ReviewRequest))
                    except MessageError as exc:
                        log.warning("review request not queued: %s", exc)
                        self.metrics.actions.labels(action="bad_request").inc()
            for request in requests:
                await self.retry("redis", partial(self.queue.add, request))
            if batches:
                await self.retry("kafka", consumer.commit)
                if self.progress is not None:
                    self.progress.handled(now=self.clock())
                    self.progress.committed(now=self.clock())

    async def send_labels(self) -> None:
        """Send the labels whose undo time is over, every ``send_every_s`` (a batch that failed
        is sent again: at-least-once, and the collector keeps the first label of a reviewer)."""
        while True:
            sent = await self.retry("kafka", lambda: self.outbox.send_due(now=self.clock()))
            self.metrics.labels_sent.inc(len(sent))
            await asyncio.sleep(self.send_every_s)

    async def expire_requests(self) -> None:
        while True:
            await self.retry("redis", self._sweep)
            await asyncio.sleep(self.expire_every_s)

    async def _sweep(self) -> None:
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
