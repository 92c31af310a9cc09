"""After a broker restart, a worker reads its partitions from 0 again (faust would drop every
message below the offsets it read before)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from streams.service.app import forget_positions


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
