"""`borderline console`: the clients built once (Redis, a producer for labels and the reviewer
record, a consumer of review requests), the app, and its background work in one event loop,
served by uvicorn until interrupted. The feed's progress and its group's lag, read from the
broker every ``metrics.lag_interval_s`` (`streams.service.progress.GroupLag`), answer
``/healthz`` and ``/readyz`` as in every other process."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import uvicorn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from argon2 import PasswordHasher
from redis.asyncio import Redis

from adapters.adapt.verdicts import VerdictStore
from adapters.labels.keyring import ReviewerKeys
from adapters.labels.store import LabelStore
from adapters.policy.store import PolicyStore
from adapters.registry.store import AdapterRegistry
from streams.console.app import build_app
from streams.console.audit import AuditLog
from streams.console.desk import ExclusionView, PolicyView, ReviewDesk
from streams.console.feed import Background
from streams.console.keys import ConsoleKeys
from streams.console.metrics import ConsoleMetrics
from streams.console.outbox import LabelOutbox, LabelSigner
from streams.console.queue import TaskQueue
from streams.console.sessions import SessionStore, Throttle
from streams.console.signing import keyed_signer
from streams.console.users import UserStore
from streams.console.web import Console
from streams.service.commits import member_commits_only
from streams.service.health import Progress
from streams.service.metrics import Health
from streams.service.progress import GroupLag
from streams.service.record import KafkaJournal, Producer
from streams.service.retry import Retrying
from streams.wire.security import KafkaSecurity, redis_options
from streams.wire.settings import Settings, default_secret_warning

__all__ = ["Assembled", "assemble", "serve_console"]

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 60.0  # joining the consumer group may take this long when all is well
C = TypeVar("C", AIOKafkaConsumer, AIOKafkaProducer)


@dataclass
class Assembled:
    console: Console
    background: Background


def assemble(
    settings: Settings,
    redis: Redis,
    producer: Producer,
    *,
    signer: LabelSigner | None = None,
    hasher: PasswordHasher | None = None,
    clock: Callable[[], float] = time.time,
    retry: Retrying | None = None,
) -> Assembled:
    """The console and its background work over clients built by the caller."""
    c, prefix = settings.console, settings.redis.key_prefix
    keys = ConsoleKeys(prefix)
    journal = KafkaJournal(producer, settings.kafka.topics, actor="console")
    if signer is None:  # each label signed with its reviewer's key, issued when missing
        secret = settings.review.key_secret.get_secret_value().encode()
        signer = keyed_signer(ReviewerKeys(redis, prefix, secret, journal=journal))
    labels = LabelStore(redis, prefix, journal=journal)
    metrics = ConsoleMetrics()
    audit = AuditLog(redis, keys)
    queue = TaskQueue(
        redis, prefix, lease_s=c.lease_s, opinions=c.opinions, max_age_s=c.request_max_age_s
    )
    outbox = LabelOutbox(
        redis, keys, producer, settings.kafka.topics.review_labels, signer, undo_s=c.undo_s
    )
    policies = PolicyView(
        PolicyStore(redis, prefix), settings.policy.version, settings.policy.category
    )
    desk = ReviewDesk(
        queue,
        outbox,
        audit,
        policies,
        metrics,
        clock,
        keys=c.hotkeys,
        exclusions=ExclusionView(labels.excluded),
    )
    console = Console(
        redis=redis,
        users=UserStore(redis, keys, hasher or PasswordHasher(), labels),
        sessions=SessionStore(redis, keys, c.session_ttl_s),
        throttle=Throttle(redis, keys, c.login_attempts, c.login_window_s),
        audit=audit,
        desk=desk,
        labels=labels,
        registry=AdapterRegistry(redis, prefix),
        verdicts=VerdictStore(redis, prefix),
        metrics=metrics,
        secure_cookies=c.secure_cookies,
        show_score=c.show_score,
        min_shared=settings.review.min_shared,
        clock=clock,
    )
    # the feed's progress: loaded once built, live unless requests wait and nothing is fed
    console.health = Health(
        Progress(started_at=clock(), loaded=True), settings.metrics.stuck_after_s, clock
    )
    background = Background(queue, outbox, metrics, policies.active_version, clock)
    background.progress = console.health.progress
    if retry is not None:
        background.retry = retry
    return Assembled(console, background)


async def _started(client: C) -> C:
    """``client`` started (a fresh one per try: one that failed to start is not reused)."""
    try:
        await client.start()
    except BaseException:
        await client.stop()
        raise
    return client


async def _every(interval_s: float, step: Callable[[], Awaitable[None]]) -> None:
    """``step`` now and every ``interval_s`` (it says its own failures: `GroupLag.poll`)."""
    while True:
        await step()
        await asyncio.sleep(interval_s)


async def _run(settings: Settings, host: str, port: int) -> None:
    assert settings.redis.url is not None and settings.kafka.bootstrap_servers
    kafka, topics = settings.kafka, settings.kafka.topics
    bootstrap = settings.kafka.bootstrap_servers
    retry = Retrying.for_process(settings)
    redis = Redis.from_url(settings.redis.url.get_secret_value(), **redis_options(settings.redis))
    security = KafkaSecurity.of(kafka)
    producer = await retry(
        "kafka",
        lambda: _started(
            AIOKafkaProducer(
                bootstrap_servers=kafka.bootstrap_servers, acks="all", **security.options()
            )
        ),
    )
    group = f"{kafka.app_id}-console"
    consumer = await retry(
        "kafka",
        lambda: _started(
            AIOKafkaConsumer(
                topics.review_requests,
                bootstrap_servers=kafka.bootstrap_servers,
                group_id=group,
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                **security.options(),
            )
        ),
        attempt_timeout_s=JOIN_TIMEOUT_S,
    )
    member_commits_only(consumer)  # a commit retried across a broker restart is refused
    assembled = assemble(settings, redis, producer, retry=retry)
    app = build_app(assembled.console)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info"))
    bg = assembled.background
    lag = GroupLag(
        bootstrap,
        group,
        [topics.review_requests],
        metrics=assembled.console.metrics,
        progress=assembled.console.health.progress,
        assigned=lambda: bool(consumer.assignment()),
        timeout_s=settings.resilience.call_timeout_s,
        client_options=security.options(),
    )
    tasks = [
        asyncio.create_task(bg.feed(consumer)),
        asyncio.create_task(bg.send_labels()),
        asyncio.create_task(bg.expire_requests()),
        asyncio.create_task(_every(settings.metrics.lag_interval_s, lag.poll)),
    ]
    try:
        log.info("console on http://%s:%d", host, port)
        serving = asyncio.create_task(server.serve())
        done, _ = await asyncio.wait([serving, *tasks], return_when=asyncio.FIRST_COMPLETED)
        if serving not in done:  # background work died: stop loudly, a supervisor restarts us
            server.should_exit = True
            await serving
            for task in done:
                task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await lag.close()
        await consumer.stop()
        await producer.stop()
        await redis.aclose()


def serve_console(settings: Settings, *, host: str, port: int) -> int:
    if (warning := default_secret_warning(settings)) is not None:
        log.warning(warning)
    asyncio.run(_run(settings, host, port))
    return 0
