"""The adaptation loop on the real broker and Redis, real worker and collector processes, the
simulated expert panel and the real trainer step: a policy change (v2: unsolicited promotional
mail, the corpus's hard-ham group, becomes violating) reaches the workers, review requests and
labels come under v2, the trainer produces a candidate, the gate passes it, workers switch, and
decisions on hard-ham items change; a promoted adapter that does badly on fresh labels is rolled
back automatically."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from redis.asyncio import Redis

from adapters.adapt.gate import GateConfig
from adapters.labels.dataset import read_jsonl, sample
from adapters.labels.store import LabelStore
from adapters.offline.simulation import parse_panel, policy_truth
from adapters.policy.schema import load_policy
from adapters.policy.store import PolicyStore
from adapters.registry.artifact import BOOTSTRAP_ARTIFACT, AdapterArtifact
from adapters.registry.store import AdapterRegistry
from models.manifest import ModelManifest
from models.scorer import Scorer
from streams.demo.panel import PanelStats
from streams.demo.replay import replay_items
from streams.embedded.launcher import start_worker
from streams.service.reader import read_topic
from streams.service.trainer import TrainerState, trainer_step

from .conftest import LOOP_PANEL, LOOP_REVIEW, Stack

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


async def _with(stack: Stack, fn: Any) -> Any:
    redis = Redis.from_url(stack.redis_url)
    try:
        return await fn(redis, f"test-{stack.tag}")
    finally:
        await redis.aclose()


def test_policy_change_is_absorbed_and_a_bad_adapter_rolled_back(
    stack: Stack, corpus: Path, tmp_path: Path
) -> None:
    manifest = ModelManifest.read(stack.model_dir)
    boot = AdapterArtifact.load(
        stack.model_dir / BOOTSTRAP_ARTIFACT, expected_base=manifest.model_version
    )
    panel = parse_panel(LOOP_PANEL)

    async def setup(redis: Redis, prefix: str) -> None:
        await LabelStore(redis, prefix).register_reviewers(r.reviewer_id for r in panel)
        registry = AdapterRegistry(redis, prefix)
        await registry.register(boot)
        await registry.promote(boot.adapter_id, actor="deploy", reason="v1 baseline")

    asyncio.run(_with(stack, setup))
    data = read_jsonl(corpus)
    truth = {i.item_id: ("violating" if i.label else "benign") for i in data}
    hard = [i for i in data if i.item_id.startswith("hard-ham")]
    rest = [i for i in sample(data, 900, seed=61) if not i.item_id.startswith("hard-ham")]
    # a stream rich in promotional mail, so that the policy change matters
    stream = [i for i in (hard[:200] + rest[:300]) if len(i.text) < 20_000]
    rng = np.random.default_rng(3)
    stream = [stream[k] for k in rng.permutation(len(stream))]

    worker = stack.start_worker("w", review=LOOP_REVIEW)
    collector = start_worker(
        stack.settings(review=LOOP_REVIEW),
        f"c-{stack.tag}",
        stack.tmp / "collector.log",
        role="collector",
    )
    try:

        async def publish_v2(redis: Redis, prefix: str) -> None:
            await PolicyStore(redis, prefix).publish(
                load_policy(REPO / "deploy/policies/v2.yaml"), actor="test", now=time.time()
            )

        async def loop() -> PanelStats:
            stop = asyncio.Event()
            stats = PanelStats()
            experts = asyncio.create_task(
                stack.simulated_panel(
                    panel, truth, per_item=3, seed=7, stop=stop, stats=stats, truth_for=policy_truth
                )
            )
            await _with(stack, publish_v2)
            await asyncio.sleep(3)  # workers follow the policy within a poll
            await replay_items(stack.bootstrap_servers, stack.topics.items, stream, rate=50)
            await asyncio.sleep(15)
            stop.set()
            await experts
            return stats

        stats = asyncio.run(loop())
        decisions = asyncio.run(
            read_topic(
                stack.bootstrap_servers,
                stack.topics.decisions,
                until=lambda m: False,
                timeout_s=5,
                idle_s=2,
            )
        )
        assert Counter(d["policy_version"] for d in decisions)["v2"] == len(decisions)
        requests = asyncio.run(
            read_topic(
                stack.bootstrap_servers,
                stack.topics.review_requests,
                until=lambda m: False,
                timeout_s=5,
                idle_s=2,
            )
        )
        reasons = Counter(r["reason"] for r in requests)
        print(f"v2 review requests: {dict(reasons)}; panel {stats}")
        assert {"audit", "policy_change"} <= set(reasons)
        assert all(r["policy_version"] == "v2" for r in requests)

        async def step(redis: Redis, prefix: str) -> dict[str, Any] | None:
            settings = stack.settings(review=LOOP_REVIEW)
            scorer = Scorer.from_dir(stack.model_dir, threads=2)
            return await trainer_step(
                settings,
                redis,
                scorer,
                TrainerState(),
                min_new_labels=10,
                gate=GateConfig(min_kappa=0.5, margin=0.02, min_eval_items=30),
                out_dir=tmp_path / "candidates",
            )

        report = asyncio.run(_with(stack, step))
        assert report is not None
        print(f"gate report: {report}")
        assert "policy_change" in report["triggers"]
        assert report["passed"], report["reason"]
        assert report["candidate_kappa"] > report["incumbent_kappa"]

        # workers switch to the v2 adapter; promotional mail is now blocked more often
        time.sleep(4)
        again = [i for i in stream if i.item_id.startswith("hard-ham")][:60]
        renamed = [type(i)(f"again-{i.item_id}", i.text, i.label) for i in again]
        asyncio.run(replay_items(stack.bootstrap_servers, stack.topics.items, renamed))
        ids = {i.item_id for i in renamed}
        after = asyncio.run(
            read_topic(
                stack.bootstrap_servers,
                stack.topics.decisions,
                until=lambda m: ids <= {d["item_id"] for d in m},
                timeout_s=60,
            )
        )
        by_id = {d["item_id"]: d for d in after}
        before_p = np.mean([by_id[i.item_id]["probabilities"]["violating"] for i in again])
        after_p = np.mean(
            [by_id[f"again-{i.item_id}"]["probabilities"]["violating"] for i in again]
        )
        adapters = {by_id[f"again-{i.item_id}"]["adapter_version"] for i in again}
        print(f"hard-ham P(violating): before {before_p:.3f}, after {after_p:.3f}")
        assert adapters == {report["adapter_id"]}
        assert after_p > before_p + 0.1
    finally:
        collector.stop()
        worker.stop()
