"""The simulated panel, as the console, gives no more requests to a reviewer the service
excluded, and takes them back once a lead clears them. Seen in `bench adapt`: 43 of its 97
second opinions were asked because the only label on an item came from the excluded random
reviewer, whom the panel kept answering requests."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from adapters.labels.store import LabelStore
from adapters.offline.simulation import parse_panel
from streams.demo.panel import EXCLUDED_EVERY_S, PanelStats, run_simulated_panel
from streams.demo.replay import replay_raw
from streams.service.reader import read_topic
from streams.wire.messages import ReviewReason, ReviewRequest, encode
from streams.wire.topics import TopicNames, ensure_topics
from tests.redis_support import redis_client


def _requests(first: int, count: int) -> list[tuple[bytes, bytes]]:
    out = []
    for n in range(first, first + count):
        request = ReviewRequest(
            request_id=f"rq-{n}",
            item_id=f"ad-{n}",
            text=f"item {n}",
            reason=ReviewReason.AUDIT,
            probabilities={"violating": 0.5},
            policy_version="v1",
            priority=0.5,
            requested_at=time.time(),
            opinions=2,  # two of the three reviewers each
        )
        out.append((request.item_id.encode(), encode(request)))
    return out


def test_an_excluded_reviewer_gets_no_requests_until_cleared(services: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    topics = TopicNames().prefixed(f"p{tag}.")
    servers = services.bootstrap_servers
    asyncio.run(ensure_topics(servers, topics.all(), 2))
    panel = parse_panel("alice:0:0,bob:0:0,randy:0.5:0")
    truth = {f"ad-{n}": "benign" for n in range(60)}

    async def run() -> list[dict[str, Any]]:
        async with redis_client(services.redis_url) as redis:
            store = LabelStore(redis, f"test-{tag}")
            await store.set_excluded(["randy"])
            stop = asyncio.Event()
            answering = asyncio.create_task(
                run_simulated_panel(
                    servers,
                    topics,
                    panel,
                    truth,
                    keys={},
                    seed=1,
                    stop=stop,
                    stats=PanelStats(),
                    excluded=store.excluded,
                )
            )
            try:
                await replay_raw(servers, topics.review_requests, _requests(0, 30))
                await read_topic(
                    servers, topics.review_labels, until=lambda m: len(m) >= 60, timeout_s=60
                )
                await store.set_excluded([])  # a lead cleared randy
                await asyncio.sleep(2 * EXCLUDED_EVERY_S)  # the panel reads it within that
                await replay_raw(servers, topics.review_requests, _requests(30, 30))
                return await read_topic(
                    servers, topics.review_labels, until=lambda m: len(m) >= 120, timeout_s=60
                )
            finally:
                stop.set()
                await answering

    labels = asyncio.run(run())
    by_item: dict[int, set[str]] = {}
    for label in labels:
        by_item.setdefault(int(label["item_id"].split("-")[1]), set()).add(label["reviewer_id"])
    assert len(labels) == 120 and all(len(who) == 2 for who in by_item.values())
    excluded_then = {r for n, who in by_item.items() if n < 30 for r in who}
    assert excluded_then == {"alice", "bob"}  # randy excluded: every request to the other two
    cleared_then = [who for n, who in by_item.items() if n >= 30]
    assert sum("randy" in who for who in cleared_then) >= 10  # two of three picked: about 20
