"""The adaptation loop on the real broker and Redis, real worker and collector processes, the
simulated expert panel and the real trainer step: a policy change (v2: unsolicited promotional
mail, the corpus's hard-ham group, becomes violating) reaches the workers, review requests and
labels come under v2, the trainer produces a candidate, the gate passes it, workers switch, and
decisions on hard-ham items change; then a bad adapter (the bootstrap's head negated) is
promoted as the trainer would, the workers serve it, expert labels given since judge it, and the
trainer step rolls it back to the v2 candidate, which the workers serve again."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from redis.asyncio import Redis

from adapters.adapt.gate import GateConfig
from adapters.labels.agreement import kappa
from adapters.labels.dataset import LabeledItem, read_jsonl, sample
from adapters.labels.store import LabelStore
from adapters.offline.simulation import parse_panel, policy_truth
from adapters.policy.schema import load_policy
from adapters.policy.store import PolicyStore
from adapters.registry.artifact import BOOTSTRAP_ARTIFACT, AdapterArtifact
from adapters.registry.store import AdapterRegistry
from adapters.review.window import audit_draw
from models.manifest import ModelManifest
from models.scorer import Scorer
from streams.demo.panel import PanelStats
from streams.demo.replay import replay_items
from streams.embedded.launcher import start_worker
from streams.service.trainer import ACTOR, TrainerState, trainer_step
from tests.redis_support import redis_client, with_redis
from tests.waiting import wait_until_async

from .conftest import LOOP_PANEL, LOOP_REVIEW, LOOP_TRAINING, Stack
from .helpers import inverted_adapter, settle_labels, wait_serving
from .signing import sign_as_trainer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
GATE = GateConfig(min_kappa=0.5, margin=0.02, min_eval_items=30)
# the rollback cool-down holds a promotion back for a while after the last change of the active
# adapter, so that it does not flap; this test changes it within seconds on purpose
NO_COOLDOWN = {"rollback_cooldown_s": 0.0, **LOOP_TRAINING}


def _decisions(stack: Stack, items: Sequence[LabeledItem]) -> list[dict[str, Any]]:
    ids = {i.item_id for i in items}
    found = stack.read(stack.topics.decisions, lambda m: ids <= {d["item_id"] for d in m})
    missing = ids - {d["item_id"] for d in found}
    assert not missing, f"{len(missing)} items undecided"
    return found


def test_policy_change_is_absorbed_and_a_bad_adapter_rolled_back(
    stack: Stack, corpus: Path, tmp_path: Path
) -> None:
    manifest = ModelManifest.read(stack.model_dir)
    boot = AdapterArtifact.load(
        stack.model_dir / BOOTSTRAP_ARTIFACT, expected_base=manifest.model_version
    )
    panel = parse_panel(LOOP_PANEL)
    prefix = f"test-{stack.tag}"
    settings = stack.settings(review=LOOP_REVIEW, gate=NO_COOLDOWN)

    async def setup(redis: Redis) -> None:
        await LabelStore(redis, prefix).register_reviewers(r.reviewer_id for r in panel)
        registry = AdapterRegistry(redis, prefix)
        await registry.register(boot)
        await registry.promote(boot.adapter_id, actor="deploy", reason="v1 baseline")

    with_redis(stack.redis_url, setup)
    data = read_jsonl(corpus)
    truth = {i.item_id: ("violating" if i.label else "benign") for i in data}
    hard = [i for i in data if i.item_id.startswith("hard-ham")]
    rest = [i for i in sample(data, 900, seed=61) if not i.item_id.startswith("hard-ham")]
    # a stream rich in promotional mail, so that the policy change matters
    stream = [i for i in (hard[:200] + rest[:300]) if len(i.text) < 20_000]
    rng = np.random.default_rng(3)
    stream = [stream[k] for k in rng.permutation(len(stream))]
    # fresh items for judging the bad adapter live: never streamed before; as many as it takes
    # for the audit (v2's rate, the worker's seed 0: a deterministic draw) to draw 10 more than
    # the gate's minimum
    seen = {i.item_id for i in stream}
    fresh = [i for i in (hard[200:] + rest[300:]) if i.item_id not in seen and len(i.text) < 20_000]
    v2_rate = load_policy(REPO / "deploy/policies/v2.yaml").audit_rate or 0.0
    drawn = np.cumsum(audit_draw([i.item_id for i in fresh], rate=v2_rate, seed=0))
    needed = int(np.searchsorted(drawn, GATE.min_eval_items + 10)) + 1
    assert needed <= len(fresh), f"{drawn[-1]} audit draws among {len(fresh)} fresh items"
    fresh = fresh[:needed]
    print(f"{needed} fresh items: {drawn[needed - 1]} drawn by the audit at rate {v2_rate}")

    worker = stack.start_worker("w", review=LOOP_REVIEW, gate=NO_COOLDOWN)
    collector = start_worker(
        settings, f"c-{stack.tag}", stack.tmp / "collector.log", role="collector"
    )
    stack.workers.append(collector)
    scorer = Scorer.from_dir(stack.model_dir, threads=2)
    state = TrainerState()

    async def step(redis: Redis) -> dict[str, Any] | None:
        return await trainer_step(
            settings,
            redis,
            scorer,
            state,
            min_new_labels=10,
            gate=GATE,
            out_dir=tmp_path / "candidates",
        )

    async def label_stream(items: Sequence[LabeledItem], until: Any) -> PanelStats:
        """Stream ``items`` with the expert panel answering review requests (under the
        policy's truth) until ``until(labels)`` holds and the labels settle."""
        stop = asyncio.Event()
        stats = PanelStats()
        experts = asyncio.create_task(
            stack.simulated_panel(
                panel, truth, per_item=3, seed=7, stop=stop, stats=stats, truth_for=policy_truth
            )
        )
        try:
            async with redis_client(stack.redis_url) as redis:
                labels = LabelStore(redis, prefix)
                await replay_items(stack.bootstrap_servers, stack.topics.items, items, rate=50)
                await until(labels)
                await settle_labels(labels, "v2", timeout_s=120)
        finally:
            stop.set()
            await experts
        return stats

    # 1. the policy change reaches the workers before any item under it
    with_redis(
        stack.redis_url,
        lambda redis: PolicyStore(redis, prefix).publish(
            load_policy(REPO / "deploy/policies/v2.yaml"), actor="test", now=time.time()
        ),
    )
    wait_serving(worker, policy_version="v2")

    async def all_decided(_labels: LabelStore) -> None:
        await asyncio.to_thread(_decisions, stack, stream)

    stats = asyncio.run(label_stream(stream, all_decided))
    decisions = _decisions(stack, stream)
    assert Counter(d["policy_version"] for d in decisions)["v2"] == len(decisions)
    requests = stack.read_all(stack.topics.review_requests)
    reasons = Counter(r["reason"] for r in requests)
    print(f"v2 review requests: {dict(reasons)}; panel {stats}")
    assert {"audit", "policy_change"} <= set(reasons)
    assert all(r["policy_version"] == "v2" for r in requests)
    marked = [r for r in requests if r["audit_drawn"]]
    print(
        f"{len(marked)} requests audit-drawn, reasons {dict(Counter(r['reason'] for r in marked))}"
    )
    assert {r["audit_rate"] for r in marked} == {v2_rate}

    # 2. the trainer trains on the v2 labels; the gate passes the candidate
    report = with_redis(stack.redis_url, step)
    assert report is not None
    print(f"gate report: {report}")
    assert "policy_change" in report["triggers"]
    assert report["passed"], report["reason"]
    assert report["candidate_kappa"] > report["incumbent_kappa"]
    candidate_id = report["adapter_id"]

    # workers switch to the v2 adapter; promotional mail is now blocked more often
    wait_serving(worker, adapter_version=candidate_id)
    again = [i for i in stream if i.item_id.startswith("hard-ham")][:60]
    # new ids with a run tag (``tag:corpus-id``) that the simulated experts read through
    renamed = [type(i)(f"again:{i.item_id}", i.text, i.label) for i in again]
    truth.update({r.item_id: truth[i.item_id] for r, i in zip(renamed, again, strict=True)})
    asyncio.run(replay_items(stack.bootstrap_servers, stack.topics.items, renamed))
    by_id = {d["item_id"]: d for d in _decisions(stack, renamed)}
    before_p = np.mean([by_id[i.item_id]["probabilities"]["violating"] for i in again])
    after_p = np.mean([by_id[f"again:{i.item_id}"]["probabilities"]["violating"] for i in again])
    adapters = {by_id[f"again:{i.item_id}"]["adapter_version"] for i in again}
    print(f"hard-ham P(violating): before {before_p:.3f}, after {after_p:.3f}")
    assert adapters == {candidate_id}
    assert after_p > before_p + 0.1

    # 3. a bad adapter goes live as the trainer would promote it; the workers serve it
    bad = inverted_adapter(
        stack.model_dir, tmp_path / "bad", f"bad-{stack.tag}", policy_version="v2"
    )

    async def promote_bad(redis: Redis) -> float:
        registry = AdapterRegistry(redis, prefix)
        await registry.register(bad)
        await sign_as_trainer(registry, bad, settings)  # as if it had passed the gate
        record = await registry.promote(bad.adapter_id, actor=ACTOR, reason="gate passed (test)")
        assert record.previous == candidate_id
        return record.at

    promoted_at = with_redis(stack.redis_url, promote_bad)
    wait_serving(worker, adapter_version=bad.adapter_id)

    # 4. audit-drawn expert labels given since its promotion judge it live
    async def audited_since(labels: LabelStore) -> list[str]:
        since = await labels.labelled_since("v2", promoted_at)
        reviewed = await labels.reviewed_items(since)
        return [i for i, r in reviewed.items() if r.audit_drawn]

    async def enough_fresh(labels: LabelStore) -> None:
        async def count() -> int | None:
            drawn = len(await audited_since(labels))
            return drawn if drawn >= GATE.min_eval_items else None

        await wait_until_async(count, 180, 1.0, f"{GATE.min_eval_items} fresh audit labels")

    asyncio.run(label_stream(fresh, enough_fresh))
    live = _decisions(stack, fresh)
    served_by = Counter(d["adapter_version"] for d in live)
    assert served_by[bad.adapter_id] > 0, served_by

    async def fresh_evaluation(redis: Redis) -> tuple[list[str], list[str]]:
        labels = LabelStore(redis, prefix)
        drawn = set(await audited_since(labels))
        every = await labels.dataset("v2", "train", eval_share=0.0)
        held_out = [e for e in every if e.item_id in drawn]
        return [e.label for e in held_out], [e.text for e in held_out]

    # the live kappa, measured here with the bad adapter's own decisions on those labels
    expert, texts = with_redis(stack.redis_url, fresh_evaluation)
    scorer.load_adapter(bad.adapter_id, bad.path)
    probabilities = scorer.score(texts, adapter_id=bad.adapter_id).probabilities
    measured = kappa(expert, [scorer.labels[j] for j in probabilities.argmax(axis=1)])
    print(f"bad adapter on {len(expert)} fresh audit labels: kappa {measured}")
    assert len(expert) >= GATE.min_eval_items
    assert measured is not None and measured < GATE.min_kappa

    # 5. the trainer step rolls it back to the v2 candidate, and the workers follow
    rolled = with_redis(stack.redis_url, step)
    print(f"rollback: {rolled}")
    assert rolled is not None and rolled["event"] == "rolled_back", rolled
    assert rolled["to"] == candidate_id
    assert rolled["live_kappa"] < GATE.min_kappa

    async def active(redis: Redis) -> Any:
        return await AdapterRegistry(redis, prefix).active("v2")

    record = with_redis(stack.redis_url, active)
    assert (record.adapter_id, record.previous, record.action, record.actor) == (
        candidate_id,
        bad.adapter_id,
        "rollback",
        ACTOR,
    )
    wait_serving(worker, adapter_version=candidate_id)
