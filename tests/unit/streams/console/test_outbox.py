"""Labels on their way out, on a real redis-server: held for the undo time, undone only before
they are taken, signed and produced once taken, taken again when a sender died."""

from __future__ import annotations

import contextlib
from typing import Any

from redis.asyncio import Redis

from streams.console.keys import ConsoleKeys
from streams.console.outbox import LabelOutbox
from streams.wire.messages import ReviewLabel, decode
from tests.unit.conftest import RunRedis

NOW = 1_900_000_000.0


class FakeProducer:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []
        self.fail = fail

    async def send_and_wait(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> Any:
        if self.fail:
            raise ConnectionError("broker gone")
        self.sent.append((topic, value, key))


async def sign(label: ReviewLabel) -> ReviewLabel:
    return label.model_copy(update={"signature": f"sig-{label.reviewer_id}"})


def label(item: str, reviewer: str = "alice") -> ReviewLabel:
    return ReviewLabel(
        item_id=item,
        reviewer_id=reviewer,
        label="benign",
        policy_version="v1",
        request_id=f"rr-{item}",
        labeled_at=NOW,
    )


def test_held_for_undo_then_signed_and_sent_once(run_redis: RunRedis, prefix: str) -> None:
    async def body(redis: Redis) -> None:
        producer = FakeProducer()
        box = LabelOutbox(redis, ConsoleKeys(prefix), producer, "labels", sign, undo_s=5)
        await box.put(label("a"), now=NOW)
        await box.put(label("a"), now=NOW + 1)  # the same label twice is one label
        assert await box.send_due(now=NOW + 4) == []
        assert await box.waiting() == 1
        sent = await box.send_due(now=NOW + 5)
        assert [s.item_id for s in sent] == ["a"]
        topic, value, key = producer.sent[0]
        assert topic == "labels" and key == b"a"
        assert decode(value, ReviewLabel).signature == "sig-alice"
        assert await box.undo("alice") is None  # sent: too late
        assert await box.send_due(now=NOW + 60) == [] and await box.waiting() == 0
        assert await redis.hget(ConsoleKeys(prefix).labelled, "alice") == b"1"

    run_redis(body)


def test_undo_takes_back_the_last_label_before_it_is_sent(run_redis: RunRedis, prefix: str) -> None:
    async def body(redis: Redis) -> None:
        producer = FakeProducer()
        box = LabelOutbox(redis, ConsoleKeys(prefix), producer, "labels", sign, undo_s=5)
        await box.put(label("a"), now=NOW)
        await box.put(label("b"), now=NOW)
        undone = await box.undo("alice")
        assert undone is not None and undone.item_id == "b"
        assert await box.undo("alice") is None  # only the last one
        assert await box.undo("bob") is None
        assert [s.item_id for s in await box.send_due(now=NOW + 10)] == ["a"]

    run_redis(body)


def test_a_label_whose_sender_died_is_sent_again(run_redis: RunRedis, prefix: str) -> None:
    async def body(redis: Redis) -> None:
        keys = ConsoleKeys(prefix)
        broken = LabelOutbox(redis, keys, FakeProducer(fail=True), "labels", sign, undo_s=0)
        await broken.put(label("a"), now=NOW)
        with contextlib.suppress(ConnectionError):
            await broken.send_due(now=NOW)
        producer = FakeProducer()
        box = LabelOutbox(redis, keys, producer, "labels", sign, undo_s=0, retake_s=30)
        assert await box.send_due(now=NOW + 10) == []  # maybe still being sent
        assert [s.item_id for s in await box.send_due(now=NOW + 31)] == ["a"]
        assert len(producer.sent) == 1

    run_redis(body)
