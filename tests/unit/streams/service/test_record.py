"""The record writers: the label store and the adapter registry tell their journal of every
change Redis took (and only then), and `KafkaJournal` puts each on its topic, keyed, in a message
that decodes; the collector asks its store guard before it stores a batch."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adapters.labels.store import LabelStore
from adapters.registry.artifact import ADAPTER_FILE, write_artifact
from adapters.registry.store import AdapterRegistry, RegistryError
from streams.service.collect import Collector
from streams.service.metrics import Metrics
from streams.service.record import KafkaJournal
from streams.wire.messages import (
    MAX_ADAPTER_MESSAGE_BYTES,
    AdapterActivated,
    AdapterRegistered,
    ReviewerEvent,
    decode,
)
from streams.wire.topics import TopicNames
from tests.unit.streams.service.test_collect import (
    AdmitAll,
    FakeLabelStore,
    FakeRoutings,
    FakeSink,
    _label,
)

TOPICS = TopicNames()


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []

    async def send_and_wait(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> object:
        self.sent.append((topic, key, value))
        return None


def test_reviewer_changes_are_recorded_only_when_redis_took_them(
    run_redis: Any, prefix: str
) -> None:
    producer = Producer()

    async def body(redis: Any) -> None:
        store = LabelStore(redis, prefix, journal=KafkaJournal(producer, TOPICS, actor="ops"))
        assert await store.register_reviewers(["ann", "bob"]) == 2
        assert await store.register_reviewers(["ann"]) == 0  # nothing new: nothing recorded
        assert await store.register_reviewers([]) == 0
        await store.clear("bob")

    run_redis(body)
    assert [(t, k) for t, k, _ in producer.sent] == [
        (TOPICS.reviewer_events, b"ann"),
        (TOPICS.reviewer_events, b"bob"),
    ]
    events = [decode(v, ReviewerEvent) for _, _, v in producer.sent]
    assert [(e.event, e.reviewer_ids, e.actor) for e in events] == [
        ("added", ["ann", "bob"], "ops"),
        ("cleared", ["bob"], "ops"),
    ]


def test_registry_changes_are_recorded_with_the_file_and_the_registrys_own_record(
    run_redis: Any, prefix: str, tmp_path: Path
) -> None:
    producer = Producer()
    artifact = write_artifact(
        tmp_path / "a1",
        adapter_id="a1",
        params={"w": np.full((64, 64), 0.25, dtype=np.float32)},
        base_model_version="m-test",
        policy_version="v1",
        labels=["benign", "violating"],
        now=1.0,
    )

    async def body(redis: Any) -> Any:
        registry = AdapterRegistry(redis, prefix, journal=KafkaJournal(producer, TOPICS))
        assert await registry.register(artifact)
        assert not await registry.register(artifact)  # already there: not recorded again
        record = await registry.promote("a1", actor="ops", reason="r", now=7.0)
        with pytest.raises(RegistryError):  # refused by Redis: not recorded
            await registry.promote("a1", actor="ops", reason="again", now=8.0)
        return record

    record = run_redis(body)
    assert [(t, k) for t, k, _ in producer.sent] == [
        (TOPICS.adapter_registrations, b"a1"),
        (TOPICS.adapter_activations, b"v1"),
    ]
    registered = decode(producer.sent[0][2], AdapterRegistered, max_bytes=MAX_ADAPTER_MESSAGE_BYTES)
    data = (artifact.directory / ADAPTER_FILE).read_bytes()
    assert registered.file_bytes() == data
    assert base64.b64decode(registered.file_b64) == data
    assert registered.file_sha256 == hashlib.sha256(data).hexdigest()
    assert registered.manifest_json.encode() == artifact.files()["adapter.json"]
    activated = decode(producer.sent[1][2], AdapterActivated)
    assert activated.model_dump() == {"schema_version": 1, **record.model_dump(exclude={"forced"})}


class Guard:
    """Notes how many labels the store held each time it was asked."""

    def __init__(self, store: FakeLabelStore) -> None:
        self.store = store
        self.seen: list[int] = []

    async def ensure(self) -> str | None:
        self.seen.append(len(self.store.votes_by_item))
        return None


def test_the_collector_asks_its_guard_before_each_batch() -> None:
    store = FakeLabelStore({})
    guard = Guard(store)
    collector = Collector(
        store=store,  # type: ignore[arg-type]
        admission=AdmitAll(),
        routings=FakeRoutings(),
        sink=FakeSink(),
        metrics=Metrics(),
        topics=TOPICS,
        worker="c-1",
        guard=guard,  # type: ignore[arg-type]
    )
    asyncio.run(collector.handle([_label("i1", "ann", "benign", "v1")]))
    asyncio.run(collector.handle([_label("i2", "bob", "benign", "v1")]))
    assert guard.seen == [0, 1]  # asked before each batch was stored
    assert set(store.votes_by_item) == {("v1", "i1"), ("v1", "i2")}
