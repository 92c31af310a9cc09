"""Consumer lag per group from the broker's committed offsets (`streams.service.progress.GroupLag`)
on the real embedded broker: what a group committed, against each partition's end, into the
gauge labelled by group, and into the progress the health endpoint decides on."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from streams.service.health import Progress, liveness
from streams.service.metrics import Metrics
from streams.service.progress import GroupLag
from streams.wire.topics import ensure_topics

pytestmark = pytest.mark.integration


async def _commit(bootstrap: str, group: str, tp: TopicPartition, offset: int) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.commit({tp: OffsetAndMetadata(offset, "")})
    finally:
        await consumer.stop()


def test_lag_per_group_from_committed_offsets(services: Any) -> None:
    bootstrap = services.bootstrap_servers
    tag = uuid.uuid4().hex[:8]
    topic, busy, idle = f"lag-{tag}", f"busy-{tag}", f"idle-{tag}"
    tp = TopicPartition(topic, 0)
    now = [1000.0]
    metrics = Metrics()
    progress = Progress(started_at=0.0)

    async def main() -> list[dict[TopicPartition, int]]:
        await ensure_topics(bootstrap, [topic], 1)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for i in range(10):  # one record per batch: tansu's end offset is then the true one
                await producer.send_and_wait(topic, b"x", partition=0, key=str(i).encode())
        finally:
            await producer.stop()
        await _commit(bootstrap, busy, tp, 3)
        lag = GroupLag(
            bootstrap, busy, [topic], metrics=metrics, progress=progress, clock=lambda: now[0]
        )
        never = GroupLag(bootstrap, idle, [topic], metrics=metrics, progress=Progress(0.0))
        try:
            seen = [await lag.lag(), await never.lag()]
            await lag.poll()
            assert progress.last_commit_at is None  # the first reading is the baseline
            await _commit(bootstrap, busy, tp, 8)
            now[0] = 1100.0
            await lag.poll()
            return seen
        finally:
            await lag.close()
            await never.close()

    busy_lag, idle_lag = asyncio.run(main())
    # 10 records, 3 committed; nothing committed is read from the log's start
    assert busy_lag == {tp: 7} and idle_lag == {tp: 10}
    assert progress.last_commit_at == 1100.0 and progress.lag == 2
    value = metrics.registry.get_sample_value(
        "borderline_consumer_lag_messages", {"group": busy, "topic": topic, "partition": "0"}
    )
    assert value == 2.0
    # lag and no progress past the window: stuck
    assert liveness(progress, now=1100.0 + 299, stuck_after_s=300).ok
    assert not liveness(progress, now=1100.0 + 301, stuck_after_s=300).ok
