"""`borderline store rebuild | status`: Redis is a view of the record on Kafka. `rebuild` replays
the topics from their beginning into Redis (empty or stale) through the live store code and marks
the store complete; running it again changes nothing. `status` says whether the store is marked
complete."""

from __future__ import annotations

import argparse
import time
from collections import Counter

from redis.asyncio import Redis

from adapters.labels.store import LabelStore
from adapters.policy.store import PolicyStore
from adapters.registry.store import AdapterRegistry
from streams.service.rebuild import bootstrap_artifact, marker_key, rebuild_store, store_guard
from streams.service.replay import StoreMarker, staleness
from streams.wire.security import redis_options
from streams.wire.settings import Settings

__all__ = ["ensure_store", "store_command", "summary"]


def summary(counts: Counter[str]) -> list[str]:
    """One line per kind of record: what the replay did with it.

    >>> summary(Counter({"label:stored": 3, "label:duplicate": 1, "reviewers:added": 1}))
    ['label       duplicate=1 stored=3', 'reviewers   added=1']
    """
    kinds: dict[str, list[str]] = {}
    for key, n in sorted(counts.items()):
        kind, _, outcome = key.partition(":")
        kinds.setdefault(kind, []).append(f"{outcome or kind}={n}")
    return [f"{kind:<11} {' '.join(parts)}" for kind, parts in kinds.items()]


async def store_command(args: argparse.Namespace, settings: Settings) -> int:
    assert settings.redis.url is not None and settings.kafka.bootstrap_servers
    prefix = settings.redis.key_prefix
    redis = Redis.from_url(settings.redis.url.get_secret_value(), **redis_options(settings.redis))
    try:
        if args.action == "status":
            marker = StoreMarker.parse(await redis.get(marker_key(prefix)))
            reason = staleness(marker)
            print(f"store {prefix}: " + (f"incomplete ({reason})" if reason else "complete"))
            return 0 if reason is None else 1
        started = time.monotonic()
        counts, marker = await rebuild_store(
            redis,
            prefix,
            settings.kafka.bootstrap_servers,
            settings.kafka.topics,
            bootstrap=bootstrap_artifact(settings),
            settings=settings,
        )
        for line in summary(counts):
            print(line)
        policies, labels = PolicyStore(redis, prefix), LabelStore(redis, prefix)
        active = await policies.active_version()
        adapter = None if active is None else await AdapterRegistry(redis, prefix).active(active)
        n_labels = 0
        for version in await labels.policies():
            n_labels += sum(len(v) for v in (await labels.all_votes(version)).values())
        print(
            f"restored: {n_labels} labels, {len(await labels.registered())} reviewers, "
            f"active policy {active or '-'}, active adapter "
            f"{adapter.adapter_id if adapter else '-'}; {marker.replayed} records replayed in "
            f"{time.monotonic() - started:.1f}s; store epoch {marker.epoch}"
        )
        return 0
    finally:
        await redis.aclose()


async def ensure_store(settings: Settings) -> str | None:
    """At a collector's start: rebuild the store when it is not marked complete (see
    `streams.service.rebuild.StoreGuard`); return why it was rebuilt (None: it was not)."""
    assert settings.redis.url is not None
    redis = Redis.from_url(settings.redis.url.get_secret_value(), **redis_options(settings.redis))
    try:
        return await store_guard(settings, redis).ensure()
    finally:
        await redis.aclose()
