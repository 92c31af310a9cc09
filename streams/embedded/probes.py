"""Readiness probes for the embedded services: a real Kafka produce/consume round trip and a Redis
SET/GET, each in a fresh event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.embedded.processes import HOST, ServiceName

_HEALTH_TOPIC = "_borderline.healthcheck"


_HEALTH_KEY = "_borderline:healthcheck"


_T = TypeVar("_T")


def round_trip(name: ServiceName, port: int, timeout_s: float) -> None:
    if name == "redis":
        _redis_round_trip(port, timeout_s)
    else:
        _run_in_fresh_loop(lambda: _kafka_round_trip(f"{HOST}:{port}", timeout_s))


async def _kafka_round_trip(bootstrap_servers: str, timeout_s: float) -> None:
    """Create the health topic, produce one unique value and read it back from its offset."""
    token = uuid.uuid4().hex.encode()
    async with asyncio.timeout(timeout_s):
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
        await admin.start()
        try:
            # tansu also auto-creates on produce (with 3 partitions); one partition is simpler.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(_HEALTH_TOPIC, 1, 1)])
        finally:
            await admin.close()
        # tansu 0.6 fails InitProducerId, so the idempotent producer is off on purpose.
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, enable_idempotence=False)
        await producer.start()
        try:
            sent = await producer.send_and_wait(_HEALTH_TOPIC, token, partition=0)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        try:
            partition = TopicPartition(_HEALTH_TOPIC, 0)
            consumer.assign([partition])
            consumer.seek(partition, sent.offset)
            while True:
                batches = await consumer.getmany(partition, timeout_ms=200)
                if any(msg.value == token for msg in batches.get(partition, [])):
                    return
        finally:
            await consumer.stop()


def _redis_round_trip(port: int, timeout_s: float) -> None:
    client = redis.Redis(
        host=HOST, port=port, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    try:
        token = uuid.uuid4().hex
        client.set(_HEALTH_KEY, token, ex=60)
        value = client.get(_HEALTH_KEY)
        if value != token.encode():
            raise RuntimeError(f"GET {_HEALTH_KEY} returned {value!r}, expected {token!r}")
        client.delete(_HEALTH_KEY)
    finally:
        client.close()


def _run_in_fresh_loop(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion on a new event loop in a helper thread.

    Always a separate thread: the caller may have a running loop (asyncio.run would refuse), or
    a set-but-idle loop that asyncio.run in this thread would replace and then unset.
    """
    outcome: list[_T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(asyncio.run(factory()))
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=target, name="borderline-services-check", daemon=True)
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return outcome[0]


def tcp_open(port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def redis_ping(port: int) -> bool:
    client = redis.Redis(host=HOST, port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()
