"""A worker's control plane, on the adapter side, on the real redis-server with the real model: it
brings the classifier and its scorer to the registry's active adapter, keeps the previous one
loaded for an instant rollback, refuses a tampered adapter or one for another base while the
active one keeps serving (and counts the refusal), and follows a promotion through pub/sub alone.

The second adapter is the bootstrap adapter with its head negated ("inverted"): its
probabilities are the bootstrap's mirrored, so a swap is visible in the scores, not only in the
names."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from redis.asyncio import Redis

from adapters.policy.store import PolicyStore
from adapters.registry.artifact import BOOTSTRAP_ARTIFACT, AdapterArtifact
from adapters.registry.store import AdapterRegistry
from models.manifest import ModelManifest
from models.scorer import Scorer
from streams.service.classify import Classifier
from streams.service.control import ControlPlane
from streams.service.curate import Curator
from streams.service.ledger import RedisReviewLedger
from streams.service.metrics import Metrics
from streams.service.serving import ServingState, routing_for
from streams.wire.settings import PolicySettings
from streams.wire.topics import TopicNames
from tests.redis_support import redis_client

from .helpers import inverted_adapter

pytestmark = pytest.mark.integration

TEXTS = [
    "Hi Bob, the meeting moved to 3pm tomorrow, see you in room 4.",
    "CONGRATULATIONS!!! You have WON $1,000,000. Click here now to claim your FREE prize!!!",
    "Can you review my patch to the build scripts before Friday?",
    "Cheap meds online, no prescription needed, lowest prices guaranteed, order today",
]


class _NoSink:
    """The classifier's sink: these tests hand it no items."""

    async def send(self, topic: str, key: bytes, value: bytes) -> Any:
        raise AssertionError("nothing is classified here")


@dataclass
class Rig:
    """One test's control plane, the classifier it serves, its scorer and registry (on a key
    prefix of its own, where no policy is published: the configured v1 serves), and adapters."""

    control: ControlPlane
    swaps: list[tuple[str, str]]  # (previous, new) of every swap, as the drift watch hears them
    scorer: Scorer
    registry: AdapterRegistry
    redis: Redis
    metrics: Metrics
    prefix: str
    boot: AdapterArtifact
    inverted: AdapterArtifact
    manifest: ModelManifest
    model_dir: Path
    tmp: Path

    def refused(self) -> float:
        value = self.metrics.registry.get_sample_value(
            "borderline_adapter_swaps_total", {"result": "refused"}
        )
        return value or 0.0

    def variant(self, adapter_id: str, *, base: str | None = None) -> AdapterArtifact:
        """Another adapter: the bootstrap's with its head negated (claiming ``base``, if given)."""
        return inverted_adapter(
            self.model_dir, self.tmp / "adapters" / adapter_id, adapter_id, base=base
        )


def _run(
    services: Any,
    model_dir: Path,
    tmp: Path,
    body: Callable[[Rig], Awaitable[None]],
    poll_interval_s: float = 2.0,
) -> None:
    manifest = ModelManifest.read(model_dir)
    boot = AdapterArtifact.load(
        model_dir / BOOTSTRAP_ARTIFACT, expected_base=manifest.model_version
    )
    assert boot.adapter_id == manifest.adapter_version
    scorer = Scorer.from_dir(model_dir, threads=1)
    prefix = f"test-swap-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        async with redis_client(services.redis_url) as redis:
            registry = AdapterRegistry(redis, prefix)
            metrics = Metrics()
            configured = ServingState(routing_for(PolicySettings(version="v1")), boot.adapter_id)
            classifier = Classifier(
                model=scorer,
                executor=None,
                sink=_NoSink(),
                curator=Curator(
                    ledger=RedisReviewLedger(redis, prefix, 3600), policy=configured.routing
                ),
                metrics=metrics,
                topics=TopicNames(),
                state=configured,
                worker="t",
                max_text_bytes=10_000,
            )
            swaps: list[tuple[str, str]] = []
            rig = Rig(
                control=ControlPlane(
                    policies=PolicyStore(redis, prefix),
                    registry=registry,
                    redis=redis,
                    model=scorer,
                    serving=classifier,
                    cache_dir=tmp / "cache",
                    metrics=metrics,
                    worker="t",
                    poll_interval_s=poll_interval_s,
                    on_swap=lambda previous, new: swaps.append((previous, new)),
                ),
                swaps=swaps,
                scorer=scorer,
                registry=registry,
                redis=redis,
                metrics=metrics,
                prefix=prefix,
                boot=boot,
                inverted=boot,  # replaced just below
                manifest=manifest,
                model_dir=model_dir,
                tmp=tmp,
            )
            rig.inverted = rig.variant(f"inverted-{prefix}")
            assert await registry.register(boot)
            assert await registry.register(rig.inverted)
            await body(rig)

    asyncio.run(main())


def _violating(scorer: Scorer) -> np.ndarray:
    return scorer.score(TEXTS).probabilities[:, 1]


def test_sync_promotes_and_rolls_back(services: Any, model_dir: Path, tmp_path: Path) -> None:
    async def body(rig: Rig) -> None:
        boot_id, inv_id = rig.boot.adapter_id, rig.inverted.adapter_id
        before = _violating(rig.scorer)
        # the bootstrap should tell the texts apart, or a mirror would prove nothing
        assert before.max() - before.min() > 0.3, before

        assert await rig.control.sync() is False  # nothing active
        assert rig.scorer.adapter_version == boot_id

        await rig.registry.promote(boot_id, actor="test", reason="the base's own")
        assert await rig.control.sync() is False  # already serving it
        assert rig.scorer.adapter_version == boot_id

        swaps = rig.swaps
        await rig.registry.promote(inv_id, actor="test", reason="inverted")
        assert await rig.control.sync() is True
        assert rig.scorer.adapter_version == inv_id
        assert swaps == [(boot_id, inv_id)]  # the drift detectors hear of it
        assert rig.scorer.score(TEXTS).adapter_id == inv_id
        np.testing.assert_allclose(_violating(rig.scorer), 1.0 - before, atol=0.03)
        assert await rig.control.sync() is False  # same epoch: nothing to do
        assert rig.scorer.adapter_version == inv_id
        sample = rig.metrics.registry.get_sample_value
        assert sample("borderline_adapter_swaps_total", {"result": "promote"}) == 1.0
        assert sample("borderline_adapter_swap_seconds_count") == 1.0
        info = {"model_version": rig.manifest.model_version, "policy_version": "v1"}
        assert sample("borderline_model_info", {**info, "adapter_version": inv_id}) == 1.0

        await rig.registry.rollback("v1", actor="test", reason="mirror is wrong")
        assert await rig.control.sync() is True
        assert rig.scorer.adapter_version == boot_id
        assert swaps == [(boot_id, inv_id), (inv_id, boot_id)]
        np.testing.assert_allclose(_violating(rig.scorer), before, atol=1e-5)
        assert inv_id in rig.scorer.loaded_adapters  # ready for an instant re-promotion
        # the inverted adapter can still shadow-score while the bootstrap serves
        np.testing.assert_allclose(
            rig.scorer.score(TEXTS, adapter_id=inv_id).probabilities[:, 1], 1.0 - before, atol=0.03
        )
        assert sample("borderline_adapter_swaps_total", {"result": "rollback"}) == 1.0
        assert rig.refused() == 0.0

    _run(services, model_dir, tmp_path, body)


def test_tampered_or_foreign_adapters_are_refused(
    services: Any, model_dir: Path, tmp_path: Path
) -> None:
    async def body(rig: Rig) -> None:
        boot_id = rig.boot.adapter_id
        await rig.registry.promote(boot_id, actor="test", reason="the base's own")
        await rig.control.sync()
        before = _violating(rig.scorer)

        tampered = rig.variant(f"tampered-{rig.prefix}")
        await rig.registry.register(tampered)
        key = f"{rig.prefix}:adapter:{tampered.adapter_id}:file"
        stored = await rig.redis.get(key)
        assert isinstance(stored, bytes)
        data = bytearray(stored)
        data[len(data) // 2] ^= 0x01
        await rig.redis.set(key, bytes(data))
        await rig.registry.promote(tampered.adapter_id, actor="test", reason="tampered")
        assert await rig.control.sync() is False
        assert rig.refused() == 1.0
        assert rig.scorer.adapter_version == boot_id
        assert tampered.adapter_id not in rig.scorer.loaded_adapters
        assert not (tmp_path / "cache" / tampered.adapter_id).exists()
        np.testing.assert_allclose(_violating(rig.scorer), before, atol=1e-5)
        assert await rig.control.sync() is False  # a refusal is counted once, not every poll
        assert rig.refused() == 1.0

        foreign = rig.variant(f"foreign-{rig.prefix}", base="m-other")
        await rig.registry.register(foreign)
        await rig.registry.promote(foreign.adapter_id, actor="test", reason="another base")
        assert await rig.control.sync() is False
        assert rig.refused() == 2.0
        assert rig.scorer.adapter_version == boot_id
        assert foreign.adapter_id not in rig.scorer.loaded_adapters
        np.testing.assert_allclose(_violating(rig.scorer), before, atol=1e-5)

        # a good adapter promoted after the refusals is taken up
        await rig.registry.promote(rig.inverted.adapter_id, actor="test", reason="good again")
        assert await rig.control.sync() is True
        assert rig.scorer.adapter_version == rig.inverted.adapter_id
        assert rig.refused() == 2.0

    _run(services, model_dir, tmp_path, body)


def test_run_follows_a_promotion_through_pubsub(
    services: Any, model_dir: Path, tmp_path: Path
) -> None:
    async def body(rig: Rig) -> None:
        channel = rig.registry.channel
        task = asyncio.create_task(rig.control.run())
        try:
            deadline = time.monotonic() + 10
            while dict(await rig.redis.pubsub_numsub(channel)).get(channel.encode(), 0) < 1:
                assert time.monotonic() < deadline, "the control plane never subscribed"
                assert not task.done(), task
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)  # past the control plane's first poll, made on subscribing
            assert rig.scorer.adapter_version == rig.boot.adapter_id

            promoted_at = time.monotonic()
            await rig.registry.promote(rig.inverted.adapter_id, actor="test", reason="follow")
            while rig.scorer.adapter_version != rig.inverted.adapter_id:
                assert time.monotonic() - promoted_at < 2.0, "the promotion was not followed"
                assert not task.done(), task
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=5)
        assert task.cancelled()
        # cancelling closed its subscription
        deadline = time.monotonic() + 5
        while dict(await rig.redis.pubsub_numsub(channel)).get(channel.encode(), 0) != 0:
            assert time.monotonic() < deadline, "the control plane's subscription outlived it"
            await asyncio.sleep(0.05)

    _run(services, model_dir, tmp_path, body, poll_interval_s=30.0)
