"""After a broker restart, a worker reads its partitions from 0 again (faust would drop every
message below the offsets it read before), commits 0 for them (a rebalance seeks to committed
offsets) and refreshes its metadata (a topic a client re-made may have other partitions)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import pytest

from streams.service.app import forget_positions


class TP(NamedTuple):
    topic: str
    partition: int


class FakeClient:
    def __init__(self) -> None:
        self.refreshed = 0

    async def force_metadata_update(self) -> bool:
        self.refreshed += 1
        return True


class FakeKafkaConsumer:
    """aiokafka's consumer, as far as the restart handling uses it."""

    def __init__(self, commit_error: Exception | None = None) -> None:
        self._client = FakeClient()
        self.commit_error = commit_error
        self.committed: list[dict[Any, int]] = []

    async def commit(self, offsets: dict[Any, int]) -> None:
        if self.commit_error is not None:
            raise self.commit_error
        self.committed.append(offsets)


class FakeThread:
    """faust's consumer thread: calls made on it, in order."""

    def __init__(self, kafka: FakeKafkaConsumer) -> None:
        self.kafka = kafka
        self.calls: list[str] = []

    def _ensure_consumer(self) -> FakeKafkaConsumer:
        return self.kafka

    async def call_thread(self, fun: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        self.calls.append(fun.__name__)
        return await fun(*args)


class FakeConsumer:
    def __init__(self, assigned: set[TP], commit_error: Exception | None = None) -> None:
        self.assigned = assigned
        self._thread = FakeThread(FakeKafkaConsumer(commit_error))
        self._acked: dict[TP, Any] = {tp: [5] for tp in assigned}
        self._acked_index: dict[TP, Any] = {tp: {5} for tp in assigned}
        self._gap: dict[TP, Any] = defaultdict(list)
        self._committed_offset: dict[TP, Any] = {tp: 5 for tp in assigned}
        self.sought: list[tuple[TP, int]] = []

    def assignment(self) -> set[TP]:
        return self.assigned

    async def seek(self, tp: TP, offset: int) -> None:
        self.sought.append((tp, offset))


class FakeApp:
    def __init__(self, consumer: FakeConsumer) -> None:
        self.consumer = consumer


ITEMS_0, ITEMS_1 = TP("items", 0), TP("items", 1)


def test_every_assigned_partition_is_read_from_0_with_its_offsets_forgotten() -> None:
    consumer = FakeConsumer({ITEMS_0, ITEMS_1})
    asyncio.run(forget_positions(FakeApp(consumer)))  # type: ignore[arg-type]
    assert consumer.sought == [(ITEMS_0, 0), (ITEMS_1, 0)]
    assert consumer._committed_offset == {} and consumer._acked == {}
    assert consumer._acked_index == {}


def test_offset_0_is_committed_then_the_metadata_refreshed_on_the_consumer_thread() -> None:
    consumer = FakeConsumer({ITEMS_0, ITEMS_1})
    asyncio.run(forget_positions(FakeApp(consumer)))  # type: ignore[arg-type]
    kafka = consumer._thread.kafka
    assert kafka.committed == [{("items", 0): 0, ("items", 1): 0}]
    assert kafka._client.refreshed == 1
    assert consumer._thread.calls == ["commit", "force_metadata_update"]


def test_a_commit_refused_in_a_rebalance_is_said_and_the_metadata_still_refreshed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer = FakeConsumer({ITEMS_0}, commit_error=RuntimeError("rebalancing"))
    asyncio.run(forget_positions(FakeApp(consumer)))  # type: ignore[arg-type]
    assert consumer.sought == [(ITEMS_0, 0)]
    assert consumer._thread.kafka._client.refreshed == 1
    assert any("offset 0 not committed" in r.getMessage() for r in caplog.records)


def test_nothing_assigned_nothing_sought_nor_committed_but_the_metadata_refreshed() -> None:
    consumer = FakeConsumer(set())
    asyncio.run(forget_positions(FakeApp(consumer)))  # type: ignore[arg-type]
    assert consumer.sought == []
    assert consumer._thread.calls == ["force_metadata_update"]
