"""Unit tests for streams.service.shared_cache against the unit session's real redis-server: one
model call per distinct text, hits from memory and from another worker through Redis, no hit
across a swap or a policy change, a failing or paused Redis costs a model call and is counted,
and the review ledger that leaves a cached twin out of review; then the classifier with a cache:
full decision records marked cached, identical to the scored ones."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from redis.asyncio import Redis

from adapters.review.routing import RoutingPolicy
from models.scorer import ScoreBatch
from streams.service.classify import Classifier
from streams.service.curate import Curator
from streams.service.decision_cache import DecisionLRU, text_hash
from streams.service.ledger import RedisReviewLedger
from streams.service.metrics import Metrics
from streams.service.outbox import RawRecord
from streams.service.serving import ServingState
from streams.service.shared_cache import DecisionCache, TwinLedger
from streams.wire.messages import Decision, ReviewRequest, decode
from streams.wire.topics import TopicNames
from tests.unit.streams.service.test_classify import FakeScore, FakeSink

LABELS = ("benign", "violating")
DIM = 4
TOPICS = TopicNames()
POLICY = RoutingPolicy("v1", 0.5, 0.3, 0.7)


class Model:
    """Scores every text by its length (so twins score alike), and counts what it scored."""

    def __init__(self) -> None:
        self.scored: list[list[str]] = []

    async def __call__(self, texts: list[str]) -> tuple[ScoreBatch, float]:
        self.scored.append(list(texts))
        p = np.array([min(0.99, len(t) / 100) for t in texts], dtype=np.float32)
        emb = np.tile(p[:, None], (1, DIM)).astype(np.float32)
        return ScoreBatch(np.stack([1 - p, p], axis=1), emb, LABELS, "a1"), 0.01


def _cache(redis: Redis, prefix: str, metrics: Metrics, **bounds: int) -> DecisionCache:
    return DecisionCache(
        redis,
        prefix,
        lru=DecisionLRU(
            max_items=bounds.get("max_items", 100), max_bytes=bounds.get("max_bytes", 1 << 20)
        ),
        metrics=metrics,
        labels=LABELS,
        dim=DIM,
        ttl_s=60,
        timeout_s=0.05,
    )


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def _hits(metrics: Metrics, tier: str) -> float:
    return _sample(metrics, "borderline_decision_cache_hits_total", tier=tier)


TEXTS = ["Buy pills now", "buy  PILLS now", "hello grandma", "Buy pills now"]


def test_twins_are_scored_once_then_served_from_memory(run_redis: Any, prefix: str) -> None:
    async def body(redis: Redis) -> None:
        metrics, model = Metrics(), Model()
        cache = _cache(redis, prefix, metrics)
        first = await cache.scores(TEXTS, model="m", adapter="a1", policy="v1", score=model)
        assert model.scored == [["Buy pills now", "hello grandma"]]  # one per distinct text
        assert first.cached == [False, True, False, True]
        assert first.hashes == [text_hash(t) for t in TEXTS]
        np.testing.assert_array_equal(first.batch.probabilities[0], first.batch.probabilities[1])
        assert _hits(metrics, "batch") == 2
        assert _sample(metrics, "borderline_decision_cache_misses_total") == 2

        again = await cache.scores(TEXTS, model="m", adapter="a1", policy="v1", score=model)
        assert len(model.scored) == 1 and again.cached == [True] * 4 and again.scoring_s == 0.0
        np.testing.assert_array_equal(again.batch.probabilities, first.batch.probabilities)
        np.testing.assert_array_equal(again.batch.embeddings, first.batch.embeddings)
        assert again.batch.adapter_id == "a1" and again.batch.labels == LABELS
        assert _hits(metrics, "memory") == 4
        assert _sample(metrics, "borderline_decision_cache_bytes") == cache.lru.bytes > 0

    run_redis(body)


def test_another_worker_hits_through_redis(run_redis: Any, prefix: str) -> None:
    async def body(redis: Redis) -> None:
        model = Model()
        one, two = Metrics(), Metrics()
        await _cache(redis, prefix, one).scores(
            TEXTS, model="m", adapter="a1", policy="v1", score=model
        )
        other = _cache(redis, prefix, two)  # a second worker: its own LRU, the same Redis
        got = await other.scores(TEXTS, model="m", adapter="a1", policy="v1", score=model)
        assert len(model.scored) == 1 and got.cached == [True] * 4
        assert _hits(two, "redis") == 4 and _hits(two, "memory") == 0
        await other.scores(TEXTS, model="m", adapter="a1", policy="v1", score=model)
        assert _hits(two, "memory") == 4  # a Redis hit is kept in memory too
        assert await redis.ttl(other.key(next(iter(other.lru._entries)))) > 0

    run_redis(body)


def test_a_swap_or_a_policy_change_never_reads_an_old_decision(run_redis: Any, prefix: str) -> None:
    async def body(redis: Redis) -> None:
        model, metrics = Model(), Metrics()
        cache = _cache(redis, prefix, metrics)
        texts = ["win a prize"]
        await cache.scores(texts, model="m", adapter="a1", policy="v1", score=model)
        swapped = await cache.scores(texts, model="m", adapter="a2", policy="v1", score=model)
        changed = await cache.scores(texts, model="m", adapter="a1", policy="v2", score=model)
        rebased = await cache.scores(texts, model="m2", adapter="a1", policy="v1", score=model)
        assert len(model.scored) == 4
        assert swapped.cached == changed.cached == rebased.cached == [False]
        back = await cache.scores(texts, model="m", adapter="a1", policy="v1", score=model)
        assert back.cached == [True] and len(model.scored) == 4  # a rollback finds it again

    run_redis(body)


def test_bounds_evict_and_evictions_are_counted(run_redis: Any, prefix: str) -> None:
    async def body(redis: Redis) -> None:
        model, metrics = Model(), Metrics()
        cache = _cache(redis, prefix, metrics, max_items=3)
        texts = [f"creative number {i}" for i in range(5)]
        await cache.scores(texts, model="m", adapter="a1", policy="v1", score=model)
        assert len(cache.lru) == 3
        assert _sample(metrics, "borderline_decision_cache_evictions_total") == 2
        got = await cache.scores(texts, model="m", adapter="a1", policy="v1", score=model)
        assert got.cached == [True] * 5  # the evicted two came back from Redis
        assert _hits(metrics, "redis") == 2 and _hits(metrics, "memory") == 3

    run_redis(body)


def test_a_redis_that_fails_costs_a_model_call_counted(prefix: str) -> None:
    async def body() -> None:
        redis = Redis.from_url("unix:///nonexistent/redis.sock")
        model, metrics = Model(), Metrics()
        cache = _cache(redis, prefix, metrics)
        got = await cache.scores(["a", "b"], model="m", adapter="a1", policy="v1", score=model)
        assert got.cached == [False, False] and len(model.scored) == 1
        for operation in ("read", "write"):
            failures = "borderline_decision_cache_redis_failures_total"
            assert _sample(metrics, failures, operation=operation) == 1
        again = await cache.scores(["a"], model="m", adapter="a1", policy="v1", score=model)
        assert again.cached == [True]  # the process's own tier still serves
        await redis.aclose()

    asyncio.run(body())


def test_a_paused_redis_is_waited_for_no_longer_than_the_timeout(
    redis_url: str, prefix: str
) -> None:
    async def body() -> None:
        admin, redis = Redis.from_url(redis_url), Redis.from_url(redis_url)
        model, metrics = Model(), Metrics()
        cache = _cache(redis, prefix, metrics)
        await redis.ping()
        await admin.execute_command("CLIENT", "PAUSE", "400", "ALL")
        loop = asyncio.get_running_loop()
        started = loop.time()
        got = await cache.scores(["x"], model="m", adapter="a1", policy="v1", score=model)
        assert loop.time() - started < 0.3
        assert got.cached == [False]
        failures = "borderline_decision_cache_redis_failures_total"
        assert _sample(metrics, failures, operation="read") == 1
        await asyncio.sleep(0.5)
        await admin.aclose()
        await redis.aclose()

    asyncio.run(body())


# --- review twins ---------------------------------------------------------------------------------


def test_twin_ledger_leaves_out_cached_twins_of_reviewed_texts(run_redis: Any, prefix: str) -> None:
    async def body(redis: Redis) -> None:
        metrics = Metrics()
        ledger = TwinLedger(
            RedisReviewLedger(redis, prefix, 60), redis, prefix, ttl_s=60, metrics=metrics
        )
        h = {"i1": text_hash("same ad"), "i2": text_hash("SAME  ad"), "i3": text_hash("other")}
        ledger.expect(h, twins=set())
        assert await ledger.already_requested("v1", ["i1", "i3"]) == [False, False]
        await ledger.mark_requested("v1", ["i1"])

        ledger.expect({"i2": h["i2"], "i4": h["i1"], "i5": h["i3"]}, twins={"i2", "i5"})
        # i2: a cached twin of a reviewed text; i4 not a twin (an audit draw, say); i5 new text
        assert await ledger.already_requested("v1", ["i2", "i4", "i5"]) == [True, False, False]
        assert await ledger.already_requested("v2", ["i2"]) == [False]  # per policy version
        assert _sample(metrics, "borderline_review_twins_skipped_total") == 1

        ledger.expect({"i6": h["i3"], "i7": h["i3"]}, twins={"i7"})
        assert await ledger.already_requested("v2", ["i6", "i7"]) == [False, True]

    run_redis(body)


# --- the classifier with a cache -----------------------------------------------------------------


def _record(item_id: str, text: str, offset: int) -> RawRecord:
    value = json.dumps({"item_id": item_id, "text": text}).encode()
    return RawRecord(TOPICS.items, 0, offset, item_id.encode(), value)


def _classifier(redis: Redis, prefix: str, cache: bool) -> tuple[Classifier, FakeSink, FakeScore]:
    metrics, sink, score = Metrics(), FakeSink(), FakeScore()
    ledger = TwinLedger(
        RedisReviewLedger(redis, prefix, 60), redis, prefix, ttl_s=60, metrics=metrics
    )
    classifier = Classifier(
        model=score,
        executor=None,
        sink=sink,
        curator=Curator(ledger=ledger, policy=POLICY, audit_rate=0.0),
        metrics=metrics,
        topics=TOPICS,
        state=ServingState(POLICY, "adapter-1"),
        worker="w",
        max_text_bytes=1000,
        clock=lambda: 1_700_000_000.0,
        cache=_cache(redis, prefix, metrics) if cache else None,
        twins=ledger if cache else None,
    )
    return classifier, sink, score


def _decisions(sink: FakeSink) -> list[Decision]:
    return [decode(v, Decision) for t, _k, v in sink.sent if t == TOPICS.decisions]


def _requested(sink: FakeSink) -> list[str]:
    return [
        decode(v, ReviewRequest).item_id for t, _k, v in sink.sent if t == TOPICS.review_requests
    ]


async def _run(classifier: Classifier, batches: Sequence[Sequence[tuple[str, str]]]) -> None:
    offset = 0
    for batch in batches:
        records = []
        for item_id, text in batch:
            records.append(_record(item_id, text, offset))
            offset += 1
        await classifier.handle(records)


BATCHES = [
    [("a", "limited offer"), ("b", "hello grandma")],
    [("c", "Limited  OFFER"), ("d", "limited offer"), ("e", "win a prize")],
]


def test_cached_decisions_are_full_records_equal_to_scored_ones(
    run_redis: Any, prefix: str
) -> None:
    async def body(redis: Redis) -> tuple[FakeSink, FakeScore, FakeSink, FakeScore]:
        with_cache, sink, score = _classifier(redis, prefix, cache=True)
        await _run(with_cache, BATCHES)
        without, plain_sink, plain_score = _classifier(redis, prefix + "-off", cache=False)
        await _run(without, BATCHES)
        return sink, score, plain_sink, plain_score

    sink, score, plain_sink, plain_score = run_redis(body)
    cached = {d.item_id: d for d in _decisions(sink)}
    plain = {d.item_id: d for d in _decisions(plain_sink)}
    assert [d.cached for d in cached.values()] == [False, False, True, True, False]
    assert not any(d.cached for d in plain.values())
    assert sum(len(c) for c in score.calls) == 3 and sum(len(c) for c in plain_score.calls) == 5
    for item_id, d in cached.items():
        same = ("action", "probabilities", "model_version", "adapter_version", "policy_version")
        twin = plain["a" if item_id == "c" else item_id]  # c is a's text, normalised
        assert all(getattr(d, f) == getattr(twin, f) for f in same), item_id
        assert d.worker == "w" and d.decided_at == twin.decided_at
        assert (d.scoring_s == 0.0) == d.cached
    # "limited offer" is in the review band: its twins c and d are not sent again
    assert _requested(sink) == ["a", "e"]
    assert sorted(_requested(plain_sink)) == ["a", "d", "e"]  # the fake scores c's text apart
