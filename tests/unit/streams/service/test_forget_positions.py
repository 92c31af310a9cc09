"""After a broker restart, a worker reads its partitions from 0 again (faust would drop every
message below the offsets it read before), and a record fetched before a rebalance or a restart
is neither acknowledged nor allowed to move a read offset after it (`FencedConsumer`)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from streams.service.app import FencedConsumer, forget_positions


class FakeConsumer:
    def __init__(self, assigned: set[str]) -> None:
        self.assigned = assigned
        self._acked: dict[str, Any] = {tp: [5] for tp in assigned}
        self._acked_index: dict[str, Any] = {tp: {5} for tp in assigned}
        self._gap: dict[str, Any] = defaultdict(list)
        self._committed_offset: dict[str, Any] = {tp: 5 for tp in assigned}
        self.sought: list[tuple[str, int]] = []

    def assignment(self) -> set[str]:
        return self.assigned

    async def seek(self, tp: str, offset: int) -> None:
        self.sought.append((tp, offset))


class FakeApp:
    def __init__(self, consumer: FakeConsumer) -> None:
        self.consumer = consumer


def test_every_assigned_partition_is_read_from_0_with_its_offsets_forgotten() -> None:
    consumer = FakeConsumer({"items-0", "items-1"})
    asyncio.run(forget_positions(FakeApp(consumer)))  # type: ignore[arg-type]
    assert consumer.sought == [("items-0", 0), ("items-1", 0)]
    assert consumer._committed_offset == {} and consumer._acked == {}
    assert consumer._acked_index == {}


def test_nothing_assigned_nothing_sought() -> None:
    consumer = FakeConsumer(set())
    asyncio.run(forget_positions(FakeApp(consumer)))  # type: ignore[arg-type]
    assert consumer.sought == []


class Acking:
    """faust's consumer, as far as FencedConsumer relies on it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.acked: list[int] = []
        self._unacked_messages: set[Any] = set()
        self._read_offset: dict[str, Any] = {}

        async def deliver(message: Any) -> None:
            self.delivered.append(message.offset)

        self.delivered: list[int] = []
        self.callback = deliver

    def ack(self, message: Any) -> bool:
        self.acked.append(message.offset)
        return True


class Fenced(FencedConsumer, Acking):
    pass


@dataclass(eq=False)
class Message:
    tp: str
    offset: int
    generation_id: int
    acked: bool = False


def test_a_record_fetched_before_a_new_epoch_is_not_acked_and_moves_no_read_offset() -> None:
    app = SimpleNamespace(consumer_generation_id=0)
    consumer = Fenced(app)
    consumer.fence_stale_records()
    first = consumer.new_epoch()
    old = Message("items-0", 804, first)
    consumer._unacked_messages.add(old)
    second = consumer.new_epoch()  # a rebalance: the broker's generation may be 0 again
    assert app.consumer_generation_id == second != first and second < 0
    fresh = Message("items-0", 3, second)

    async def deliver_then_set(message: Message) -> None:  # what faust's consumer loop does
        await consumer.callback(message)
        consumer._read_offset[message.tp] = message.offset

    asyncio.run(deliver_then_set(fresh))
    asyncio.run(deliver_then_set(old))
    assert consumer._read_offset["items-0"] == 3  # not 804
    assert consumer.ack(old) is False and old.acked and old not in consumer._unacked_messages
    assert consumer.ack(fresh) is True
    assert consumer.acked == [3] and consumer.delivered == [3, 804]


def test_forgetting_positions_starts_an_epoch() -> None:
    app = SimpleNamespace(consumer_generation_id=0)
    consumer = Fenced(app)
    consumer.fence_stale_records()
    consumer.assignment = lambda: set()  # type: ignore[attr-defined]
    asyncio.run(forget_positions(SimpleNamespace(consumer=consumer)))  # type: ignore[arg-type]
    assert app.consumer_generation_id == -1
