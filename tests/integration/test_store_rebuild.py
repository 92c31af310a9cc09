"""Kafka is the record, Redis a view: on the session's real broker and a private redis-server of
this test's own (so it can be killed with SIGKILL and restarted empty without touching the shared
one), reviewers, a policy and an adapter are set up through the product's commands and stores,
labels flow to a real collector, Redis is killed mid-stream and restarted empty, and then:

- a collector started on the empty store rebuilds it by itself before it stores anything: every
  label sent is in the store, the reviewers are registered, the active policy and the active
  adapter are back, and new labels are stored (not dead-lettered as ``unregistered_reviewer``,
  nor refused for a signature or a request the rebuilt store would not know: the reviewers'
  key nonces and the review requests come back from the record too);
- `borderline store rebuild`, run twice, changes nothing the second time (nor the first, over a
  complete store) and says what it restored.

On a store without the record (before issue 13) the labels after the restart were dead-lettered
and nothing could bring them back: `borderline store rebuild` did not exist."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from adapters.adapt.verdicts import GateRecord, VerdictStore
from adapters.labels.keyring import ReviewerKeys
from adapters.labels.store import LabelStore, ReviewedItem
from adapters.policy.store import PolicyStore
from adapters.registry.artifact import write_artifact
from adapters.registry.store import AdapterRegistry
from streams.embedded.launcher import WorkerProcess, start_worker
from streams.service.admission import signed
from streams.service.record import open_journal
from streams.wire.messages import ReviewLabel, ReviewReason, ReviewRequest, encode
from streams.wire.settings import Settings
from streams.wire.topics import TopicNames, ensure_topics
from tests.redis_support import with_redis
from tests.unit.streams.service.test_rebuild import snapshot

from .helpers import cli

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
REVIEWERS = ["ann", "bob", "cy"]
LABELS = 300


class PrivateRedis:
    """A redis-server of this test's own on a unix socket, without persistence: killed with
    SIGKILL and started again, it is empty."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.sock = directory / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.sock}"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed: `make system-deps`"
        self.process = subprocess.Popen(
            [
                binary,
                *("--port", "0", "--unixsocket", str(self.sock), "--unixsocketperm", "700"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.directory)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                if with_redis(self.url, lambda r: r.ping()):
                    return
            except Exception:  # redis' ConnectionError while the socket is not there yet
                pass
            assert time.monotonic() < deadline, "private redis-server did not answer"
            time.sleep(0.02)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.sock.unlink(missing_ok=True)


def _settings(services: Any, redis_url: str, topics: TopicNames, tag: str, tmp: Path) -> Settings:
    return Settings.model_validate(
        {
            "kafka": {
                "bootstrap_servers": services.bootstrap_servers,
                "topics": topics.model_dump(),
                "partitions": 2,
                "app_id": f"rebuild-{tag}",
            },
            "redis": {"url": redis_url, "key_prefix": f"test-{tag}"},
            "model": {"dir": str(tmp / "no-model")},
        }
    )


async def _register_adapter(settings: Settings, tmp: Path) -> None:
    """An adapter registered as the trainer registers one, with the record written."""
    artifact = write_artifact(
        tmp / "a1",
        adapter_id="a1",
        params={"w": np.full((128, 128), 0.5, dtype=np.float32)},
        base_model_version="m-test",
        policy_version="v1",
        labels=["benign", "violating"],
        now=time.time(),
    )
    assert settings.kafka.bootstrap_servers and settings.redis.url
    redis = Redis.from_url(settings.redis.url.get_secret_value())
    try:
        async with open_journal(settings.kafka.bootstrap_servers, settings.kafka.topics) as j:
            assert await AdapterRegistry(redis, settings.redis.key_prefix, journal=j).register(
                artifact
            )
        # its passed gate report, as the trainer records it: `adapters promote` requires one
        await VerdictStore(redis, settings.redis.key_prefix).record(
            GateRecord(adapter_id="a1", policy_version="v1", passed=True, reason="test")
        )
    finally:
        await redis.aclose()


async def _send(bootstrap: str, topic: str, labels: list[ReviewLabel], rate: float) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for label in labels:
            await producer.send_and_wait(topic, encode(label), key=label.item_id.encode())
            await asyncio.sleep(1 / rate)
    finally:
        await producer.stop()


async def _request_items(settings: Settings, n: int) -> dict[str, bytes]:
    """Items 0..n-1 sent to review as the curator sends them (in the store and on the requests
    topic, the record); the reviewers' signing keys (issued by `reviewers add`)."""
    assert settings.kafka.bootstrap_servers and settings.redis.url
    now = time.time()
    requests = [
        ReviewRequest(
            request_id=f"rq-{i}",
            item_id=f"item-{i}",
            text=f"text {i}",
            reason=ReviewReason.UNCERTAIN,
            probabilities={"violating": 0.5},
            policy_version="v1",
            priority=0.5,
            requested_at=now,
        )
        for i in range(n)
    ]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        topic = settings.kafka.topics.review_requests
        # in one burst, as a curator sends a batch: multi-record batches, whose last one per
        # partition the rebuild once read only in part (tansu's end offset is that batch's base
        # offset): 41 of 330 requests were missing and their labels dead-lettered
        sent = [await producer.send(topic, encode(r), key=r.item_id.encode()) for r in requests]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    redis = Redis.from_url(settings.redis.url.get_secret_value())
    prefix, secret = settings.redis.key_prefix, settings.review.key_secret
    try:
        items = [
            ReviewedItem(r.item_id, r.text, None, 0.5, "uncertain", now, request_id=r.request_id)
            for r in requests
        ]
        await LabelStore(redis, prefix).record_requests("v1", items)
        keys = ReviewerKeys(redis, prefix, secret.get_secret_value().encode())
        found = {r: await keys.key_for(r) for r in REVIEWERS}
        return {r: k for r, k in found.items() if k is not None}
    finally:
        await redis.aclose()


def _labels(start: int, n: int, keys: dict[str, bytes]) -> list[ReviewLabel]:
    out = []
    for i in range(start, start + n):
        reviewer = REVIEWERS[i % len(REVIEWERS)]
        label = ReviewLabel(
            item_id=f"item-{i}",
            reviewer_id=reviewer,
            label="violating" if i % 3 else "benign",
            policy_version="v1",
            request_id=f"rq-{i}",
            labeled_at=time.time(),
        )
        out.append(signed(label, keys[reviewer]))
    return out


def _stored(url: str, prefix: str) -> int:
    async def body(redis: Redis) -> int:
        votes = await LabelStore(redis, prefix).all_votes("v1")
        return sum(len(v) for v in votes.values())

    try:
        return int(with_redis(url, body))
    except Exception:  # Redis is down at this moment
        return -1


def _wait_stored(url: str, prefix: str, n: int, timeout_s: float = 90.0) -> int:
    deadline = time.monotonic() + timeout_s
    while (got := _stored(url, prefix)) < n and time.monotonic() < deadline:
        time.sleep(0.2)
    return got


def _state(url: str, prefix: str) -> tuple[set[str], str | None, str | None]:
    async def body(redis: Redis) -> tuple[set[str], str | None, str | None]:
        active = await AdapterRegistry(redis, prefix).active("v1")
        return (
            await LabelStore(redis, prefix).registered(),
            await PolicyStore(redis, prefix).active_version(),
            None if active is None else active.adapter_id,
        )

    result: tuple[set[str], str | None, str | None] = with_redis(url, body)
    return result


def test_a_redis_killed_mid_stream_is_rebuilt_from_kafka(services: Any, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    topics = TopicNames().prefixed(f"t{tag}.")
    asyncio.run(ensure_topics(services.bootstrap_servers, topics.all(), 2))
    redis = PrivateRedis(tmp_path)
    redis.start()
    settings = _settings(services, redis.url, topics, tag, tmp_path)
    prefix = settings.redis.key_prefix
    collectors: list[WorkerProcess] = []
    try:
        # set-up through the product: reviewers and the policy by command, the adapter as the
        # trainer registers it, its promotion by command
        cli(settings, "reviewers", "add", *REVIEWERS)
        keys = asyncio.run(_request_items(settings, LABELS + 30))
        cli(settings, "policy", "publish", str(REPO / "deploy" / "policies" / "v1.yaml"))
        asyncio.run(_register_adapter(settings, tmp_path))
        cli(settings, "adapters", "promote", "a1", "--reason", "test")
        collectors.append(
            start_worker(settings, f"c1-{tag}", tmp_path / "c1.log", role="collector")
        )
        # labels flow; Redis is killed with SIGKILL mid-stream and comes back empty
        sending = Sending(settings, _labels(0, LABELS, keys), rate=60.0)
        assert _wait_stored(redis.url, prefix, 60) >= 60
        redis.kill()
        time.sleep(1.0)
        redis.start()
        assert _stored(redis.url, prefix) < 60  # empty indeed (or nearly: labels after restart)
        sending.join()
        time.sleep(3.0)
        collectors.pop().stop(timeout_s=20)

        # a collector started on the empty store rebuilds it before storing anything
        collectors.append(
            start_worker(settings, f"c2-{tag}", tmp_path / "c2.log", role="collector")
        )
        assert _stored(redis.url, prefix) == LABELS
        assert _state(redis.url, prefix) == (set(REVIEWERS), "v1", "a1")
        # and new labels are stored, not dead-lettered for an unregistered reviewer
        asyncio.run(
            _send(services.bootstrap_servers, topics.review_labels, _labels(LABELS, 30, keys), 200)
        )
        assert _wait_stored(redis.url, prefix, LABELS + 30) == LABELS + 30

        # `borderline store rebuild` over a complete store, twice: nothing changes
        before = with_redis(redis.url, lambda r: snapshot(r, prefix))
        first = cli(settings, "store", "rebuild")
        after_first = with_redis(redis.url, lambda r: snapshot(r, prefix))
        second = cli(settings, "store", "rebuild")
        after_second = with_redis(redis.url, lambda r: snapshot(r, prefix))
        assert after_first == before
        assert after_second == before
        for out in (first, second):
            label_line = next(line for line in out.splitlines() if line.startswith("label "))
            assert "duplicate=" in label_line and "stored=" not in label_line
            assert f"restored: {LABELS + 30} labels, 3 reviewers, active policy v1" in out
            assert "active adapter a1" in out
        assert "complete" in cli(settings, "store", "status")
    finally:
        for c in collectors:
            c.stop(timeout_s=20)
        if redis.process is not None and redis.process.poll() is None:
            redis.kill()


class Sending:
    """Send ``labels`` at ``rate`` per second from a thread, while the test kills Redis."""

    def __init__(self, settings: Settings, labels: list[ReviewLabel], *, rate: float) -> None:
        assert settings.kafka.bootstrap_servers
        self.thread = threading.Thread(
            target=asyncio.run,
            args=(
                _send(
                    settings.kafka.bootstrap_servers,
                    settings.kafka.topics.review_labels,
                    labels,
                    rate,
                ),
            ),
            daemon=True,
        )
        self.thread.start()

    def join(self) -> None:
        self.thread.join(timeout=120)
        assert not self.thread.is_alive(), "the labels were not all sent"


def test_the_demos_set_up_comes_back_from_the_record(
    services: Any, model_dir: Path, tmp_path: Path
) -> None:
    """`borderline demo` and `bench chaos` set up through `prepare`: the panel, its signing keys,
    v1 and the bootstrap adapter serving it must all be on the record, or a Redis lost mid-run
    comes back without the panel's keys and every label after it is dead-lettered (103 in a
    chaos run, before `prepare` recorded them)."""
    from adapters.policy.schema import load_policy
    from streams.demo.setup import prepare
    from streams.service.rebuild import rebuild_store

    tag = uuid.uuid4().hex[:8]
    topics = TopicNames().prefixed(f"t{tag}.")
    asyncio.run(ensure_topics(services.bootstrap_servers, topics.all(), 2))
    redis = PrivateRedis(tmp_path)
    redis.start()
    try:
        settings = _settings(services, redis.url, topics, tag, tmp_path).model_copy(
            update={"model": Settings().model.model_copy(update={"dir": model_dir})}
        )
        prefix = settings.redis.key_prefix
        policy = load_policy(REPO / "deploy" / "policies" / "v1.yaml")
        adapter = asyncio.run(prepare(settings, policy, REVIEWERS))
        secret = settings.review.key_secret.get_secret_value().encode()

        async def keys(client: Redis) -> dict[str, bytes]:
            return await ReviewerKeys(client, prefix, secret).ensure(REVIEWERS)

        before = with_redis(redis.url, keys)
        redis.kill()
        redis.start()  # empty

        async def rebuild(client: Redis) -> None:
            await rebuild_store(
                client, prefix, services.bootstrap_servers, topics, settings=settings
            )

        with_redis(redis.url, rebuild)
        assert _state(redis.url, prefix) == (set(REVIEWERS), "v1", adapter)
        assert with_redis(redis.url, keys) == before  # the same keys, not new ones
    finally:
        redis.kill()
