"""Live policy changes inside a classify worker. The worker listens on the policy store's channel
and also polls; when the active version changes it routes with the new thresholds and review
band, names the new version in every decision and review request, asks the registry for the
adapter of the new version (keeping the current one until an adapter for it passes the gate),
raises the audit sample for the transition, and sends to review the live items nearest the
policy's examples of what changed: items the new policy forbids that the old model calls benign
with confidence, which uncertainty and boundary mining alone would not find."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from redis.asyncio import Redis

from adapters.policy.schema import Policy
from adapters.policy.store import PolicyStore
from adapters.review.routing import RoutingPolicy
from models.scorer import Scorer
from streams.service.classify import Classifier
from streams.service.metrics import Metrics
from streams.service.swap import AdapterSwapper

__all__ = ["PolicyFollower", "routing_of"]

log = logging.getLogger(__name__)


def routing_of(policy: Policy) -> RoutingPolicy:
    return RoutingPolicy(
        version=policy.version,
        block_threshold=min(c.block_threshold for c in policy.categories),
        review_low=policy.review_band.low,
        review_high=policy.review_band.high,
    )


class PolicyFollower:
    def __init__(
        self,
        *,
        store: PolicyStore,
        redis: Redis,
        classifier: Classifier,
        swapper: AdapterSwapper,
        scorer: Scorer,
        metrics: Metrics,
        poll_interval_s: float = 2.0,
    ) -> None:
        self.store = store
        self.redis = redis
        self.classifier = classifier
        self.swapper = swapper
        self.scorer = scorer
        self.metrics = metrics
        self.poll_interval_s = poll_interval_s

    async def sync(self) -> bool:
        """Apply the active policy if it changed; True if it did."""
        policy = await self.store.active()
        if policy is None or policy.version == self.classifier.policy.version:
            return False
        routing = routing_of(policy)
        curator = self.classifier.curator
        examples = [e.text for e in policy.examples if e.label != "benign"]
        example_embeddings = self.scorer.score(examples).embeddings if examples else None
        # one reference swap each: a batch in flight keeps the policy it started with
        self.classifier.policy = routing
        curator.start_transition(
            routing,
            audit_rate=policy.audit_rate,
            example_embeddings=example_embeddings,
        )
        self.swapper.policy_version = policy.version
        self.swapper.epoch = 0  # re-read the registry for the new version
        await self.swapper.sync()
        self.metrics.model_info.info(
            {
                "model_version": self.scorer.model_version,
                "adapter_version": self.scorer.adapter_version,
                "policy_version": policy.version,
            }
        )
        log.info(
            "policy %s active: band [%s, %s], %d examples",
            policy.version,
            routing.review_low,
            routing.review_high,
            len(examples),
        )
        return True

    async def run(self) -> None:
        while True:
            try:
                pubsub = self.redis.pubsub()
                await pubsub.subscribe(self.store.channel)
                try:
                    last = 0.0
                    while True:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=self.poll_interval_s
                        )
                        if message is not None or time.time() - last >= self.poll_interval_s:
                            last = time.time()
                            await self.sync()
                finally:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("policy store unreachable (%r); retrying", exc)
                await asyncio.sleep(self.poll_interval_s)
