"""The trainer's gate and automatic rollback on real Redis with the real model: a candidate
trained on labels with a large share flipped is rejected and the incumbent keeps serving; an
adapter the trainer promoted that does badly on expert labels arriving after its promotion is
rolled back to the previous one."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from adapters.adapt.gate import GateConfig
from adapters.labels.consensus import split_of
from adapters.labels.dataset import read_jsonl, sample
from adapters.labels.store import LabelStore, ReviewedItem
from adapters.registry.artifact import BOOTSTRAP_ARTIFACT, AdapterArtifact
from adapters.registry.store import AdapterRegistry
from models.manifest import ModelManifest
from models.scorer import Scorer
from streams.service.trainer import ACTOR, TrainerState, trainer_step
from streams.wire.settings import Settings
from streams.wire.topics import TopicNames, ensure_topics
from tests.redis_support import redis_client

from .helpers import inverted_adapter

pytestmark = pytest.mark.integration

REVIEWERS = ["alice", "bob", "carol"]


def _settings(services: Any, model_dir: Path, prefix: str, topics: TopicNames) -> Settings:
    return Settings.model_validate(
        {
            "kafka": {
                "bootstrap_servers": services.bootstrap_servers,
                "topics": topics.model_dump(),
            },
            "redis": {"url": services.redis_url, "key_prefix": prefix},
            "model": {"dir": str(model_dir)},
            "review": {"min_shared": 8},
        }
    )


async def _label(store: LabelStore, items: list[Any], *, flip_train: bool, at: float) -> None:
    await store.record_requests(
        "v1", [ReviewedItem(i.item_id, i.text, None, 0.5, "audit", at) for i in items]
    )
    for i in items:
        label = "violating" if i.label else "benign"
        if flip_train and split_of(i.item_id) == "train":
            label = "benign" if label == "violating" else "violating"
        for r in REVIEWERS:
            await store.add_label("v1", i.item_id, r, label, at)


def test_flipped_labels_are_rejected_and_a_bad_promotion_rolled_back(
    services: Any, model_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    prefix = f"gate-{uuid.uuid4().hex[:8]}"
    topics = TopicNames().prefixed(f"g{prefix}.")
    asyncio.run(ensure_topics(services.bootstrap_servers, topics.all(), 2))
    settings = _settings(services, model_dir, prefix, topics)
    manifest = ModelManifest.read(model_dir)
    boot = AdapterArtifact.load(
        model_dir / BOOTSTRAP_ARTIFACT, expected_base=manifest.model_version
    )
    data = read_jsonl(corpus)
    first = sample(data, 160, seed=71)
    later = sample(data, 120, seed=72, exclude={i.item_id for i in first})
    gate = GateConfig(min_kappa=0.6, margin=0.02, min_eval_items=30)

    async def run() -> tuple[dict[str, Any] | None, Any, dict[str, Any] | None, Any]:
        async with redis_client(services.redis_url) as redis:
            store = LabelStore(redis, prefix)
            registry = AdapterRegistry(redis, prefix)
            await store.register_reviewers(REVIEWERS)
            await registry.register(boot)
            await registry.promote(boot.adapter_id, actor="deploy", reason="baseline")
            # 1. a bad batch of labels: every training-split label flipped, evaluation correct
            await _label(store, first, flip_train=True, at=time.time())
            scorer = Scorer.from_dir(model_dir, threads=2)
            report = await trainer_step(
                settings,
                redis,
                scorer,
                TrainerState(),
                min_new_labels=10,
                gate=gate,
                out_dir=tmp_path / "candidates",
                force=True,
            )
            after_reject = await registry.active("v1")

            # 2. the trainer promoted an adapter that turns out bad (a mirrored head)
            bad = inverted_adapter(model_dir, tmp_path / "bad", f"bad-{prefix}")
            await registry.register(bad)
            promoted = await registry.promote(
                bad.adapter_id, actor=ACTOR, reason="gate passed (test)"
            )
            # fresh, correct labels, given after the promotion (by their time, not a sleep)
            await _label(store, later, flip_train=False, at=promoted.at + 1.0)
            rollback = await trainer_step(
                settings,
                redis,
                scorer,
                TrainerState(trained_on={"v1": 10**6}),
                min_new_labels=10**6,
                gate=gate,
                out_dir=tmp_path / "candidates",
            )
            return report, after_reject, rollback, await registry.active("v1")

    report, after_reject, rollback, final = asyncio.run(run())
    print(f"flipped-label candidate: {report}")
    assert report is not None and not report["passed"], report
    assert report["candidate_kappa"] < report["incumbent_kappa"]
    assert after_reject is not None and after_reject.adapter_id == boot.adapter_id
    print(f"rollback: {rollback}")
    assert rollback is not None and rollback["event"] == "rolled_back"
    assert rollback["live_kappa"] < gate.min_kappa
    assert final is not None
    assert (final.adapter_id, final.action, final.actor) == (boot.adapter_id, "rollback", ACTOR)
