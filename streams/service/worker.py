"""The stream processes. `borderline worker`: a classify worker; it loads the model
(sha256-verified), checks that Redis answers and that every topic exists, serves /metrics, and
runs the faust app until Ctrl-C or SIGTERM; several share the partitions through the consumer
group. `borderline collector`: the label collector, a faust app of its own on the labels topic."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor

import faust
from redis.asyncio import Redis

from adapters.labels.store import LabelStore
from adapters.policy.store import PolicyStore
from adapters.registry.artifact import BOOTSTRAP_ARTIFACT, AdapterArtifact
from adapters.registry.store import AdapterRegistry
from adapters.review.window import CurationWindow
from models.scorer import Scorer
from streams.service.app import FaustSink, add_batch_agent, make_app
from streams.service.classify import Classifier
from streams.service.collect import Collector
from streams.service.control import ControlPlane, PolicyRoutings
from streams.service.curate import Curator, RedisReviewBudget
from streams.service.drift_watch import DriftWatch
from streams.service.ledger import RedisReviewLedger
from streams.service.metrics import Metrics, serve_metrics
from streams.service.retry import retry
from streams.service.serving import ServingState, routing_for
from streams.wire.settings import Settings
from streams.wire.topics import ensure_topics

__all__ = ["default_worker_id", "run_collector", "run_worker"]

log = logging.getLogger(__name__)


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


async def _prepare(settings: Settings, redis: Redis) -> None:
    kafka = settings.kafka
    assert kafka.bootstrap_servers
    await retry(
        lambda: redis.ping(),
        target="redis",
        attempts=settings.worker.retry_attempts,
        backoff_s=settings.worker.retry_backoff_s,
    )
    await ensure_topics(
        kafka.bootstrap_servers, kafka.topics.all(), kafka.partitions, kafka.replication_factor
    )


def _serve_metrics(settings: Settings) -> Metrics:
    return serve_metrics(settings.metrics.port, settings.metrics.host, "worker")


def _curator(settings: Settings, redis: Redis, embedding_dim: int, state: ServingState) -> Curator:
    ledger = RedisReviewLedger(redis, settings.redis.key_prefix, settings.redis.review_dedupe_ttl_s)
    store = LabelStore(redis, settings.redis.key_prefix)
    review = settings.review
    return Curator(
        ledger=ledger,
        policy=state.routing,
        store=store,
        budget=RedisReviewBudget(
            redis,
            store,
            settings.redis.key_prefix,
            labels_per_hour=review.labels_per_hour,
            max_open=review.max_open,
            shares={
                "uncertain": review.share_uncertain,
                "boundary": review.share_boundary,
                "audit": review.share_audit,
                "policy_change": review.share_boundary,
            },
        ),
        window=CurationWindow(review.window_size, embedding_dim),
        mine_every=review.mine_every,
        max_pairs=review.max_pairs,
        audit_rate=review.audit_rate,
        evidence_k=review.evidence_k,
        seed=review.seed,
        evidence_refresh_s=review.evidence_refresh_s,
    )


def run_worker(settings: Settings, worker_id: str | None = None, loglevel: str = "info") -> None:
    """Run until stopped. ``settings`` must name the broker and Redis (resolved by the CLI)."""
    assert settings.redis.url is not None
    worker_id = worker_id or default_worker_id()
    scorer = Scorer.from_dir(
        settings.model.dir,
        max_length=settings.model.max_length,
        threads=settings.worker.scorer_threads,
    )
    metrics = _serve_metrics(settings)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    redis = Redis.from_url(settings.redis.url.get_secret_value())
    loop.run_until_complete(_prepare(settings, redis))
    registry = AdapterRegistry(redis, settings.redis.key_prefix)
    # the base's own adapter is always in the registry, so it can be promoted back to
    bootstrap = settings.model.dir / BOOTSTRAP_ARTIFACT
    if bootstrap.is_dir():
        artifact = AdapterArtifact.load(bootstrap, expected_base=scorer.model_version)
        loop.run_until_complete(registry.register(artifact))
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scorer")
    app = make_app(settings, app_id=settings.kafka.app_id, metrics=metrics)
    drift = DriftWatch(redis, settings.redis.key_prefix, metrics, settings.drift)
    configured = ServingState(routing_for(settings.policy), scorer.adapter_version)
    classifier = Classifier(
        model=scorer,
        executor=executor,
        sink=FaustSink(app),
        curator=_curator(settings, redis, scorer.embedding_dim, configured),
        metrics=metrics,
        topics=settings.kafka.topics,
        state=configured,
        worker=worker_id,
        max_text_bytes=settings.worker.max_text_bytes,
        retry_attempts=settings.worker.retry_attempts,
        retry_backoff_s=settings.worker.retry_backoff_s,
        on_scored=drift.observe,
    )
    control = ControlPlane(
        policies=PolicyStore(redis, settings.redis.key_prefix),
        registry=registry,
        redis=redis,
        model=scorer,
        serving=classifier,
        cache_dir=settings.worker.adapter_cache_dir,
        metrics=metrics,
        worker=worker_id,
        poll_interval_s=settings.worker.adapter_poll_s,
        on_swap=drift.adapter_changed,
    )
    # before any traffic: a published policy overrides the configured default, and a worker
    # that starts after a promotion serves the active adapter from its first item
    loop.run_until_complete(control.sync())
    add_batch_agent(
        app,
        topic=settings.kafka.topics.items,
        name="classify",
        handler=classifier,
        batch_max=settings.worker.batch_max_size,
        batch_wait_s=settings.worker.batch_max_wait_s,
    )

    @app.task
    async def follow_control_plane() -> None:
        await control.run()

    log.info(
        "worker %s serving model %s adapter %s policy %s",
        worker_id,
        scorer.model_version,
        classifier.state.adapter_id,
        classifier.state.policy_version,
    )
    worker = faust.Worker(app, loop=loop, loglevel=loglevel, quiet=True)
    try:
        worker.execute_from_commandline()
    finally:
        executor.shutdown(wait=False)


def run_collector(settings: Settings, worker_id: str | None = None, loglevel: str = "info") -> None:
    """Run the label collector until stopped."""
    assert settings.redis.url is not None
    worker_id = worker_id or f"collector-{default_worker_id()}"
    metrics = _serve_metrics(settings)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    redis = Redis.from_url(settings.redis.url.get_secret_value())
    loop.run_until_complete(_prepare(settings, redis))
    app = make_app(settings, app_id=f"{settings.kafka.app_id}-collector", metrics=metrics)
    review = settings.review
    collector = Collector(
        store=LabelStore(redis, settings.redis.key_prefix),
        routings=PolicyRoutings(PolicyStore(redis, settings.redis.key_prefix), settings.policy),
        sink=FaustSink(app),
        metrics=metrics,
        topics=settings.kafka.topics,
        worker=worker_id,
        agreement_threshold=review.agreement_threshold,
        min_shared=review.min_shared,
        retry_attempts=settings.worker.retry_attempts,
        retry_backoff_s=settings.worker.retry_backoff_s,
    )
    collector.on_feedback = DriftWatch(
        redis, settings.redis.key_prefix, metrics, settings.drift
    ).feedback
    add_batch_agent(
        app,
        topic=settings.kafka.topics.review_labels,
        name="collect",
        handler=collector,
        batch_max=64,
        batch_wait_s=0.1,
    )

    @app.timer(10.0)
    async def recompute_agreement() -> None:
        await collector.recompute()
        active = await PolicyStore(redis, settings.redis.key_prefix).active_version()
        policy = active or settings.policy.version
        metrics.review_open.set(await collector.store.open_count(policy))

    log.info("collector %s on %s", worker_id, settings.kafka.topics.review_labels)
    faust.Worker(app, loop=loop, loglevel=loglevel, quiet=True).execute_from_commandline()
