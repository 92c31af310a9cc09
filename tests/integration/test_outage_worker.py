"""A classify worker through outages, as an unlucky operator meets them: a real `borderline
worker` process on the real broker and on services of the test's own.

- Redis stalls (SIGSTOP) for less than the outage budget (20 s of 30 s here) while items keep
  arriving: the worker stays alive, says so once per interval, and decides every item once
  Redis answers.
- The broker and Redis both die under an idle worker: it exits after the outage budget (5 s
  here) with one line naming what was unreachable and for how long, exit 70, a handful of log
  lines, not a flood.
- SIGTERM ends a busy worker within 10 s with its offsets committed, and a worker whose broker
  and Redis are gone within 10 s too.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from adapters.labels.dataset import LabeledItem, read_jsonl, sample
from streams.demo.replay import replay_items
from streams.embedded.launcher import WorkerProcess, start_worker
from streams.embedded.services import EmbeddedServices
from streams.wire.settings import ResilienceSettings, Settings
from streams.wire.topics import TopicNames, ensure_topics
from tests.waiting import Progress, wait_until

from .conftest import Stack
from .outages import log_lines, private_redis, troubled_lines, wait_exit

pytestmark = pytest.mark.integration

# the stall: two thirds of the outage budget (as 40 s of the default 60 s would be), four times
# Redis's socket timeout (5 s) and two log intervals (10 s): seen, reported, and ridden out
STALL_BUDGET_S = 30.0
STALL_S = 20.0
STOP_WITHIN_S = 10.0


def _items(corpus: Path, n: int, seed: int) -> list[LabeledItem]:
    return sample(read_jsonl(corpus), n, seed=seed)


def _send(bootstrap_servers: str, topic: str, items: list[LabeledItem]) -> None:
    asyncio.run(replay_items(bootstrap_servers, topic, items))


def _decided(stack: Stack, ids: set[str], timeout_s: float) -> set[str]:
    decisions = stack.read(
        stack.topics.decisions,
        lambda msgs: ids <= {m["item_id"] for m in msgs},
        timeout_s=timeout_s,
    )
    return ids & {d["item_id"] for d in decisions}


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop(signal.SIGKILL, timeout_s=5)


# --- (b) a Redis stall shorter than the budget ----------------------------------------------------


def test_a_worker_rides_out_a_redis_stall_and_decides_every_item(
    stack: Stack, corpus: Path, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    items = _items(corpus, 150, seed=23)
    before, during, after = items[:30], items[30:110], items[110:]
    with private_redis(tmp_path / "redis") as redis:
        settings = stack.settings(adapter_cache_dir=str(tmp_path / "cache")).with_services(
            stack.bootstrap_servers, redis.url
        )
        settings = settings.model_copy(
            update={"resilience": ResilienceSettings(outage_budget_s=STALL_BUDGET_S)}
        )
        log = tmp_path / "worker.log"
        worker = start_worker(settings, f"w-{stack.tag}", log)
        workers.append(worker)
        _send(stack.bootstrap_servers, stack.topics.items, before)
        ids = {i.item_id for i in before}
        assert _decided(stack, ids, timeout_s=60) == ids
        quiet = len(troubled_lines(log))

        with redis.stalled():
            started, sent = time.monotonic(), 0
            while time.monotonic() - started < STALL_S:  # two items a second arrive
                if sent < len(during):
                    _send(stack.bootstrap_servers, stack.topics.items, during[sent : sent + 2])
                    sent += 2
                time.sleep(1.0)
            assert worker.process.poll() is None, troubled_lines(log)[-3:]

        resumed = time.monotonic()
        _send(stack.bootstrap_servers, stack.topics.items, during[sent:] + after)
        ids = {i.item_id for i in items}
        decided = _decided(stack, ids, timeout_s=60)
        missing = ids - decided
        if missing:
            letters = stack.read_all(stack.topics.items_dlq)
            order = [i.item_id for i in items]
            raise AssertionError(
                f"{len(missing)} items never decided after the stall: "
                f"{sorted((order.index(m), m) for m in missing)}; dead letters: {letters}"
            )
        assert time.monotonic() - resumed < 40.0
        assert worker.process.poll() is None
        said = troubled_lines(log)[quiet:]
        assert any("unreachable (" in line for line in said), said  # the stall is reported...
        assert any("reachable again after" in line for line in said), said  # ...and its end
        assert len(said) <= 12, said  # once per interval, not once per try
        worker.stop(timeout_s=15)  # before its Redis goes away with the block


# --- (c) and (d): services of the test's own, that the test kills ---------------------------------


def _private_worker(
    tmp_path: Path, model_dir: Path, budget_s: float | None = None
) -> tuple[EmbeddedServices, WorkerProcess, Path]:
    services = EmbeddedServices(state_dir=tmp_path / "services")
    endpoints = services.start()
    topics = TopicNames()
    asyncio.run(ensure_topics(endpoints.bootstrap_servers, topics.all(), 2))
    doc: dict[str, Any] = {
        "kafka": {"bootstrap_servers": endpoints.bootstrap_servers, "partitions": 2},
        "redis": {"url": endpoints.redis_url},
        "model": {"dir": str(model_dir)},
        "worker": {"scorer_threads": 1, "adapter_cache_dir": str(tmp_path / "cache")},
    }
    if budget_s is not None:
        doc["resilience"] = {"outage_budget_s": budget_s}
    log = tmp_path / "worker.log"
    try:
        worker = start_worker(Settings.model_validate(doc), "lonely", log)
    except BaseException:
        services.stop()
        raise
    return services, worker, log


def _kill_services(services: EmbeddedServices) -> None:
    for pid in services.pids.values():
        os.kill(pid, signal.SIGKILL)


def test_an_idle_worker_whose_broker_and_redis_died_exits_after_the_budget_with_one_line(
    model_dir: Path, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    services, worker, log = _private_worker(tmp_path, model_dir, budget_s=5.0)
    workers.append(worker)
    try:
        lines_before, troubled_before = len(log_lines(log)), len(troubled_lines(log))
        _kill_services(services)
        exited_after = wait_exit(worker.process, timeout_s=30.0)
    finally:
        services.stop()
    assert exited_after is not None, "the worker never exited"
    assert exited_after < 5.0 + 10.0, exited_after
    assert worker.process.returncode == 70  # without committing: a supervisor restarts it
    trouble = troubled_lines(log)[troubled_before:]
    last = trouble[-1]
    assert "[CRITICAL]" in last and "unreachable for" in last and "outage budget 5 s" in last
    assert "Redis at 127.0.0.1:" in last or "the broker at 127.0.0.1:" in last
    assert sum("[CRITICAL]" in line for line in trouble) == 1  # one line says why it exits
    assert len(trouble) <= 12, trouble  # a handful, not 40 a second
    assert len(log_lines(log)) - lines_before <= 30


def test_sigterm_ends_a_worker_whose_broker_and_redis_are_gone_within_10_s(
    model_dir: Path, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    services, worker, log = _private_worker(tmp_path, model_dir)  # the default budget: 60 s
    workers.append(worker)
    try:
        _kill_services(services)
        time.sleep(3.0)  # the consumer has noticed: it retries the broker in its thread
        worker.process.send_signal(signal.SIGTERM)
        stopped_after = wait_exit(worker.process, timeout_s=90.0)
    finally:
        services.stop()
    assert stopped_after is not None and stopped_after < STOP_WITHIN_S, (
        stopped_after,
        log_lines(log)[-3:],
    )


def _committed(bootstrap_servers: str, group: str, topic: str) -> int:
    """The group's committed offsets on ``topic``, summed over its partitions: with a fresh
    topic, how many of its records the group is done with (read with the group's id, without
    joining it; tansu's ListOffsets undercounts batched records, so the sum of what was sent
    is the reference)."""

    async def main() -> int:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            await consumer.topics()  # the topic's partitions into the metadata
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
            return sum([await consumer.committed(tp) or 0 for tp in partitions])
        finally:
            await consumer.stop()

    return asyncio.run(main())


def test_sigterm_ends_a_busy_worker_within_10_s_with_its_offsets_committed(
    stack: Stack, corpus: Path
) -> None:
    worker = stack.start_worker("busy")
    items = _items(corpus, 200, seed=29)
    _send(stack.bootstrap_servers, stack.topics.items, items)
    ids = {i.item_id for i in items}
    assert _decided(stack, ids, timeout_s=90) == ids
    started = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    stopped_after = wait_exit(worker.process, timeout_s=90.0)
    assert stopped_after is not None and stopped_after < STOP_WITHIN_S, stopped_after
    assert worker.process.returncode == 0
    group = f"classify-{stack.tag}"

    def committed() -> Progress:
        done = _committed(stack.bootstrap_servers, group, stack.topics.items)
        return Progress(done == len(items), {"committed": done, "sent": len(items)})

    # what the worker decided is committed: a restarted worker would not decide it again
    wait_until(committed, timeout_s=5, what="the group's committed offsets at the end")
    assert time.monotonic() - started < 30
