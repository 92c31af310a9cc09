"""The trainer's gate and automatic rollback on real Redis with the real model: a candidate
trained on labels with a large share flipped is rejected and the incumbent keeps serving; an
adapter the trainer promoted that does badly on audit labels arriving after its promotion is
rolled back to the previous one; a good adapter the trainer promoted is NOT rolled back while
labels arrive that experts gave on the items it was unsure of (hard by construction)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from adapters.adapt.candidate import decisions
from adapters.adapt.gate import GateConfig
from adapters.labels.consensus import split_of
from adapters.labels.dataset import read_jsonl, sample
from adapters.labels.store import LabelStore, ReviewedItem
from adapters.registry.artifact import BOOTSTRAP_ARTIFACT, AdapterArtifact, write_artifact
from adapters.registry.store import AdapterRegistry
from models.adapter_file import read_adapter_file
from models.manifest import ModelManifest
from models.scorer import Scorer
from streams.service.trainer import ACTOR, TrainerState, trainer_step
from streams.wire.settings import Settings
from streams.wire.topics import TopicNames, ensure_topics
from tests.redis_support import redis_client

from .conftest import LOOP_TRAINING
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
            "gate": LOOP_TRAINING,  # half the product's training passes (see conftest)
        }
    )


def _requested(item: Any, at: float, *, drawn: bool) -> ReviewedItem:
    """A request as curation records it: drawn by the audit (at rate 0.4) or routed as
    uncertain."""
    reason = "audit" if drawn else "uncertain"
    return ReviewedItem(
        item.item_id,
        item.text,
        None,
        0.5,
        reason,
        at,
        audit_drawn=drawn,
        audit_rate=0.4 if drawn else None,
    )


async def _label(store: LabelStore, items: list[Any], *, flip_train: bool, at: float) -> None:
    """Items whose hash split is ``eval`` (about 40%) were drawn by the audit; the others were
    routed as uncertain; with ``flip_train`` the latter are labelled wrong."""
    await store.record_requests(
        "v1", [_requested(i, at, drawn=split_of(i.item_id) == "eval") for i in items]
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


def _copy_of_boot(model_dir: Path, out: Path, adapter_id: str) -> AdapterArtifact:
    """The bootstrap adapter under another id: as good as the one it replaces."""
    manifest = ModelManifest.read(model_dir)
    boot = AdapterArtifact.load(
        model_dir / BOOTSTRAP_ARTIFACT, expected_base=manifest.model_version
    )
    return write_artifact(
        out,
        adapter_id=adapter_id,
        params=read_adapter_file(boot.path),
        base_model_version=manifest.model_version,
        policy_version="v1",
        labels=manifest.labels,
        parent_id=boot.adapter_id,
    )


def test_a_good_promoted_adapter_is_not_rolled_back_while_hard_labels_arrive(
    services: Any, model_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    """On main the live check read every evaluation-split label since the promotion: the items
    the adapter was unsure of (and got wrong) pulled its kappa under min_kappa and a good adapter
    went back. Judged on the audit draws, against the previous adapter on the same items, it
    stays."""
    prefix = f"gate-{uuid.uuid4().hex[:8]}"
    topics = TopicNames().prefixed(f"g{prefix}.")
    asyncio.run(ensure_topics(services.bootstrap_servers, topics.all(), 1))
    settings = _settings(services, model_dir, prefix, topics)
    manifest = ModelManifest.read(model_dir)
    boot = AdapterArtifact.load(
        model_dir / BOOTSTRAP_ARTIFACT, expected_base=manifest.model_version
    )
    good = _copy_of_boot(model_dir, tmp_path / "good", f"good-{prefix}")
    scorer = Scorer.from_dir(model_dir, threads=2)
    scorer.load_adapter(boot.adapter_id, boot.path)
    data = read_jsonl(corpus)
    audited = sample(data, 40, seed=73)  # a uniform draw: the adapter is good here
    # promotional mail that is still benign under v1: where the bootstrap model errs most
    drawn = {i.item_id for i in audited}
    promo = [i for i in data if i.item_id.startswith("hard-ham") and i.item_id not in drawn]
    said = decisions(scorer, boot.adapter_id, [i.text for i in promo])
    truth = ["violating" if i.label else "benign" for i in promo]
    hard = [i for i, d, t in zip(promo, said, truth, strict=True) if d != t]
    gate = GateConfig(min_kappa=0.6, margin=0.02, min_eval_items=30)
    print(f"{len(audited)} audit-drawn items, {len(hard)} hard items the model got wrong")

    async def run() -> tuple[dict[str, Any] | None, Any]:
        async with redis_client(services.redis_url) as redis:
            store = LabelStore(redis, prefix)
            registry = AdapterRegistry(redis, prefix)
            await store.register_reviewers(REVIEWERS)
            for artifact in (boot, good):
                await registry.register(artifact)
            await registry.promote(boot.adapter_id, actor="deploy", reason="baseline")
            promoted = await registry.promote(good.adapter_id, actor=ACTOR, reason="gate (test)")
            at = promoted.at + 1.0
            await store.record_requests(
                "v1",
                [_requested(i, at, drawn=True) for i in audited]
                + [_requested(i, at, drawn=False) for i in hard],
            )
            for i in audited + hard:
                for r in REVIEWERS:
                    await store.add_label(
                        "v1", i.item_id, r, "violating" if i.label else "benign", at
                    )
            out = await trainer_step(
                settings,
                redis,
                scorer,
                TrainerState(trained_on={"v1": 10**6}),
                min_new_labels=10**6,
                gate=gate,
                out_dir=tmp_path / "candidates",
            )
            return out, await registry.active("v1")

    out, final = asyncio.run(run())
    assert len(hard) >= 15, "the bootstrap model should get some promotional mail wrong"
    assert out is None, out
    assert final is not None and (final.adapter_id, final.action) == (good.adapter_id, "promote")
