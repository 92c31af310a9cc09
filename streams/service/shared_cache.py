"""The decision cache of a classify worker: repeated creatives are scored once per base model,
adapter and policy version (`streams.service.decision_cache` says what counts as the same text
and holds the pure parts). Two tiers: the process's own LRU, then Redis, shared by every worker.
A batch costs one MGET for what the LRU does not hold and one pipeline of SETs for what the
model scored; each has a short timeout, and a Redis that fails or is slow costs a model call,
never the batch (counted by operation). Twins inside one batch are scored once.

`TwinLedger` wraps the review ledger so that a cached item is not sent to review again when an
item with the same text already was (dedupe by text hash, counted). Redis keys:
``{prefix}:cache:decision:{key}`` and ``{prefix}:cache:reviewed:{policy_version}:{text_hash}``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from redis.asyncio import Redis

from models.scorer import ScoreBatch
from streams.service.decision_cache import (
    DecisionLRU,
    cache_key,
    pack_scores,
    text_hash,
    unpack_scores,
)
from streams.service.ledger import ReviewLedger
from streams.service.metrics import Metrics

__all__ = ["CachedScores", "DecisionCache", "TwinLedger"]

log = logging.getLogger(__name__)

Score = Callable[[list[str]], Awaitable[tuple[ScoreBatch, float]]]
"""Score texts with the serving adapter: the batch and the seconds it took."""


@dataclass(frozen=True)
class CachedScores:
    """The scores of a whole batch, model rows and cached rows together, in item order."""

    batch: ScoreBatch
    scoring_s: float  # the model call's seconds (0.0 when every item was cached)
    cached: list[bool]  # True: this row was not scored for this item
    hashes: list[str]  # the normalised-text hash of each item


class DecisionCache:
    """Both tiers. ``labels`` and ``dim`` are the model's labels and embedding size: an entry of
    another shape is a miss."""

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        *,
        lru: DecisionLRU,
        metrics: Metrics,
        labels: Sequence[str],
        dim: int,
        ttl_s: int,
        timeout_s: float,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.lru = lru
        self.metrics = metrics
        self.labels = tuple(labels)
        self.dim = dim
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._evictions = 0

    def key(self, key: str) -> str:
        return f"{self.prefix}:cache:decision:{key}"

    async def scores(
        self, texts: Sequence[str], *, model: str, adapter: str, policy: str, score: Score
    ) -> CachedScores:
        """The scores of ``texts`` under (``model``, ``adapter``, ``policy``): from the LRU, then
        Redis, then ``score`` for the rest (one text per distinct key)."""
        hashes = [text_hash(t) for t in texts]
        keys = [cache_key(h, model=model, adapter=adapter, policy=policy) for h in hashes]
        found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for key in dict.fromkeys(keys):
            blob = self.lru.get(key)
            hit = None if blob is None else unpack_scores(blob, len(self.labels), self.dim)
            if hit is not None:
                found[key] = hit
        memory = sum(1 for k in keys if k in found)
        await self._read(found, [k for k in dict.fromkeys(keys) if k not in found])
        shared = sum(1 for k in keys if k in found) - memory
        scored_rows = {k: row for row, k in reversed(list(enumerate(keys))) if k not in found}
        scoring_s, adapter_id = 0.0, adapter
        if scored_rows:
            rows = list(scored_rows.values())
            batch, scoring_s = await score([texts[r] for r in rows])
            adapter_id = batch.adapter_id
            fresh = {
                k: (batch.probabilities[j], batch.embeddings[j]) for j, k in enumerate(scored_rows)
            }
            found.update(fresh)
            await self._write(fresh)
        m = self.metrics
        m.cache_hits.labels(tier="memory").inc(memory)
        m.cache_hits.labels(tier="redis").inc(shared)
        m.cache_hits.labels(tier="batch").inc(len(keys) - memory - shared - len(scored_rows))
        m.cache_misses.inc(len(scored_rows))
        m.cache_evictions.inc(self.lru.evictions - self._evictions)
        self._evictions = self.lru.evictions
        m.cache_bytes.set(self.lru.bytes)
        chosen = set(scored_rows.values())
        return CachedScores(
            batch=ScoreBatch(
                np.vstack([found[k][0] for k in keys]).astype(np.float32),
                np.vstack([found[k][1] for k in keys]).astype(np.float32),
                self.labels,
                adapter_id,
            ),
            scoring_s=scoring_s,
            cached=[row not in chosen for row in range(len(keys))],
            hashes=hashes,
        )

    async def _read(self, found: dict[str, tuple[np.ndarray, np.ndarray]], keys: list[str]) -> None:
        if not keys:
            return
        try:
            blobs = await asyncio.wait_for(
                self.redis.mget([self.key(k) for k in keys]), self.timeout_s
            )
        except Exception as exc:  # a slow or absent Redis costs a model call, never the batch
            self._failed("read", exc)
            return
        for key, blob in zip(keys, blobs, strict=True):
            if not isinstance(blob, bytes):
                continue
            hit = unpack_scores(blob, len(self.labels), self.dim)
            if hit is not None:
                found[key] = hit
                self.lru.put(key, blob)

    async def _write(self, fresh: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
        blobs = {k: pack_scores(p, e) for k, (p, e) in fresh.items()}
        if any(len(p) != len(self.labels) or len(e) != self.dim for p, e in fresh.values()):
            return  # not this model's shape: nothing worth keeping
        for key, blob in blobs.items():
            self.lru.put(key, blob)

        async def send() -> None:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, blob in blobs.items():
                    pipe.set(self.key(key), blob, ex=self.ttl_s)
                await pipe.execute()

        try:
            await asyncio.wait_for(send(), self.timeout_s)
        except Exception as exc:
            self._failed("write", exc)

    def _failed(self, operation: str, exc: Exception) -> None:
        self.metrics.cache_redis_failures.labels(operation=operation).inc()
        log.warning("decision cache: Redis %s failed (%r); scoring instead", operation, exc)


class TwinLedger:
    """A `ReviewLedger` that also answers "already requested" for a cached item whose text was
    already sent to review under the policy (by another item, in this batch or before), and
    remembers the text of every item it marks. The classifier names the batch's items first
    (`expect`); only ``twins`` (cached items that are not audit draws, whose sample must stay
    random) are ever dropped for their text."""

    def __init__(
        self, inner: ReviewLedger, redis: Redis, prefix: str, *, ttl_s: int, metrics: Metrics
    ) -> None:
        self.inner = inner
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.metrics = metrics
        self._hashes: dict[str, str] = {}
        self._twins: set[str] = set()

    def key(self, policy_version: str, digest: str) -> str:
        return f"{self.prefix}:cache:reviewed:{policy_version}:{digest}"

    def expect(self, hashes: Mapping[str, str], twins: set[str]) -> None:
        """The batch being curated: each item's text hash, and which items may be dropped."""
        self._hashes = dict(hashes)
        self._twins = set(twins)

    async def already_requested(self, policy_version: str, item_ids: Sequence[str]) -> list[bool]:
        seen = await self.inner.already_requested(policy_version, item_ids)
        digests = [self._hashes.get(i) for i in item_ids]
        asked = [d for d in dict.fromkeys(digests) if d is not None]
        if not asked:
            return seen
        values = await self.redis.mget([self.key(policy_version, d) for d in asked])
        reviewed = {d for d, v in zip(asked, values, strict=True) if v is not None}
        out, twins = [], 0
        for item_id, digest, was in zip(item_ids, digests, seen, strict=True):
            twin = (not was) and item_id in self._twins and digest in reviewed
            twins += twin
            out.append(was or twin)
            if digest is not None and not was:
                reviewed.add(digest)  # a later twin of this one in the same call is a duplicate
        if twins:
            self.metrics.review_twins.inc(twins)
        return out

    async def mark_requested(self, policy_version: str, item_ids: Sequence[str]) -> None:
        await self.inner.mark_requested(policy_version, item_ids)
        digests = {self._hashes[i] for i in item_ids if i in self._hashes}
        if not digests:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for digest in digests:
                pipe.set(self.key(policy_version, digest), b"1", ex=self.ttl_s)
            await pipe.execute()
