"""The stream processes. `borderline worker`: a classify worker; it loads the model
(sha256-verified), checks that Redis answers and that every topic exists, serves /metrics, and
runs the faust app until Ctrl-C or SIGTERM; several share the partitions through the consumer
group. `borderline collector`: the label collector, a faust app of its own on the labels topic.

Each builds one retry policy (`streams.service.retry`, the `BORDERLINE_RESILIENCE__*` settings)
that every broker and Redis call of the process goes through, and runs a watchdog that probes
both, so a busy or an idle process exits with one line once either outlasted the outage budget."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import faust
from redis.asyncio import Redis
from threadpoolctl import threadpool_limits

from adapters.labels.store import LabelStore
from adapters.policy.store import PolicyStore
from adapters.registry.artifact import BOOTSTRAP_ARTIFACT, AdapterArtifact
from adapters.registry.store import AdapterRegistry
from adapters.review.window import CurationWindow
from models.scorer import AHEAD_MAX_CHARS, Scorer
from streams.service.admission import LabelAdmission
from streams.service.app import (
    FaustSink,
    add_batch_agent,
    add_guarded_task,
    add_periodic,
    add_topic_check,
    forget_positions,
    make_app,
    run_app,
)
from streams.service.classify import Classifier, TokeniseAhead
from streams.service.collect import Collector
from streams.service.control import ControlPlane, PolicyRoutings
from streams.service.curate import Curator, RedisReviewBudget
from streams.service.decision_cache import DecisionLRU
from streams.service.drift_watch import DriftWatch
from streams.service.health import Progress
from streams.service.ledger import RedisReviewLedger, ReviewLedger
from streams.service.metrics import Health, Metrics, serve_metrics
from streams.service.progress import GroupLag, Tracked
from streams.service.rebuild import store_guard
from streams.service.retry import Retrying, open_redis
from streams.service.serving import ServingState, routing_for
from streams.service.shared_cache import DecisionCache, TwinLedger
from streams.service.topic_watch import TopicWatch
from streams.service.trust import adapter_trust
from streams.service.watchdog import Watchdog, probe_interval
from streams.wire.security import KafkaSecurity
from streams.wire.settings import Settings, default_secret_warning
from streams.wire.topics import ensure_topics

__all__ = ["default_worker_id", "run_collector", "run_worker"]

log = logging.getLogger(__name__)

TOPIC_CHECK_S = 2.0
"""How often a process checks that its topics still exist (one metadata request)."""


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


async def _prepare(settings: Settings, redis: Redis, retry: Retrying) -> None:
    kafka = settings.kafka
    assert kafka.bootstrap_servers
    if (warning := default_secret_warning(settings)) is not None:
        log.warning(warning)
    await retry("redis", redis.ping)
    await ensure_topics(
        kafka.bootstrap_servers,
        kafka.topics.all(),
        kafka.partitions,
        kafka.replication_factor,
        security=KafkaSecurity.of(kafka),
    )


def _add_watchdog(app: faust.App, settings: Settings, redis: Redis, retry: Retrying) -> None:
    """Probe the broker and Redis every few seconds (see `streams.service.watchdog`)."""
    add_guarded_task(app, Watchdog.for_services(settings, redis, retry).run)


def _add_topic_check(app: faust.App, settings: Settings, retry: Retrying) -> None:
    """Every few seconds, make again the topics a restarted broker lost (`TopicWatch`)."""
    kafka = settings.kafka
    assert kafka.bootstrap_servers
    watch = TopicWatch(
        kafka.bootstrap_servers,
        kafka.topics.all(),
        kafka.partitions,
        kafka.replication_factor,
        timeout_s=settings.resilience.call_timeout_s,
        on_recreated=lambda _lost: forget_positions(app),
        security=KafkaSecurity.of(kafka),
    )
    interval_s = min(TOPIC_CHECK_S, probe_interval(settings.resilience.outage_budget_s))
    add_topic_check(app, watch, interval_s=interval_s, retry=retry)


def _serve_metrics(settings: Settings, progress: Progress, what: str) -> Metrics:
    """/metrics, /healthz and /readyz on the metrics port (`streams.service.health`)."""
    m = settings.metrics
    return serve_metrics(m.port, m.host, what, Health(progress, m.stuck_after_s))


def _add_lag(
    app: faust.App, settings: Settings, group: str, topic: str, metrics: Metrics, progress: Progress
) -> None:
    """Every ``metrics.lag_interval_s``, the group's lag on ``topic`` from the broker's committed
    offsets into the gauge and the progress, and whether the app holds partitions."""
    assert settings.kafka.bootstrap_servers

    def assigned() -> bool:
        return bool(app.consumer.assignment())

    lag = GroupLag(
        settings.kafka.bootstrap_servers,
        group,
        [topic],
        metrics=metrics,
        progress=progress,
        assigned=assigned,
        timeout_s=settings.resilience.call_timeout_s,
        client_options=KafkaSecurity.of(settings.kafka).options(),
    )
    app.timer(settings.metrics.lag_interval_s, name="consumer_lag")(lag.poll)


def _curator(
    settings: Settings, redis: Redis, embedding_dim: int, state: ServingState, metrics: Metrics
) -> Curator:
    ledger: ReviewLedger = RedisReviewLedger(
        redis, settings.redis.key_prefix, settings.redis.review_dedupe_ttl_s
    )
    if settings.cache.enabled:  # a cached twin of a requested text is not requested again
        ledger = TwinLedger(
            ledger,
            redis,
            settings.redis.key_prefix,
            ttl_s=settings.redis.review_dedupe_ttl_s,
            metrics=metrics,
        )
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
        overlap_rate=review.overlap_rate,
        # boundary pairs are mined off the event loop: no batch waits for the clustering
        miner=ThreadPoolExecutor(max_workers=1, thread_name_prefix="miner"),
    )


def _decision_cache(
    settings: Settings, redis: Redis, metrics: Metrics, scorer: Scorer
) -> DecisionCache | None:
    cache = settings.cache
    if not cache.enabled:
        return None
    return DecisionCache(
        redis,
        settings.redis.key_prefix,
        lru=DecisionLRU(max_items=cache.max_items, max_bytes=cache.max_bytes),
        metrics=metrics,
        labels=scorer.labels,
        dim=scorer.embedding_dim,
        ttl_s=cache.redis_ttl_s,
        timeout_s=cache.redis_timeout_s,
    )


def one_thread_beside_the_scorer() -> threadpool_limits:
    """The scorer owns the cores: scikit-learn's k-means (the boundary mining, on its own
    thread) and the BLAS of numpy and scipy run on one thread each, for the rest of the process
    (onnxruntime's pool is its own). With two threads each, a mining on 2 cores kept the control
    plane from hearing of a promotion for up to 2 s and left the scorers idle during swaps
    (`bench swap`, README). Returns what restores the limits (tests)."""
    return threadpool_limits(limits=1)


def run_worker(settings: Settings, worker_id: str | None = None, loglevel: str = "info") -> None:
    """Run until stopped. ``settings`` must name the broker and Redis (resolved by the CLI)."""
    assert settings.redis.url is not None
    worker_id = worker_id or default_worker_id()
    one_thread_beside_the_scorer()
    progress = Progress(started_at=time.time())
    metrics = _serve_metrics(settings, progress, "worker")
    scorer = Scorer.from_dir(
        settings.model.dir,
        max_length=settings.model.max_length,
        threads=settings.worker.scorer_threads,
    )

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    redis = open_redis(settings.redis)
    retry = Retrying.for_process(settings, metrics=metrics)
    loop.run_until_complete(_prepare(settings, redis, retry))
    # only adapters the trainer signed (or the base's own, as the model folder has it) are loaded
    registry = AdapterRegistry(redis, settings.redis.key_prefix, trust=adapter_trust(settings))
    # the base's own adapter is always in the registry, so it can be promoted back to
    bootstrap = settings.model.dir / BOOTSTRAP_ARTIFACT
    if bootstrap.is_dir():
        artifact = AdapterArtifact.load(bootstrap, expected_base=scorer.model_version)
        loop.run_until_complete(registry.register(artifact))
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scorer")
    metrics.tokenised_ahead.set_function(lambda: scorer.ahead_hits)
    app = make_app(settings, app_id=settings.kafka.app_id)
    drift = DriftWatch(redis, settings.redis.key_prefix, metrics, settings.drift)
    configured = ServingState(routing_for(settings.policy), scorer.adapter_version)
    curator = _curator(settings, redis, scorer.embedding_dim, configured, metrics)
    classifier = Classifier(
        model=scorer,
        executor=executor,
        sink=FaustSink(app),
        curator=curator,
        metrics=metrics,
        topics=settings.kafka.topics,
        state=configured,
        worker=worker_id,
        max_text_bytes=settings.worker.max_text_bytes,
        # a drift flag raised during an outage waits for Redis like the rest of the batch
        on_scored=lambda batch: retry("redis", lambda: drift.observe(batch)),
        retry=retry,
        cache=_decision_cache(settings, redis, metrics, scorer),
        twins=curator.ledger if isinstance(curator.ledger, TwinLedger) else None,
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
        retry=retry,
        gate=classifier.gate,  # the next batch waits for an adapter being switched in
    )
    # before any traffic: a published policy overrides the configured default, and a worker
    # that starts after a promotion serves the active adapter from its first item
    loop.run_until_complete(control.sync())
    progress.loaded = True  # the model and the live adapter
    add_batch_agent(
        app,
        topic=settings.kafka.topics.items,
        name="classify",
        handler=Tracked(classifier, progress),
        batch_max=settings.worker.batch_max_size,
        batch_wait_s=settings.worker.batch_max_wait_s,
        # a text the scorer keeps ahead fits in 6 bytes of JSON a character (\uXXXX), and more
        peek=TokeniseAhead(scorer, max_bytes=6 * AHEAD_MAX_CHARS + 4096)
        if settings.worker.tokenise_ahead
        else None,
    )
    add_guarded_task(app, control.run)  # exits once Redis outlasted the outage budget
    _add_lag(app, settings, settings.kafka.app_id, settings.kafka.topics.items, metrics, progress)
    _add_watchdog(app, settings, redis, retry)
    _add_topic_check(app, settings, retry)
    log.info(
        "worker %s serving model %s adapter %s policy %s",
        worker_id,
        scorer.model_version,
        classifier.state.adapter_id,
        classifier.state.policy_version,
    )
    try:
        run_app(app, loop, loglevel=loglevel, log_every_s=settings.resilience.log_interval_s)
    finally:
        executor.shutdown(wait=False)


def run_collector(settings: Settings, worker_id: str | None = None, loglevel: str = "info") -> None:
    """Run the label collector until stopped."""
    assert settings.redis.url is not None
    worker_id = worker_id or f"collector-{default_worker_id()}"
    progress = Progress(started_at=time.time())
    metrics = _serve_metrics(settings, progress, "collector")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    redis = open_redis(settings.redis)
    retry = Retrying.for_process(settings, metrics=metrics)
    loop.run_until_complete(_prepare(settings, redis, retry))
    group = f"{settings.kafka.app_id}-collector"
    app = make_app(settings, app_id=group)
    review = settings.review
    prefix = settings.redis.key_prefix
    store = LabelStore(redis, prefix)
    collector = Collector(
        store=store,
        admission=LabelAdmission.build(redis, prefix, review, settings.policy),
        routings=PolicyRoutings(PolicyStore(redis, prefix), settings.policy),
        sink=FaustSink(app),
        metrics=metrics,
        topics=settings.kafka.topics,
        worker=worker_id,
        agreement_threshold=review.agreement_threshold,
        min_shared=review.min_shared,
        min_panel=review.min_panel,
        trust_confidence=review.trust_confidence,
        retry=retry,
        guard=store_guard(settings, redis),  # Redis lost under a running collector: rebuilt
        overlap_rate=review.overlap_rate,  # the curator's, to know which asked for two
        seed=review.seed,
        registry=AdapterRegistry(redis, prefix),  # which policies have an adapter of their own
    )
    watch = DriftWatch(redis, settings.redis.key_prefix, metrics, settings.drift)
    collector.on_feedback = lambda disagreements: retry(
        "redis", lambda: watch.feedback(disagreements)
    )
    add_batch_agent(
        app,
        topic=settings.kafka.topics.review_labels,
        name="collect",
        handler=Tracked(collector, progress),
        batch_max=64,
        batch_wait_s=0.1,
    )

    policies = PolicyStore(redis, settings.redis.key_prefix)

    async def recompute_agreement() -> None:
        await collector.recompute()
        active = await policies.active_version()
        policy = active or settings.policy.version
        metrics.review_open.set(await collector.store.open_count(policy))

    # a stall is retried under the outage budget, never the end of the collector by itself
    add_periodic(
        app,
        recompute_agreement,
        interval_s=10.0,
        name="recompute_agreement",
        retry=retry,
        target="redis",
    )
    progress.loaded = True  # Redis answers, the topics exist
    _add_lag(app, settings, group, settings.kafka.topics.review_labels, metrics, progress)
    _add_watchdog(app, settings, redis, retry)
    _add_topic_check(app, settings, retry)
    log.info("collector %s on %s", worker_id, settings.kafka.topics.review_labels)
    run_app(app, loop, loglevel=loglevel, log_every_s=settings.resilience.log_interval_s)
