"""Curation and expert labels on the real broker and Redis with real worker and collector
processes and the simulated expert panel: review requests of all three reasons go out within the
budget, each label is stored once, a reviewer who answers at random is detected and excluded, an
unregistered reviewer's labels are rejected to the dead-letter topic, and the train/eval split of
the consensus labels is the same after a restart."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from adapters.labels.dataset import read_jsonl, sample
from adapters.labels.store import LabelStore
from adapters.offline.simulation import parse_panel
from streams.demo.panel import PanelStats
from streams.demo.replay import replay_items, replay_raw
from streams.embedded.launcher import WorkerProcess, start_worker
from streams.service.reader import read_topic
from streams.wire.messages import ReviewLabel, encode

from .conftest import Stack

pytestmark = pytest.mark.integration

PANEL = "alice:0.02:0.2,bob:0.04:0.2,carol:0.04:0.2,randy:0.5:0.2"
# capacity labels_per_hour / 12 = 100 requests at once, then 1 every 3 s
REVIEW = {
    "labels_per_hour": 1200,
    "max_open": 200,
    "mine_every": 150,
    "audit_rate": 0.02,
    "max_pairs": 6,
    "min_shared": 8,
}


def _store_call(stack: Stack, fn: Any) -> Any:
    async def run() -> Any:
        redis = Redis.from_url(stack.redis_url)
        try:
            return await fn(LabelStore(redis, f"test-{stack.tag}"))
        finally:
            await redis.aclose()

    return asyncio.run(run())


def _start_collector(stack: Stack, name: str) -> WorkerProcess:
    return start_worker(
        stack.settings(review=REVIEW), name, stack.tmp / f"{name}.log", role="collector"
    )


def test_curation_labels_agreement_and_split(stack: Stack, corpus: Path) -> None:
    panel = parse_panel(PANEL)
    _store_call(stack, lambda s: s.register_reviewers([r.reviewer_id for r in panel]))
    data = read_jsonl(corpus)
    truth = {i.item_id: ("violating" if i.label else "benign") for i in data}
    collector = _start_collector(stack, "collector-1")
    stack.start_worker("w", review=REVIEW)
    started = time.time()
    items = [i for i in sample(data, 700, seed=51) if len(i.text) < 20_000][:600]

    async def run_loop() -> PanelStats:
        stop = asyncio.Event()
        stats = PanelStats()
        panel_task = asyncio.create_task(
            # every reviewer labels every item: enough shared items to judge each reviewer
            stack.simulated_panel(panel, truth, per_item=4, seed=5, stop=stop, stats=stats)
        )
        # in two halves: by the second, the first half's labels are in and the workers' index
        # of labelled neighbours (refreshed every 5 s) has them as evidence
        await replay_items(stack.bootstrap_servers, stack.topics.items, items[:300], rate=60)
        await asyncio.sleep(8)
        await replay_items(stack.bootstrap_servers, stack.topics.items, items[300:], rate=60)
        # an unregistered reviewer, and one label sent twice
        mallory = ReviewLabel(
            item_id=items[0].item_id,
            reviewer_id="mallory",
            label="benign",
            policy_version="v1",
            labeled_at=time.time(),
        )
        await replay_raw(
            stack.bootstrap_servers, stack.topics.review_labels, [(b"k", encode(mallory))]
        )
        await asyncio.sleep(20)
        stop.set()
        await panel_task
        return stats

    try:
        stats = asyncio.run(run_loop())
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
        print(f"review requests by reason: {dict(reasons)}; panel: {stats}")
        assert {"uncertain", "boundary", "audit"} <= set(reasons), reasons
        first = [r for r in requests if r["reason"] != "second_opinion"]
        elapsed = time.time() - started
        assert len(first) <= 100 + elapsed * 1200 / 3600 + 1, "the budget was exceeded"
        assert len({r["item_id"] for r in first}) == len(first), "an item was requested twice"
        pairs = [r for r in requests if r["reason"] == "boundary"]
        by_id = {r["item_id"]: r for r in pairs}
        assert all(by_id.get(r["pair_item_id"]) for r in pairs), "a boundary pair was split"
        assert any(r["evidence"] for r in requests), "no request carried labelled neighbours"

        votes = _store_call(stack, lambda s: s.all_votes("v1"))
        n_labels = sum(len(v) for v in votes.values())
        assert n_labels >= 100
        assert all(len(v) == len(set(v)) for v in votes.values())
        excluded = _store_call(stack, lambda s: s.excluded())
        assert "randy" in excluded, excluded
        assert not excluded & {"alice", "bob", "carol"}

        dead = asyncio.run(
            read_topic(
                stack.bootstrap_servers,
                stack.topics.review_labels_dlq,
                until=lambda m: len(m) >= 1,
                timeout_s=20,
            )
        )
        assert dead and dead[0]["reason"] == "unregistered_reviewer"
        assert "mallory" not in {r for v in votes.values() for r in v}

        train = _store_call(stack, lambda s: s.dataset("v1", "train"))
        evaluation = _store_call(stack, lambda s: s.dataset("v1", "eval"))
        assert train and evaluation
        assert not {e.item_id for e in train} & {e.item_id for e in evaluation}
    finally:
        collector.stop()

    # a restart of the collector changes nothing about the split
    again = _start_collector(stack, "collector-2")
    try:
        time.sleep(3)
        train_2 = _store_call(stack, lambda s: s.dataset("v1", "train"))
        assert [e.item_id for e in train_2] == [e.item_id for e in train]
    finally:
        again.stop()
