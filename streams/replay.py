"""Replaying labelled data as a live stream, and reading a topic back: the harness that the demo,
the benchmarks and the integration tests share. Items are produced as `IncomingItem` messages
keyed by item id, stamped with ``produced_at``, at a fixed rate or as fast as the broker takes
them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from adapters.dataset import LabeledItem
from streams.messages import IncomingItem, encode

__all__ = [
    "ReplayReport",
    "open_reader",
    "read_recent",
    "read_topic",
    "replay_items",
    "replay_raw",
]


@dataclass(frozen=True)
class ReplayReport:
    produced: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.produced / self.seconds if self.seconds > 0 else float("inf")


async def replay_raw(
    bootstrap_servers: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes]],
    *,
    rate: float | None = None,
    on_sent: Callable[[int], None] | None = None,
) -> ReplayReport:
    """Produce (key, value) records, at ``rate`` per second when given; wait for delivery.
    ``on_sent(count)`` follows progress (records handed to the producer so far)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5)
    await producer.start()
    started = time.perf_counter()
    count = 0
    try:
        pending = []
        for key, value in records:
            if rate:
                due = started + count / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            pending.append(await producer.send(topic, value=value, key=key))
            count += 1
            if on_sent is not None:
                on_sent(count)
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return ReplayReport(produced=count, seconds=time.perf_counter() - started)


async def replay_items(
    bootstrap_servers: str,
    topic: str,
    items: Sequence[LabeledItem],
    *,
    rate: float | None = None,
    clock: Callable[[], float] = time.time,
    on_sent: Callable[[int], None] | None = None,
) -> ReplayReport:
    """Produce labelled items as `IncomingItem`s (the label stays behind: the stream is blind)."""

    def records() -> Iterable[tuple[bytes | None, bytes]]:
        for item in items:
            message = IncomingItem(item_id=item.item_id, text=item.text, produced_at=clock())
            yield item.item_id.encode(), encode(message)

    return await replay_raw(bootstrap_servers, topic, records(), rate=rate, on_sent=on_sent)


async def open_reader(
    bootstrap_servers: str, topics: Sequence[str], *, from_end: bool = False
) -> AIOKafkaConsumer:
    """A started consumer that reads every partition of ``topics`` from the beginning, or only
    what arrives after this call (``from_end``: the end offsets are fixed before it returns).
    No consumer group: nothing to join (a join costs seconds), nothing committed."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
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


async def read_recent(bootstrap_servers: str, topic: str, n: int) -> list[dict[str, Any]]:
    """The last ``n`` messages of ``topic`` (about n / partitions from each partition)."""
    consumer = await open_reader(bootstrap_servers, [topic])
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
) -> list[dict[str, Any]]:
    """Read a topic from the beginning (own throwaway group) until ``until(messages)`` holds,
    ``timeout_s`` passes, or (with ``idle_s``) nothing new arrives for that long."""
    consumer = await open_reader(bootstrap_servers, [topic])
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
