"""The topic watch: a broker that lost topics gets them back with their partitions, once."""

from __future__ import annotations

import asyncio
import logging

import pytest

from streams.service.topic_watch import TopicWatch, missing_topics


def test_missing_topics_keeps_the_expected_order() -> None:
    assert missing_topics(["a", "b", "c"], {"b"}) == ["a", "c"]
    assert missing_topics(["a"], {"a", "z"}) == []
    assert missing_topics([], set()) == []


class Broker:
    """A fake broker: the topics it reports, and the creations asked of it."""

    def __init__(self, present: set[str]) -> None:
        self.present = present
        self.created: list[tuple[str, list[str], int, int]] = []

    async def ensure(
        self, bootstrap: str, topics: list[str], partitions: int, replication: int
    ) -> list[str]:
        self.created.append((bootstrap, topics, partitions, replication))
        self.present |= set(topics)
        return topics


class FakeWatch(TopicWatch):
    broker: Broker

    async def present(self) -> set[str]:
        return set(self.broker.present)


def _watch(broker: Broker) -> FakeWatch:
    watch = FakeWatch("b:1", ["items", "decisions"], 3, 1, ensure=broker.ensure)
    watch.broker = broker
    return watch


def test_nothing_is_created_while_every_topic_exists(caplog: pytest.LogCaptureFixture) -> None:
    broker = Broker({"items", "decisions", "other"})
    watch = _watch(broker)
    asyncio.run(watch())
    assert broker.created == [] and watch.recreated == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_lost_topics_are_made_again_with_their_partitions_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = Broker({"decisions"})
    watch = _watch(broker)
    with caplog.at_level(logging.INFO):
        asyncio.run(watch())
        asyncio.run(watch())  # made again: nothing more to do, nothing more said
    assert broker.created == [("b:1", ["items"], 3, 1)]
    assert watch.recreated == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "re-creating items with 3 partitions" in warnings[0]


def test_a_broker_error_reaches_the_caller_who_retries() -> None:
    class Down(FakeWatch):
        async def present(self) -> set[str]:
            raise ConnectionRefusedError("down")

    watch = Down("b:1", ["items"], 1, ensure=Broker(set()).ensure)
    with pytest.raises(ConnectionRefusedError):
        asyncio.run(watch())


def test_close_without_a_client_is_a_no_op() -> None:
    asyncio.run(TopicWatch("b:1", ["items"], 1).close())


def test_after_a_recreation_the_hook_hears_which_topics_were_lost() -> None:
    broker = Broker({"decisions"})
    heard: list[list[str]] = []

    async def on_recreated(lost: list[str]) -> None:
        heard.append(lost)

    watch = FakeWatch("b:1", ["items", "decisions"], 3, ensure=broker.ensure)
    watch.broker = broker
    watch.on_recreated = on_recreated
    asyncio.run(watch())
    asyncio.run(watch())
    assert heard == [["items"]]
