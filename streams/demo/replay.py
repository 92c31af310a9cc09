"""Replaying labelled data as a live stream, and reading a topic back: the harness that the demo,
the benchmarks and the integration tests share. Items are produced as `IncomingItem` messages
keyed by item id, stamped with ``produced_at``, at a fixed rate or as fast as the broker takes
them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from adapters.labels.dataset import LabeledItem
from streams.wire.messages import IncomingItem, encode
from streams.wire.security import PLAINTEXT, KafkaSecurity

__all__ = ["ReplayReport", "replay_items", "replay_raw"]


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
    security: KafkaSecurity = PLAINTEXT,
) -> ReplayReport:
    """Produce (key, value) records, at ``rate`` per second when given; wait for delivery.
    ``on_sent(count)`` follows progress (records handed to the producer so far)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5, **security.options()
    )
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
    security: KafkaSecurity = PLAINTEXT,
) -> ReplayReport:
    """Produce labelled items as `IncomingItem`s (the label stays behind: the stream is blind)."""

    def records() -> Iterable[tuple[bytes | None, bytes]]:
        for item in items:
            message = IncomingItem(item_id=item.item_id, text=item.text, produced_at=clock())
            yield item.item_id.encode(), encode(message)

    return await replay_raw(
        bootstrap_servers, topic, records(), rate=rate, on_sent=on_sent, security=security
    )
