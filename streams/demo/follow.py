"""While the demo runs: drive the stream, follow the topics and the processes' /metrics, and keep
the state the live view and the report read."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from collections import Counter
from typing import Any

from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis
from rich.console import Console
from rich.live import Live

from adapters.adapt.verdicts import VerdictStore
from adapters.labels.agreement import agreement_report, expert_ceiling
from adapters.labels.dataset import LabeledItem
from adapters.labels.store import LabelStore
from adapters.offline.simulation import parse_panel, policy_truth
from adapters.policy.schema import Policy
from adapters.policy.store import PolicyStore
from adapters.registry.store import AdapterRegistry
from streams.demo.panel import PanelStats, panel_keys, run_panel_on
from streams.demo.replay import replay_items
from streams.demo.state import ACTOR, DemoOptions, DemoState, GateVerdict
from streams.embedded.launcher import WorkerProcess
from streams.service.publication import publish_policy
from streams.service.reader import open_reader
from streams.wire.security import KafkaSecurity, redis_options
from streams.wire.settings import Settings

SAMPLE_EVERY_S = 2.0


def _kinds(settings: Settings) -> dict[str, str]:
    topics = settings.kafka.topics
    return {
        topics.decisions: "decision",
        topics.review_requests: "review",
        topics.items_dlq: "dead",
        topics.review_labels_dlq: "dead",
        topics.adapter_events: "adapter",
    }


async def _watch(
    consumer: AIOKafkaConsumer, kinds: dict[str, str], state: DemoState, stop: asyncio.Event
) -> None:
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                for record in records:
                    if record.value is not None:
                        with contextlib.suppress(ValueError, KeyError):
                            state.on_message(kinds[tp.topic], json.loads(record.value))
    finally:
        await consumer.stop()


def _scrape(port: int) -> dict[str, dict[str, float]]:
    """The drift series of one process's /metrics, {metric: {signal: value}}, and the second
    opinions asked, {"borderline_second_opinions_total": {why: count}}."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=2) as response:  # our own endpoint
        text = response.read().decode()
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name in ("borderline_drift_statistic", "borderline_drift_detected"):
            for s in family.samples:
                out.setdefault(family.name, {})[s.labels["signal"]] = s.value
        elif family.name == "borderline_second_opinions":
            for s in family.samples:
                if s.name == "borderline_second_opinions_total":
                    out.setdefault(s.name, {})[s.labels["why"]] = s.value
    return out


async def _follow(
    settings: Settings, state: DemoState, procs: list[WorkerProcess], stop: asyncio.Event
) -> None:
    """Redis (labels, agreement, registry, gate reports, policy) and the processes' /metrics,
    every couple of seconds; one timeline sample each time."""
    assert settings.redis.url is not None
    redis = Redis.from_url(settings.redis.url.get_secret_value(), **redis_options(settings.redis))
    prefix = settings.redis.key_prefix
    store = LabelStore(redis, prefix)
    registry = AdapterRegistry(redis, prefix)
    policies = PolicyStore(redis, prefix)
    verdicts = VerdictStore(redis, prefix)
    seen_reports = 0
    try:
        while not stop.is_set():
            policy = await policies.active_version() or settings.policy.version
            if policy != state.policy:
                state.policy = policy
            active = await registry.active(policy)
            if active is not None:
                state.adapter = active.adapter_id
            votes = await store.votes_every_policy()  # keyed policy/item, as the collector
            counts: Counter[str] = Counter()
            for key, item_votes in votes.items():
                policy_of, item_id = key.split("/", 1)
                if item_id in state.run_items:  # not an earlier run's, on shared services
                    counts[policy_of] += len(item_votes)
            state.labels = dict(counts)
            state.excluded = await store.excluded()
            state.open_requests = await store.open_count(policy)
            # each reviewer against the trusted reviewers' consensus (the excluded left out)
            report = agreement_report(
                votes, min_shared=settings.review.min_shared, exclude=state.excluded
            )
            state.agreement = {r.reviewer: r.kappa for r in report.reviewers if r.kappa is not None}
            state.ceiling = expert_ceiling(
                votes, state.excluded, min_shared=settings.review.min_shared
            )
            reports = await verdicts.reports(seen_reports)
            for doc in reports:
                state.verdicts.append(
                    GateVerdict(
                        at=state.now(),
                        adapter_id=doc.adapter_id,
                        policy_version=doc.policy_version,
                        passed=doc.promoted,
                        candidate_kappa=doc.candidate_kappa,
                        incumbent_kappa=doc.incumbent_kappa,
                        required_kappa=doc.required_kappa,
                        expert_labels=doc.expert_labels,
                        eval_labels=doc.eval_labels,
                        reason=doc.reason,
                    )
                )
            seen_reports += len(reports)
            status = await verdicts.status()
            if status is not None and status.policy_version == policy:
                state.trainer = status.reason
                state.live_kappa = (
                    f"{status.adapter_id}: {status.live_text}" if status.live_text else ""
                )
            await _drift(state, procs)
            state.samples.append(
                {
                    "t": round(state.now(), 2),
                    "items_in": state.items_in,
                    "decided": len(state.decisions),
                    "labels": state.labels_collected(),
                    "open_requests": state.open_requests,
                    "policy": state.policy,
                    "adapter": state.adapter,
                    **{f"drift_{k}": v for k, v in state.drift.items()},
                }
            )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_EVERY_S)
    finally:
        await redis.aclose()


async def _drift(state: DemoState, procs: list[WorkerProcess]) -> None:
    """The drift gauges: the lowest p-value over the workers, the collector's concept rate; and
    the collector's second opinions by why."""
    values: dict[str, list[float]] = {}
    fired: set[str] = set()
    asked: dict[str, float] = {}
    for p in procs:
        try:
            scraped = await asyncio.to_thread(_scrape, p.metrics_port)
            state.metrics_scrapes += 1
        except OSError:
            state.metrics_failures += 1
            continue
        for signal_name, value in scraped.get("borderline_drift_statistic", {}).items():
            values.setdefault(signal_name, []).append(value)
        fired |= {s for s, v in scraped.get("borderline_drift_detected", {}).items() if v > 0}
        for why, n in scraped.get("borderline_second_opinions_total", {}).items():
            asked[why] = asked.get(why, 0.0) + n
    if asked:
        state.second_opinions_why = asked
    for name, seen in values.items():
        state.drift[name] = max(seen) if name == "concept" else min(seen)
    state.drift_fired |= fired


async def drive(
    settings: Settings,
    options: DemoOptions,
    stream: list[LabeledItem],
    v2: Policy | None,
    state: DemoState,
    truth: dict[str, str],
    procs: list[WorkerProcess],
    console: Console,
) -> None:
    assert settings.kafka.bootstrap_servers
    servers = settings.kafka.bootstrap_servers
    stop = asyncio.Event()
    stats = PanelStats()
    kinds = _kinds(settings)
    # positioned at the end before anything is produced: on shared services, nothing from an
    # earlier run is counted and nothing from this one is missed
    security = KafkaSecurity.of(settings.kafka)
    consumer = await open_reader(servers, list(kinds), from_end=True, security=security)
    panel = parse_panel(options.panel)
    keys = await panel_keys(settings, [r.reviewer_id for r in panel])  # issued by `prepare`
    tasks = [
        asyncio.create_task(_watch(consumer, kinds, state, stop)),
        asyncio.create_task(_follow(settings, state, procs, stop)),
        asyncio.create_task(
            run_panel_on(  # as the console, no more requests for an excluded reviewer
                settings,
                panel,
                truth,
                keys=keys,
                per_item=options.per_item,
                seed=settings.review.seed,
                stop=stop,
                stats=stats,
                truth_for=policy_truth,
            )
        ),
    ]

    def sent(base: int) -> Any:
        def on_sent(count: int) -> None:
            state.items_in = base + count

        return on_sent

    async def produce() -> None:
        split = round(len(stream) * options.change_at) if v2 is not None else len(stream)
        topic = settings.kafka.topics.items
        await replay_items(
            servers, topic, stream[:split], rate=options.rate, on_sent=sent(0), security=security
        )
        if v2 is not None:
            assert settings.redis.url is not None
            redis = Redis.from_url(
                settings.redis.url.get_secret_value(), **redis_options(settings.redis)
            )
            try:
                store = PolicyStore(redis, settings.redis.key_prefix)
                await publish_policy(settings, store, v2, ACTOR)
            finally:
                await redis.aclose()
            state.policy_events.append((state.now(), v2.version))
            console.print(f"[{state.now():5.0f}s] published policy {v2.version}: {v2.description}")
            rest = stream[split:]
            await replay_items(
                servers, topic, rest, rate=options.rate, on_sent=sent(split), security=security
            )

    producer = asyncio.create_task(produce())
    view = Live(state.table(truth), console=console, refresh_per_second=2) if options.live else None

    def closed() -> bool:
        everything = len(state.decisions) >= len(stream) and producer.done()
        if v2 is None:
            return everything
        changed = state.policy_events[-1][0] if len(state.policy_events) > 1 else None
        adapted = any(changed is not None and p["t"] >= changed for p in state.promotions())
        return everything and adapted

    last_line = 0.0
    try:
        if view:
            view.start()
        deadline = time.time() + len(stream) / options.rate + options.settle_s
        while not closed() and time.time() < deadline:
            await asyncio.sleep(0.5)
            if producer.done() and producer.exception() is not None:
                raise producer.exception()  # type: ignore[misc]
            if view:
                view.update(state.table(truth))
            elif time.time() - last_line >= 5:
                last_line = time.time()
                print(state.log_line(), flush=True)
        if not closed():
            console.print("the loop did not close before the deadline; reporting what happened")
        await asyncio.sleep(2 * SAMPLE_EVERY_S)  # one more look at Redis and the metrics
    finally:
        if view:
            view.update(state.table(truth))
            view.stop()
        else:
            print(state.log_line(), flush=True)
        stop.set()
        producer.cancel()
        await asyncio.gather(*tasks, producer, return_exceptions=True)
        console.print(f"simulated panel: {stats.requests} requests, {stats.labels} labels")
