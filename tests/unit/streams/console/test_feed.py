"""The console's background work rides out a broker error, on a real redis-server: reading,
committing and sending are retried under the project's retry policy (no request lost, no label
lost), and a broker gone for longer than the outage budget ends the task with one
`InfrastructureError` (the console then exits non-zero for its supervisor)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, RequestTimedOutError
from redis.asyncio import Redis

from streams.console.feed import Background
from streams.console.keys import ConsoleKeys
from streams.console.metrics import ConsoleMetrics
from streams.console.outbox import LabelOutbox
from streams.console.queue import TaskQueue
from streams.service.outage import InfrastructureError
from streams.service.retry import Retrying, RetryPolicy
from streams.wire.messages import ReviewReason, ReviewRequest, encode
from tests.unit.conftest import RunRedis
from tests.unit.streams.console.test_outbox import FakeProducer, label, sign

TP = TopicPartition("moderation.review.requested", 0)


@dataclass
class Record:
    value: bytes


class FlakyConsumer:
    """Fails ``failures`` reads and then one commit with the errors aiokafka raises when the
    broker is gone, then serves one batch (a request, and one that is not JSON)."""

    def __init__(self, failures: int, batch: list[bytes]) -> None:
        self.failures = failures
        self.batch = batch
        self.commits = 0
        self.commit_failed = False

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]:
        if self.failures:
            self.failures -= 1
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9)]")
        batch, self.batch = self.batch, []
        await asyncio.sleep(0.001)
        return {TP: [Record(v) for v in batch]} if batch else {}

    async def commit(self) -> None:
        if not self.commit_failed:
            self.commit_failed = True
            raise RequestTimedOutError()
        self.commits += 1


class FlakyProducer(FakeProducer):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def send_and_wait(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> Any:
        if self.failures:
            self.failures -= 1
            raise KafkaConnectionError("Connection at 127.0.0.1:9 closed")
        return await super().send_and_wait(topic, value, key)


def _retry(budget_s: float = 30.0) -> Retrying:
    async def no_wait(_: float) -> None:
        await asyncio.sleep(0)

    return Retrying(RetryPolicy(budget_s=budget_s, base_s=0.01, max_s=0.01), sleep=no_wait)


def _background(redis: Redis, prefix: str, producer: FakeProducer, retry: Retrying) -> Background:
    async def active() -> str:
        return "v1"

    queue = TaskQueue(redis, prefix, lease_s=60)
    outbox = LabelOutbox(redis, ConsoleKeys(prefix), producer, "labels", sign, undo_s=0, retake_s=0)
    return Background(queue, outbox, ConsoleMetrics(), active, retry=retry, send_every_s=0.01)


async def _until(done: Callable[[], Awaitable[bool]], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not await done():
        assert time.monotonic() < deadline, "not done in time"
        await asyncio.sleep(0.01)


REQUEST = ReviewRequest(
    request_id="rr-a",
    item_id="a",
    text="buy now",
    reason=ReviewReason.UNCERTAIN,
    probabilities={"violating": 0.5},
    policy_version="v1",
    priority=0.5,
    requested_at=time.time(),
)


def test_requests_are_read_through_a_broker_outage(run_redis: RunRedis, prefix: str) -> None:
    async def body(redis: Redis) -> None:
        consumer = FlakyConsumer(failures=3, batch=[encode(REQUEST), b"not json"])
        bg = _background(redis, prefix, FakeProducer(), _retry())
        task = asyncio.create_task(bg.feed(consumer))

        async def committed() -> bool:
            assert not task.done(), task  # the feed never ended on the broker's errors
            return consumer.commits == 1

        await _until(committed)
        task.cancel()
        assert (await bg.queue.claim("v1", "alice", now=time.time())) is not None
        assert bg.retry.outages.down_for("kafka") is None  # over: the broker answered

    run_redis(body)


def test_labels_are_sent_through_a_broker_outage(run_redis: RunRedis, prefix: str) -> None:
    async def body(redis: Redis) -> None:
        producer = FlakyProducer(failures=4)
        bg = _background(redis, prefix, producer, _retry())
        await bg.outbox.put(label("a"), now=time.time())
        task = asyncio.create_task(bg.send_labels())

        async def sent() -> bool:
            assert not task.done(), task
            return len(producer.sent) == 1

        await _until(sent)
        await asyncio.sleep(0.05)
        task.cancel()
        assert len(producer.sent) == 1 and await bg.outbox.waiting() == 0

    run_redis(body)


def test_a_broker_gone_past_the_outage_budget_ends_the_feed(
    run_redis: RunRedis, prefix: str
) -> None:
    async def body(redis: Redis) -> None:
        consumer = FlakyConsumer(failures=10**9, batch=[])
        bg = _background(redis, prefix, FakeProducer(), _retry(budget_s=0.2))
        with pytest.raises(InfrastructureError, match="kafka"):
            await asyncio.wait_for(bg.feed(consumer), 10)

    run_redis(body)
