"""Live adapter swaps inside a classify worker. The worker listens on the registry's pub/sub
channel and also polls (a lost message costs at most one poll interval); on either it re-reads
the active adapter for its policy, fetches and verifies the artifact (sha256, base), loads it
next to the current one and activates it. The scorer swaps the reference between batches, so no
batch is scored half with one adapter; the previous adapter stays loaded for an instant rollback.
A corrupted adapter, or one for another base, is refused and the active one keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from redis.asyncio import Redis

from adapters.registry.artifact import ArtifactError
from adapters.registry.store import AdapterRegistry, RegistryError
from models.adapter_file import AdapterFileError
from models.scorer import Scorer
from streams.service.metrics import Metrics

__all__ = ["AdapterSwapper"]

log = logging.getLogger(__name__)


class AdapterSwapper:
    def __init__(
        self,
        *,
        registry: AdapterRegistry,
        redis: Redis,
        scorer: Scorer,
        cache_dir: Path,
        policy_version: str,
        metrics: Metrics,
        worker: str,
        poll_interval_s: float = 2.0,
    ) -> None:
        self.registry = registry
        self.redis = redis
        self.scorer = scorer
        self.cache_dir = cache_dir
        self.policy_version = policy_version
        self.metrics = metrics
        self.worker = worker
        self.poll_interval_s = poll_interval_s
        self.epoch = 0
        self._refused: set[str] = set()
        # called with (previous, new) after every swap: the drift detectors start a fresh
        # reference, since a new adapter moves the scores and embeddings on purpose
        self.on_swap: Callable[[str, str], None] | None = None
        self._lock = asyncio.Lock()

    def _set_info(self) -> None:
        self.metrics.model_info.info(
            {
                "model_version": self.scorer.model_version,
                "adapter_version": self.scorer.adapter_version,
                "policy_version": self.policy_version,
            }
        )

    async def _load(self, adapter_id: str) -> None:
        if adapter_id in self.scorer.loaded_adapters:
            return
        artifact = await self.registry.fetch(
            adapter_id, self.cache_dir / adapter_id, expected_base=self.scorer.model_version
        )
        self.scorer.load_adapter(adapter_id, artifact.path)

    async def sync(self, received_at: float | None = None) -> bool:
        """Bring the scorer to the registry's active adapter; True if it swapped.
        ``received_at`` (epoch seconds) is when the worker learnt of the change."""
        async with self._lock:
            record = await self.registry.active(self.policy_version)
            if record is None or record.epoch <= self.epoch:
                return False
            target = record.adapter_id
            if target == self.scorer.adapter_version:
                self.epoch = record.epoch
                return False
            if target in self._refused:
                return False
            started = received_at or time.time()
            try:
                await self._load(target)
            except (ArtifactError, AdapterFileError, RegistryError) as exc:
                self._refused.add(target)
                self.metrics.adapter_swaps.labels(result="refused").inc()
                log.error(
                    "adapter %s refused, keeping %s: %s", target, self.scorer.adapter_version, exc
                )
                return False
            previous = self.scorer.adapter_version
            self.scorer.activate(target)
            self.epoch = record.epoch
            swap_s = time.time() - started
            self.metrics.adapter_swaps.labels(result=record.action).inc()
            self.metrics.adapter_swap_seconds.observe(swap_s)
            self._set_info()
            if self.on_swap is not None:
                self.on_swap(previous, target)
            log.info(
                "adapter swap worker=%s from=%s to=%s action=%s epoch=%d swap_ms=%.2f "
                "received=%.6f",
                self.worker,
                previous,
                target,
                record.action,
                record.epoch,
                swap_s * 1000,
                started,
            )
            return True

    async def run(self) -> None:
        """Follow the registry until cancelled; a Redis outage is waited out (the classify path
        is what crashes the worker on one)."""
        self._set_info()
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("adapter registry unreachable (%r); retrying", exc)
                self.metrics.retries.labels(target="redis").inc()
                await asyncio.sleep(self.poll_interval_s)

    async def _follow(self) -> None:
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(self.registry.channel)
        try:
            last_poll = 0.0
            while True:
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=self.poll_interval_s
                )
                now = time.time()
                if message is not None or now - last_poll >= self.poll_interval_s:
                    last_poll = now
                    await self.sync(received_at=now)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
