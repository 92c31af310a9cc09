"""Poison in a label batch, as a hostile Kafka client sends it: a real `borderline collector` on
the real broker and Redis gets good labels and hostile records in one burst (so they share its
batches). Each hostile record is dead-lettered with its reason, alone; every good label around it
is stored; the collector neither exits nor restarts. Before, a number of 5,000 digits (which
`json` refuses with a ValueError, not a decode error) failed the whole batch and the collector
exited, on every restart again; decoding now gives it a reason (`invalid_json`). What no check
foresees is still dead-lettered alone as ``poison`` after a second failure: unit-tested with a
planted failure (tests/unit/streams/service/test_collect.py), since no known record reaches it."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from redis.asyncio import Redis

from streams.demo.replay import replay_raw
from streams.embedded.launcher import start_worker
from streams.wire.messages import encode
from tests.redis_support import with_redis
from tests.waiting import Progress, wait_until

from .conftest import Stack
from .helpers import requested, reviewer_keys
from .outages import log_lines, stored_labels
from .test_outage_collector import POLICY, REVIEWERS
from .test_outage_collector import _labels as signed_labels

pytestmark = pytest.mark.integration

ITEMS = 12
_OPEN = b'{"item_id":"item-0","reviewer_id":"ann","label":"benign","policy_version":"v1",'

# hostile record -> the reason its dead letter must carry
HOSTILE: dict[str, tuple[bytes, str]] = {
    "digits": (_OPEN + b'"labeled_at":1' + b"0" * 5000 + b"}", "invalid_json"),
    "deep": (b"[" * 10_000 + b"]" * 10_000, "too_deeply_nested"),
    "surrogate": (_OPEN.replace(b"ann", b"\\ud800") + b'"labeled_at":1.0}', "invalid_unicode"),
    "utf8": (_OPEN.replace(b"ann", b"a\xffn") + b'"labeled_at":1.0}', "invalid_utf8"),
    "not json": (b"this is not json", "invalid_json"),
    "empty": (b"", "empty_value"),
    "huge": (_OPEN + b'"labeled_at":1.0,"pad":"' + b"x" * 900_000 + b'"}', "value_too_large"),
    "infinite time": (_OPEN + b'"labeled_at":1e999}', "invalid_timestamp"),
    "unsigned": (_OPEN + b'"labeled_at":1.0}', "unsigned_label"),
    "stranger": (_OPEN.replace(b"ann", b"eve") + b'"labeled_at":1.0}', "unregistered_reviewer"),
}


def test_one_poison_record_costs_its_dead_letter_and_the_rest_of_the_batch_is_stored(
    stack: Stack, tmp_path: Path
) -> None:
    settings = stack.settings()
    prefix = settings.redis.key_prefix

    async def register(client: Redis) -> dict[str, bytes]:
        await requested(client, prefix, [f"item-{i}" for i in range(ITEMS)], policy=POLICY)
        return await reviewer_keys(client, prefix, REVIEWERS)

    keys = with_redis(stack.redis_url, register)
    good = signed_labels(0, ITEMS, keys)  # every reviewer answers items 0..ITEMS-1
    # the hostile records in between the good ones, every one keyed as item-0..: one burst
    records: list[tuple[bytes | None, bytes]] = [
        (label.item_id.encode(), encode(label)) for label in good
    ]
    for n, (value, _) in enumerate(HOSTILE.values()):
        records.insert(2 * n + 1, (f"item-{n % ITEMS}".encode(), value))

    log = tmp_path / "collector.log"
    collector = start_worker(settings, f"collector-{stack.tag}", log, role="collector")
    try:
        asyncio.run(replay_raw(stack.bootstrap_servers, stack.topics.review_labels, records))

        def stored() -> Progress:
            n = stored_labels(stack.redis_url, prefix, POLICY)
            alive = collector.process.poll() is None
            return Progress(n == len(good) or not alive, {"stored": n, "alive": alive})

        done = wait_until(stored, timeout_s=60, what="every good label stored")
        assert done.facts == {"stored": len(good), "alive": True}, log_lines(log)[-5:]

        expected = Counter(reason for _, reason in HOSTILE.values())
        dead = stack.read(
            stack.topics.review_labels_dlq,
            lambda letters: Counter(m["reason"] for m in letters) >= expected,
            timeout_s=30,
        )
        assert Counter(m["reason"] for m in dead) == expected
        assert collector.process.poll() is None, log_lines(log)[-5:]
        assert not [line for line in log_lines(log) if "CRITICAL" in line or "fatal" in line]
    finally:
        collector.stop(timeout_s=15)
