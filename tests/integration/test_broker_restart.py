"""A broker restart under a running worker, as an unlucky operator meets it: a real `borderline
worker` on a tansu of the test's own (memory storage: a restart forgets every topic), killed
and started again on the same port. The worker notices the topics are gone, makes them again
with their partitions, says so, and decides the items sent after the restart, without exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CommitFailedError
from aiokafka.structs import OffsetAndMetadata

from adapters.labels.dataset import read_jsonl, sample
from streams.demo.replay import replay_items
from streams.embedded.launcher import WorkerProcess, start_worker
from streams.embedded.services import EmbeddedServices
from streams.service.app import seek_to_committed_or_start
from streams.service.commits import member_commits_only
from streams.service.reader import read_topic
from streams.wire.settings import Settings
from streams.wire.topics import TopicNames, ensure_topics
from tests.waiting import Progress, wait_until

from .outages import log_lines

pytestmark = pytest.mark.integration

PARTITIONS = 2
TANSU_AUTO_PARTITIONS = 4
"""What tansu gives a topic a client's metadata request makes (not the worker's watch)."""


@pytest.fixture
def private_services(tmp_path: Path) -> Iterator[EmbeddedServices]:
    services = EmbeddedServices(state_dir=tmp_path / "services")
    services.start()
    yield services
    services.stop()


def _topics(bootstrap_servers: str) -> dict[str, int]:
    """Every topic the broker reports, with its partition count."""

    async def main() -> dict[str, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
        await admin.start()
        try:
            names = await admin.list_topics()
            described: list[Any] = await admin.describe_topics(names) if names else []
            return {d["topic"]: len(d["partitions"]) for d in described}
        finally:
            await admin.close()

    return asyncio.run(main())


def _start_worker(
    services: EmbeddedServices, model_dir: Path, tmp_path: Path, name: str, log: Path
) -> WorkerProcess:
    """A worker on the test's own broker, its topics made first with `PARTITIONS` partitions."""
    endpoints = services.endpoints
    bootstrap = endpoints.bootstrap_servers
    asyncio.run(ensure_topics(bootstrap, TopicNames().all(), PARTITIONS))
    settings = Settings.model_validate(
        {
            "kafka": {"bootstrap_servers": bootstrap, "partitions": PARTITIONS},
            "redis": {"url": endpoints.redis_url},
            "model": {"dir": str(model_dir)},
            "worker": {"scorer_threads": 1, "adapter_cache_dir": str(tmp_path / "cache")},
        }
    )
    return start_worker(settings, name, log)


def _decided(bootstrap_servers: str, topic: str, ids: set[str], timeout_s: float) -> set[str]:
    decisions = asyncio.run(
        read_topic(
            bootstrap_servers,
            topic,
            until=lambda msgs: ids <= {m["item_id"] for m in msgs},
            timeout_s=timeout_s,
        )
    )
    return ids & {d["item_id"] for d in decisions}


def _story(log: Path) -> list[str]:
    """The worker's log lines about the restart: topics re-made, positions, rebalances."""
    words = ("re-creating", "forgotten", "rebalanc", "assigned", "committed", "Error")
    return [line[-200:] for line in log_lines(log) if any(w in line for w in words)][-30:]


def test_a_worker_remakes_the_topics_of_a_restarted_memory_broker_and_goes_on(
    private_services: EmbeddedServices, model_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    bootstrap, topics = private_services.endpoints.bootstrap_servers, TopicNames()
    log = tmp_path / "worker.log"
    worker = _start_worker(private_services, model_dir, tmp_path, "restarted", log)
    try:
        items = sample(read_jsonl(corpus), 80, seed=31)
        before, after = items[:30], items[30:]
        asyncio.run(replay_items(bootstrap, topics.items, before))
        ids = {i.item_id for i in before}
        assert _decided(bootstrap, topics.decisions, ids, timeout_s=60) == ids

        private_services.restart("tansu")  # SIGKILL, then the same port, empty
        restarted = time.monotonic()

        def remade() -> Progress:
            # the worker's own consumer may re-make the items topic first, through a metadata
            # request, with tansu's default partitions (seen in CI, stop 22: items 4, the rest
            # 2); the next test shows the group then reads all of them
            present = _topics(bootstrap)
            done = all(
                present.get(t) == PARTITIONS
                or (t == topics.items and present.get(t) == TANSU_AUTO_PARTITIONS)
                for t in topics.all()
            )
            return Progress(done, {"topics": present})

        wait_until(remade, timeout_s=30, what="the worker re-creating its topics")
        assert any("re-creating" in line for line in log_lines(log)), log_lines(log)[-5:]

        asyncio.run(replay_items(bootstrap, topics.items, after))
        ids = {i.item_id for i in after}
        decided = _decided(bootstrap, topics.decisions, ids, timeout_s=90)
        assert decided == ids, (
            f"{len(ids - decided)} of {len(ids)} items sent after the restart never decided; "
            f"{log_lines(log)[-5:]}"
        )
        assert time.monotonic() - restarted < 120
        assert worker.process.poll() is None, log_lines(log)[-5:]  # no exit, no restart
    finally:
        worker.stop(signal.SIGKILL, timeout_s=5)


def test_a_busy_worker_survives_a_broker_restart_and_decides_what_comes_after(
    private_services: EmbeddedServices, model_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    """Items keep arriving across the restart (each send a fresh producer, as a client would):
    the worker does not exit, and every item sent once the topics are back is decided. A
    client's metadata request usually re-makes the items topic before the worker's watch does,
    with tansu's 4 partitions, not 2: the group must notice and read all 4 (before the consumer
    refreshed its metadata every 5 s, it read 2 and missed 33 of 60 items, 3 runs of 3)."""
    bootstrap, topics = private_services.endpoints.bootstrap_servers, TopicNames()
    log = tmp_path / "worker.log"
    worker = _start_worker(private_services, model_dir, tmp_path, "busy", log)
    items = sample(read_jsonl(corpus), 200, seed=37)
    try:
        sent = 0
        for _ in range(10):  # 5 s of traffic before the restart
            asyncio.run(replay_items(bootstrap, topics.items, items[sent : sent + 4]))
            sent += 4
            time.sleep(0.5)
        private_services.restart("tansu")
        restarted = time.monotonic()
        while time.monotonic() - restarted < 6.0:  # traffic while the topics are remade
            # the broker not answering yet: those items are the sender's to send again
            with contextlib.suppress(Exception):
                asyncio.run(replay_items(bootstrap, topics.items, items[sent : sent + 4]))
            sent += 4
            time.sleep(0.5)
        after = items[sent : sent + 60]
        asyncio.run(replay_items(bootstrap, topics.items, after))
        ids = {i.item_id for i in after}
        # 60 items take a few seconds to decide; an item the worker skipped never comes
        decided = _decided(bootstrap, topics.decisions, ids, timeout_s=30)
        assert decided == ids, (
            f"{len(ids - decided)} of {len(ids)} items sent after the restart never decided; "
            f"topics {_topics(bootstrap)}; {_story(log)}"
        )
        assert worker.process.poll() is None, log_lines(log)[-5:]  # no exit, no restart
    finally:
        worker.stop(signal.SIGKILL, timeout_s=5)


def _committed_past_end(
    bootstrap_servers: str, group: str, topic: str
) -> dict[str, tuple[int, int]]:
    """The group's committed offsets on ``topic`` that lie past the partition's last record:
    (committed, last offset + 1). The end is read from the records themselves: tansu's end
    offset is sometimes one short of them after a restart."""

    async def main() -> dict[str, tuple[int, int]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
        await admin.start()
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers)
        await consumer.start()
        try:
            partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = dict.fromkeys(partitions, 0)
            idle = 0
            while idle < 3:
                got = await consumer.getmany(timeout_ms=300)
                idle = 0 if got else idle + 1
                for tp, records in got.items():
                    ends[tp] = max(ends[tp], records[-1].offset + 1)
            return {
                f"{tp.topic}[{tp.partition}]": (meta.offset, ends[tp])
                for tp, meta in committed.items()
                if meta.offset > ends[tp]
            }
        finally:
            await consumer.stop()
            await admin.close()

    return asyncio.run(main())


def test_records_fetched_before_a_broker_restart_are_not_committed_into_the_new_log(
    private_services: EmbeddedServices, model_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    """The broker restarts while the worker is deciding a backlog, and a client re-makes the
    topics at once (with two workers, the other one does), so the worker sees no topic gone. The
    records it had fetched from the old log were decided and acknowledged after the rejoin had
    forgotten the partitions' offsets, and faust committed them into the new log: the worker
    then read the new log from there (52 to 73 of the 100 items sent after the restart never
    decided, 5 runs of 5), or, committed past the new log's end, the next owner read nothing
    (`bench chaos`: 349 and 546 items). A record fetched before a rebalance is neither decided
    nor acknowledged after it (`FencedConsumer`)."""
    bootstrap, topics = private_services.endpoints.bootstrap_servers, TopicNames()
    log = tmp_path / "worker.log"
    worker = _start_worker(private_services, model_dir, tmp_path, "in-flight", log)
    try:
        items = sample(read_jsonl(corpus), 700, seed=43)
        warm = items[:20]
        asyncio.run(replay_items(bootstrap, topics.items, warm))
        ids = {i.item_id for i in warm}
        assert _decided(bootstrap, topics.decisions, ids, timeout_s=90) == ids
        asyncio.run(replay_items(bootstrap, topics.items, items[20:600]))
        time.sleep(1.0)  # deciding, a batch in flight
        private_services.restart("tansu")
        asyncio.run(ensure_topics(bootstrap, topics.all(), PARTITIONS))
        after = items[600:]
        asyncio.run(replay_items(bootstrap, topics.items, after))
        ids = {i.item_id for i in after}
        decided = _decided(bootstrap, topics.decisions, ids, timeout_s=60)
        time.sleep(2.0)  # commits once a second
        past_end = _committed_past_end(bootstrap, "borderline-classify", topics.items)
        assert past_end == {}, f"committed past the end: {past_end}; {_story(log)}"
        assert decided == ids, f"{len(ids - decided)} of {len(ids)} never decided; {_story(log)}"
        assert worker.process.poll() is None, log_lines(log)[-5:]
    finally:
        worker.stop(signal.SIGKILL, timeout_s=5)


def test_records_fetched_but_never_committed_are_read_again_after_a_seek_back(
    services: Any,
) -> None:
    """faust drops what a fetch returns during a rebalance (flow stopped, generation changed)
    and seeks back "to the committed offsets"; aiokafka's seek_to_committed leaves a partition
    with nothing committed where it is, past the dropped records. After a memory broker's
    restart nothing is committed, so those items were never decided: the stall above, 50 of 50
    items, about 1 run in 15 beside a training (the worker's consumer sat at the topic's end,
    nothing read, nothing acked). Worse, a process that missed the restart commits its old
    offsets into the new log, past its end, and tansu answers fetches there with nothing: `bench
    chaos` lost whole partitions that way (349 and 546 items). The worker's consumer seeks a
    partition with no commit, or one past the end, to its start, and faust reads it from there."""
    bootstrap = services.bootstrap_servers
    tag = uuid.uuid4().hex[:8]
    topic = f"seekback-{tag}"
    tp = TopicPartition(topic, 0)

    async def main() -> tuple[int, int, int, int, int, int, int | None]:
        await ensure_topics(bootstrap, [topic], 1)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for n in range(5):
                await producer.send_and_wait(topic, f"item {n}".encode())
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=f"seekback-{tag}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            read = 0
            while read < 5:  # fetched and handed over, as faust's getmany does, then dropped
                got = await consumer.getmany(timeout_ms=1000)
                read += sum(len(records) for records in got.values())
            fetched = await consumer.position(tp)
            await seek_to_committed_or_start(consumer)
            after_nothing_committed = await consumer.position(tp)
            await consumer.commit({tp: 3})
            await consumer.getmany(timeout_ms=500)
            await seek_to_committed_or_start(consumer)
            after_a_commit = await consumer.position(tp)
            await consumer.seek_to_committed()  # aiokafka's own, once something is committed
            own = await consumer.position(tp)
            # a commit past the end: what a process that missed the broker's restart commits
            await consumer.commit({tp: 804})
            await consumer.seek_to_committed()
            past_the_end = await consumer.position(tp)  # aiokafka's own: stays there
            read_from = await seek_to_committed_or_start(consumer)
            return (
                fetched,
                after_nothing_committed,
                after_a_commit,
                own,
                past_the_end,
                await consumer.position(tp),
                read_from[tp],
            )
        finally:
            await consumer.stop()

    assert asyncio.run(main()) == (5, 0, 3, 3, 804, 0, None)


def test_offsets_read_before_a_broker_restart_are_not_committed_after_the_rejoin(
    private_services: EmbeddedServices,
) -> None:
    """A commit that met the broker's restart is retried by aiokafka from the coordinator's state
    at each attempt: once the consumer had joined the restarted broker's group, the old log's
    offsets went out under the new membership and were taken, so the group read the new log
    from the old log's position (the `test_records_fetched_before_a_broker_restart...` failure
    in CI: 52 of 100 never decided). `member_commits_only` refuses an attempt for an assignment
    the consumer no longer holds, or made while it is no member; nothing is committed, and the
    new assignment's own commit goes through."""
    bootstrap = private_services.endpoints.bootstrap_servers
    topic = f"rejoin-{uuid.uuid4().hex[:8]}"
    tp = TopicPartition(topic, 0)

    async def produce(n: int) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for i in range(n):
                await producer.send_and_wait(topic, f"item {i}".encode())
        finally:
            await producer.stop()

    async def committed(group: str) -> int | None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group, partitions=[tp])
            meta = offsets.get(tp)
            return None if meta is None or meta.offset < 0 else int(meta.offset)
        finally:
            await admin.close()

    async def main() -> tuple[str, str, int | None, int | None]:
        await ensure_topics(bootstrap, [topic], 1)
        await produce(50)
        group = f"rejoin-{uuid.uuid4().hex[:8]}"
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            heartbeat_interval_ms=200,
        )
        await consumer.start()
        member_commits_only(consumer)
        try:
            read = 0
            while read < 50:
                got = await consumer.getmany(timeout_ms=1000)
                read += sum(len(records) for records in got.values())
            subscription: Any = consumer._subscription.subscription
            old = subscription.assignment
            private_services.restart("tansu")  # memory storage: a new, empty log and group
            await ensure_topics(bootstrap, [topic], 1)
            await produce(10)
            deadline = time.monotonic() + 60
            while not (subscription.assignment is not old and subscription.assignment.active):
                assert time.monotonic() < deadline, "the consumer never joined the new group"
                with contextlib.suppress(Exception):
                    await consumer.getmany(timeout_ms=500)
            # the in-flight commit's retry: the old log's offset, the old assignment
            old_commit = "taken"
            try:
                await consumer._coordinator.commit_offsets(old, {tp: OffsetAndMetadata(50, "")})
            except CommitFailedError as exc:
                old_commit = "refused" if "already rebalanced" in str(exc) else repr(exc)
            after_old = await committed(group)
            consumer._coordinator.reset_generation()  # as an UnknownMemberId answer does
            no_member = "taken"
            try:
                await consumer._coordinator.commit_offsets(
                    subscription.assignment, {tp: OffsetAndMetadata(40, "")}
                )
            except CommitFailedError:
                no_member = "refused"
            deadline = time.monotonic() + 60
            while True:  # the consumer joins again and its own position commits
                with contextlib.suppress(Exception):
                    await consumer.getmany(timeout_ms=500)
                    await consumer.commit({tp: 7})
                    break
                assert time.monotonic() < deadline, "the rejoined consumer could not commit"
            return old_commit, no_member, after_old, await committed(group)
        finally:
            await consumer.stop()

    assert asyncio.run(main()) == ("refused", "refused", None, 7)
