"""The label collector rides out a Redis stall: a real `borderline collector` on the real broker
and a redis-server of the test's own, stopped with SIGSTOP for 30 s (connections stay open,
nothing answers) while labels keep arriving. The collector must stay alive through it (its
agreement timer and its batches retried under the outage budget, 60 s by default), say so in a
handful of log lines, and store every label sent once Redis answers again."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from streams.embedded.launcher import start_worker
from streams.service.admission import signed
from streams.wire.messages import ReviewLabel, encode
from tests.redis_support import with_redis
from tests.waiting import Progress, wait_until

from .conftest import Stack
from .helpers import requested, reviewer_keys
from .outages import private_redis, stored_labels, troubled_lines

pytestmark = pytest.mark.integration

REVIEWERS = ("ann", "bob")
POLICY = "v1"
STALL_S = 30.0
ITEMS = 200  # requested up front: more than the test sends


def _labels(start: int, items: int, keys: dict[str, bytes]) -> list[ReviewLabel]:
    """Signed labels answering the requests recorded for ``item-<start>`` onwards."""
    return [
        signed(
            ReviewLabel(
                item_id=f"item-{i}",
                reviewer_id=reviewer,
                label="violating" if i % 3 == 0 else "benign",
                policy_version=POLICY,
                request_id=f"rq-test-item-{i}",
                labeled_at=time.time(),
            ),
            keys[reviewer],
        )
        for i in range(start, start + items)
        for reviewer in REVIEWERS
    ]


def _send(bootstrap_servers: str, topic: str, labels: list[ReviewLabel]) -> None:
    async def main() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
        await producer.start()
        try:
            pending = [
                await producer.send(topic, encode(label), key=label.item_id.encode())
                for label in labels
            ]
            await asyncio.gather(*pending)
        finally:
            await producer.stop()

    asyncio.run(main())


def test_a_30_second_redis_stall_costs_the_collector_no_label_and_not_its_life(
    stack: Stack, tmp_path: Path
) -> None:
    with private_redis(tmp_path / "redis") as redis:
        settings = stack.settings().with_services(stack.bootstrap_servers, redis.url)
        prefix = settings.redis.key_prefix

        async def register(client: Redis) -> dict[str, bytes]:
            await requested(client, prefix, [f"item-{i}" for i in range(ITEMS)], policy=POLICY)
            return await reviewer_keys(client, prefix, REVIEWERS)

        keys = with_redis(redis.url, register)
        log = tmp_path / "collector.log"
        collector = start_worker(settings, f"collector-{stack.tag}", log, role="collector")
        topic = stack.topics.review_labels
        sent = 0

        def stored() -> Progress:
            n = stored_labels(redis.url, prefix, POLICY)
            alive = collector.process.poll() is None
            return Progress(n == sent, {"stored": n, "sent": sent, "collector alive": alive})

        try:
            _send(stack.bootstrap_servers, topic, _labels(0, 20, keys))
            sent = 40
            wait_until(stored, timeout_s=60, what="the labels sent before the stall")
            before = len(troubled_lines(log))

            with redis.stalled():
                started = time.monotonic()
                item = 20
                while time.monotonic() - started < STALL_S:  # 4 labels a second arrive
                    _send(stack.bootstrap_servers, topic, _labels(item, 2, keys))
                    item, sent = item + 2, sent + 4
                    time.sleep(1.0)
                assert collector.process.poll() is None, "the collector died during the stall"

            _send(stack.bootstrap_servers, topic, _labels(item, 20, keys))
            sent += 40
            done = wait_until(stored, timeout_s=90, what="every label sent, after SIGCONT")
            assert done.facts["collector alive"]
            # the agreement timer ran after the stall too: a retry under the budget, not a crash
            time.sleep(11.0)
            assert collector.process.poll() is None, troubled_lines(log)[-5:]
            during = troubled_lines(log)[before:]
            assert 1 <= len(during) <= 10, during  # the outage said once per interval, not per try
            assert any("unreachable" in line for line in during), during
        finally:
            collector.stop(timeout_s=15)
