"""The decision cache across two real workers sharing a real Redis: creatives scored by one worker
are decided from the cache by the other (and by itself), copies that differ in case, spacing and
tracking parameters included; the cached decisions are full records equal to the scored ones,
and their twins are not sent to review again."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from adapters.labels.dataset import LabeledItem, read_jsonl, sample
from streams.demo.replay import replay_items
from streams.embedded.launcher import WorkerProcess, start_worker

from .conftest import Stack
from .helpers import samples

pytestmark = pytest.mark.integration

# every in-band item is requested (no budget to speak of) and nothing is drawn for audit, so a
# request for a twin could only come from a cache that did not dedupe it
REVIEW = {"labels_per_hour": 1e7, "max_open": 10_000, "audit_rate": 0.0}


def _worker(stack: Stack, name: str) -> WorkerProcess:
    settings = stack.settings(
        review=REVIEW, adapter_cache_dir=str(stack.tmp / f"{name}-cache"), batch_max_size=8
    )
    # on a loaded test machine a 50 ms cut-off would make a shared hit a matter of luck (a write
    # cut off is a miss for the other worker); the cut-off itself is unit-tested
    cache = settings.cache.model_copy(update={"redis_timeout_s": 2.0})
    settings = settings.model_copy(update={"cache": cache})
    process = start_worker(settings, f"{name}-{stack.tag}", stack.tmp / f"{name}.log", wait=False)
    stack.workers.append(process)
    return process


def _variant(text: str, k: int) -> str:
    """A copy of ``text`` the cache must take for the same creative."""
    if k == 0:
        return "  " + text.upper().replace(" ", "   ") + "\n"
    return f"{text}&utm_source=feed{k}&gclid=x{k}"  # the original ends with its link


def _decided(stack: Stack, ids: set[str]) -> dict[str, dict[str, Any]]:
    msgs = stack.read(
        stack.topics.decisions,
        lambda m: ids <= {d["item_id"] for d in m},
        timeout_s=60,
    )
    return {d["item_id"]: d for d in msgs if d["item_id"] in ids}


def _redis_hits(worker: WorkerProcess) -> float:
    return sum(
        v
        for labels, v in samples(worker, "borderline_decision_cache_hits_total")
        if labels.get("tier") == "redis"
    )


def test_two_workers_share_decisions_through_redis(stack: Stack, corpus: Path) -> None:
    a, b = _worker(stack, "a"), _worker(stack, "b")
    a.wait_ready()
    b.wait_ready()
    chosen = sample(read_jsonl(corpus), 40, seed=5)
    # the second half of each original carries a link with its own parameter, kept by the cache
    originals = [
        LabeledItem(f"o{i}", f"{it.text[:400]} https://shop.example/offer?id={i}", it.label)
        for i, it in enumerate(chosen)
    ]
    asyncio.run(replay_items(stack.bootstrap_servers, stack.topics.items, originals))
    first = _decided(stack, {o.item_id for o in originals})
    assert not any(d["cached"] for d in first.values())  # distinct texts: all scored
    assert {d["worker"] for d in first.values()} == {a.worker_id, b.worker_id}

    twins = [
        LabeledItem(f"t{k}-{o.item_id}", _variant(o.text, k), o.label)
        for o in originals
        for k in (0, 1)
    ]
    asyncio.run(replay_items(stack.bootstrap_servers, stack.topics.items, twins))
    second = _decided(stack, {t.item_id for t in twins})
    for twin in twins:
        d, original = second[twin.item_id], first[twin.item_id.split("-", 1)[1]]
        assert d["cached"] is True and d["scoring_s"] == 0.0, twin.item_id
        for field in ("action", "probabilities", "model_version", "adapter_version"):
            assert d[field] == original[field], (twin.item_id, field)
        assert d["policy_version"] == original["policy_version"] and d["latency_s"] is not None
    # each worker decided twins of what the other one scored: those came through Redis
    crossed = {
        d["worker"] for t, d in second.items() if d["worker"] != first[t.split("-", 1)[1]]["worker"]
    }
    assert crossed == {a.worker_id, b.worker_id}
    assert _redis_hits(a) > 0 and _redis_hits(b) > 0

    requests = stack.read_all(stack.topics.review_requests)
    requested = {r["item_id"] for r in requests}
    assert requested & set(first), "no original fell in the review band: pick another seed"
    assert not requested & set(second), "a cached twin was sent to review again"
    skipped = sum(v for w in (a, b) for _, v in samples(w, "borderline_review_twins_skipped_total"))
    assert skipped > 0
