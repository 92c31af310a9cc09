"""Reading a topic outside a consumer group: the latest items (the trainer's shadow set) or a whole
topic from fixed offsets."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.wire.security import PLAINTEXT, KafkaSecurity

__all__ = ["open_reader", "partitions_of", "read_recent", "read_topic"]


async def partitions_of(consumer: AIOKafkaConsumer, topics: Sequence[str]) -> list[TopicPartition]:
    """Every partition of ``topics`` the broker reports now, in ``topics`` order (the metadata
    read again first: partitions made since the consumer started count; a missing topic has
    none)."""
    await consumer.topics()
    return [
        TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())
    ]


async def open_reader(
    bootstrap_servers: str,
    topics: Sequence[str],
    *,
    from_end: bool = False,
    security: KafkaSecurity = PLAINTEXT,
) -> AIOKafkaConsumer:
    """A started consumer that reads every partition of ``topics`` from the beginning, or only
    what arrives after this call (``from_end``: the end offsets are fixed before it returns).
    No consumer group: nothing to join (a join costs seconds), nothing committed."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        **security.options(),
    )
    await consumer.start()
    try:
        await consumer.topics()  # refresh metadata
        partitions = []
        for topic in topics:
            ids = consumer.partitions_for_topic(topic)
            if not ids:
                raise ValueError(f"topic {topic!r} does not exist")
            partitions += [TopicPartition(topic, p) for p in sorted(ids)]
        consumer.assign(partitions)
        if from_end:
            for tp, offset in (await consumer.end_offsets(partitions)).items():
                consumer.seek(tp, offset)
        else:
            await consumer.seek_to_beginning(*partitions)
    except BaseException:
        await consumer.stop()
        raise
    return consumer


async def read_recent(
    bootstrap_servers: str, topic: str, n: int, *, security: KafkaSecurity = PLAINTEXT
) -> list[dict[str, Any]]:
    """The last ``n`` messages of ``topic`` (about n / partitions from each partition)."""
    consumer = await open_reader(bootstrap_servers, [topic], security=security)
    try:
        partitions = list(consumer.assignment())
        ends = await consumer.end_offsets(partitions)
        per = max(1, n // max(1, len(partitions)))
        wanted = 0
        for tp in partitions:
            start = max(0, ends[tp] - per)
            consumer.seek(tp, start)
            wanted += ends[tp] - start
        out: list[dict[str, Any]] = []
        while len(out) < wanted:
            batch = await consumer.getmany(timeout_ms=500, max_records=1000)
            if not batch:
                break
            for records in batch.values():
                for record in records:
                    if record.value is not None:
                        with contextlib.suppress(ValueError):
                            out.append(json.loads(record.value))
        return out
    finally:
        await consumer.stop()


async def read_topic(
    bootstrap_servers: str,
    topic: str,
    *,
    until: Callable[[list[dict[str, Any]]], bool],
    timeout_s: float,
    idle_s: float | None = None,
    security: KafkaSecurity = PLAINTEXT,
) -> list[dict[str, Any]]:
    """Read a topic from the beginning (own throwaway group) until ``until(messages)`` holds,
    ``timeout_s`` passes, or (with ``idle_s``) nothing new arrives for that long."""
    consumer = await open_reader(bootstrap_servers, [topic], security=security)
    messages: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last_new = loop.time()
    try:
        while not until(messages):
            now = loop.time()
            if now > deadline or (idle_s is not None and messages and now - last_new > idle_s):
                break
            batch = await consumer.getmany(timeout_ms=200, max_records=1000)
            for records in batch.values():
                for record in records:
                    assert record.value is not None
                    doc = json.loads(record.value)
                    doc["_key"] = record.key.decode() if record.key else None
                    doc["_partition"] = record.partition
                    messages.append(doc)
                    last_new = loop.time()
    finally:
        await consumer.stop()
    return messages
