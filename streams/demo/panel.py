"""SIMULATION ONLY: `borderline panel` runs a simulated expert panel as a plain Kafka client.
It reads review requests, gives each to as many simulated reviewers as the request asks
(``opinions``: two for audit draws and the overlap sample, else one; ``per_item`` overrides it;
a second-opinion request goes to one who has not labelled the item), and produces their labels
after their delays. As the console does, it gives no more requests to a reviewer the service
excluded (their labels would count for nothing, and each item they took would cost a trusted
opinion more) until a lead clears them.
Truth comes from a labelled JSONL file (the corpus) through a policy (``truth_for``), so a policy
change can flip what the experts say. Each label is signed with its reviewer's key
(`adapters.labels.admission.sign_label`), as any Kafka client of a reviewer must: the collector
refuses unsigned ones. Never part of a production deployment.

Delivering labels and committing what was read ride out a broker outage under the retry policy
(`streams.service.retry`), and so does a metadata request every few seconds (an idle panel
notices an outage too); once the broker outlasted the outage budget, `InfrastructureError`
(one line)."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from redis.asyncio import Redis
from redis.exceptions import RedisError

from adapters.labels.keyring import ReviewerKeys
from adapters.labels.store import LabelStore
from adapters.offline.simulation import SimulatedReviewer, choose_reviewers
from streams.service.admission import signed
from streams.service.outage import Outages
from streams.service.record import open_journal
from streams.service.retry import Retrying, RetryPolicy
from streams.service.watchdog import probe_interval
from streams.wire.errors import MessageError
from streams.wire.messages import ReviewLabel, ReviewReason, ReviewRequest, decode, encode
from streams.wire.security import PLAINTEXT, KafkaSecurity, redis_options
from streams.wire.settings import ResilienceSettings, Settings
from streams.wire.topics import TopicNames

__all__ = [
    "EXCLUDED_EVERY_S",
    "PanelStats",
    "load_truth",
    "opinions_for",
    "panel_keys",
    "run_panel_on",
    "run_simulated_panel",
]

log = logging.getLogger(__name__)

STOP_WITHIN_S = 4.0
"""How long the consumer and the producer each get to stop."""

EXCLUDED_EVERY_S = 2.0
"""How often the panel reads who the service excluded."""

Excluded = Callable[[], Awaitable[Collection[str]]]


@dataclass
class PanelStats:
    requests: int = 0
    labels: int = 0
    unknown_items: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


async def run_simulated_panel(
    bootstrap_servers: str,
    topics: TopicNames,
    panel: Sequence[SimulatedReviewer],
    truth: Mapping[str, str],
    *,
    keys: Mapping[str, bytes],
    labels: Sequence[str] = ("benign", "violating"),
    per_item: int | None = None,
    seed: int = 0,
    stop: asyncio.Event | None = None,
    truth_for: Callable[[str, str, str], str] | None = None,
    stats: PanelStats | None = None,
    group_id: str | None = None,
    retry: Retrying | None = None,
    security: KafkaSecurity = PLAINTEXT,
    excluded: Excluded | None = None,
) -> PanelStats:
    """Answer review requests until ``stop`` is set. ``keys``: each reviewer's signing key
    (`adapters.labels.keyring.ReviewerKeys.ensure`; a reviewer without one sends unsigned
    labels, which the collector refuses). ``truth_for(item_id, policy, truth)`` may map the
    corpus label to the label under a policy version. ``retry``: the retry policy (by default
    the configured defaults). ``excluded``: who the service excluded (`LabelStore.excluded`,
    read every `EXCLUDED_EVERY_S`; `run_panel_on` reads the deployment's), given no more
    requests; None: nobody."""
    stats = stats or PanelStats()
    retry = retry or Retrying(
        RetryPolicy.from_settings(ResilienceSettings()),
        outages=Outages(names={"kafka": f"the broker at {bootstrap_servers}"}),
    )
    stop = stop or asyncio.Event()
    rng = np.random.default_rng(seed)
    consumer, producer = await _open(
        bootstrap_servers,
        topics.review_requests,
        group_id or f"simulated-panel-{uuid.uuid4().hex[:6]}",
        retry,
        security,
    )
    due: list[tuple[float, int, ReviewLabel]] = []  # (when, tie-break, label)
    counter = 0
    every_s, probed = probe_interval(retry.policy.budget_s), time.monotonic()
    benched: Collection[str] = ()
    benched_at = -EXCLUDED_EVERY_S
    try:
        while not stop.is_set():
            if time.monotonic() - probed >= every_s:  # the consumer retries a lost broker
                await retry("kafka", consumer.topics)  # forever, quietly: ask it ourselves
                probed = time.monotonic()
            try:  # a rebalance waits for the broker without a timeout: look again meanwhile
                batch = await asyncio.wait_for(
                    consumer.getmany(timeout_ms=100, max_records=500), 1.0
                )
            except TimeoutError:
                batch = {}
            now = time.time()
            if excluded is not None and time.monotonic() - benched_at >= EXCLUDED_EVERY_S:
                benched_at = time.monotonic()
                try:
                    benched = await excluded()
                except (OSError, RedisError) as exc:  # Redis away: the last known set stands
                    log.debug("simulated panel: exclusions not read: %s", exc)
            for records in batch.values():
                for record in records:
                    try:
                        request = decode(record.value, ReviewRequest)
                    except MessageError as exc:
                        log.warning("simulated panel skips a bad request: %s", exc)
                        continue
                    stats.requests += 1
                    stats.by_reason[request.reason.value] = (
                        stats.by_reason.get(request.reason.value, 0) + 1
                    )
                    corpus_label = truth.get(request.item_id)
                    if corpus_label is None:
                        stats.unknown_items += 1
                        continue
                    true_label = (
                        truth_for(request.item_id, request.policy_version, corpus_label)
                        if truth_for
                        else corpus_label
                    )
                    count = opinions_for(request, per_item)
                    for reviewer in choose_reviewers(
                        panel,
                        count=count,
                        rng=rng,
                        exclude=[*request.already_labeled_by, *benched],
                    ):
                        label = ReviewLabel(
                            item_id=request.item_id,
                            reviewer_id=reviewer.reviewer_id,
                            label=reviewer.answer(true_label, rng=rng, labels=labels),
                            policy_version=request.policy_version,
                            request_id=request.request_id,
                            labeled_at=now + reviewer.delay_s,
                        )
                        counter += 1
                        heapq.heappush(due, (now + reviewer.delay_s, counter, label))
            ready = []
            while due and due[0][0] <= time.time():
                ready.append(_signed(heapq.heappop(due)[2], keys))
            if ready:
                await retry("kafka", partial(_send_all, producer, topics.review_labels, ready))
                stats.labels += len(ready)
            if batch:  # offsets move only with what was read (and a join holds a commit)
                await retry("kafka", consumer.commit)
    finally:
        await _stop(consumer)
        await _stop(producer)
    return stats


async def panel_keys(
    settings: Settings,
    reviewer_ids: Sequence[str],
    *,
    register: bool = False,
    record_as: str | None = None,
) -> dict[str, bytes]:
    """The panel's signing keys from the deployment's store, issuing a key to any reviewer
    without one (``register``: registering them first). ``record_as``: the actor under which
    registrations and keys are recorded on the reviewer-events topic (None: not recorded)."""
    assert settings.redis.url is not None
    redis = Redis.from_url(settings.redis.url.get_secret_value(), **redis_options(settings.redis))
    prefix, secret = settings.redis.key_prefix, settings.review.key_secret
    try:
        store = LabelStore(redis, prefix)
        keys = ReviewerKeys(redis, prefix, secret.get_secret_value().encode())
        if record_as is None:
            if register:
                await store.register_reviewers(reviewer_ids)
            return await keys.ensure(reviewer_ids)
        assert settings.kafka.bootstrap_servers
        async with open_journal(
            settings.kafka.bootstrap_servers,
            settings.kafka.topics,
            actor=record_as,
            security=KafkaSecurity.of(settings.kafka),
        ) as journal:
            store.journal = keys.journal = journal
            if register:
                await store.register_reviewers(reviewer_ids)
            return await keys.ensure(reviewer_ids)
    finally:
        await redis.aclose()


async def run_panel_on(
    settings: Settings,
    panel: Sequence[SimulatedReviewer],
    truth: Mapping[str, str],
    *,
    keys: Mapping[str, bytes],
    per_item: int | None = None,
    seed: int = 0,
    stop: asyncio.Event | None = None,
    truth_for: Callable[[str, str, str], str] | None = None,
    stats: PanelStats | None = None,
    retry: Retrying | None = None,
) -> PanelStats:
    """`run_simulated_panel` on the deployment ``settings`` name: its broker, topics and client
    security, and the reviewers it excluded, read from its Redis (closed after)."""
    assert settings.kafka.bootstrap_servers and settings.redis.url
    redis = Redis.from_url(settings.redis.url.get_secret_value(), **redis_options(settings.redis))
    try:
        return await run_simulated_panel(
            settings.kafka.bootstrap_servers,
            settings.kafka.topics,
            panel,
            truth,
            keys=keys,
            per_item=per_item,
            seed=seed,
            stop=stop,
            truth_for=truth_for,
            stats=stats,
            retry=retry,
            security=KafkaSecurity.of(settings.kafka),
            excluded=LabelStore(redis, settings.redis.key_prefix).excluded,
        )
    finally:
        await redis.aclose()


def opinions_for(request: ReviewRequest, per_item: int | None) -> int:
    """Reviewers the panel gives ``request`` to: one for a second-opinion request, else
    ``per_item`` when set, else the opinions the request asks for."""
    if request.reason is ReviewReason.SECOND_OPINION:
        return 1
    return request.opinions if per_item is None else per_item


def _signed(label: ReviewLabel, keys: Mapping[str, bytes]) -> ReviewLabel:
    """``label`` signed with its reviewer's key (unsigned when the reviewer has none)."""
    key = keys.get(label.reviewer_id)
    return label if key is None else signed(label, key)


async def _open(
    bootstrap_servers: str, topic: str, group: str, retry: Retrying, security: KafkaSecurity
) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
    """The panel's consumer of ``topic`` and its producer, started under the retry policy."""
    # starting joins the group, which takes seconds when all is well: the budget bounds it
    consumer = await retry(
        "kafka",
        lambda: _started(
            AIOKafkaConsumer(
                topic,
                bootstrap_servers=bootstrap_servers,
                group_id=group,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=100,
                **security.options(),
            )
        ),
        attempt_timeout_s=retry.policy.budget_s,
    )
    try:
        producer = await retry(
            "kafka",
            lambda: _started(
                AIOKafkaProducer(
                    bootstrap_servers=bootstrap_servers, acks="all", **security.options()
                )
            ),
        )
    except BaseException:
        await _stop(consumer)
        raise
    return consumer, producer


C = TypeVar("C", AIOKafkaConsumer, AIOKafkaProducer)


async def _started(client: C) -> C:
    """``client`` started (a fresh one per try: one that failed to start is not reused)."""
    try:
        await client.start()
    except BaseException:
        await _stop(client)
        raise
    return client


async def _stop(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    """A broker that is gone would hold the last commit or flush for ever: bounded."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.stop(), STOP_WITHIN_S)


async def _send_all(producer: AIOKafkaProducer, topic: str, labels: list[ReviewLabel]) -> None:
    """Send every label and wait until the broker has them all (retried as one)."""
    pending = [
        await producer.send(topic, value=encode(label), key=label.item_id.encode())
        for label in labels
    ]
    await asyncio.gather(*pending)


def load_truth(path: str) -> dict[str, str]:
    """item id -> "violating" / "benign" from a labelled JSONL file."""
    from pathlib import Path

    from adapters.labels.dataset import read_jsonl

    return {i.item_id: ("violating" if i.label else "benign") for i in read_jsonl(Path(path))}
