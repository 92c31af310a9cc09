"""Unit tests for the parts of `borderline bench stream` that decide what is measured: the items
(distinct after the decision cache's normalisation, within the worker's size limit), the repeated
stream of ``--repeat-share`` (exactly that share repeats an earlier text, ids kept), the
targets read from the figures, and the latency split read from the decisions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adapters.labels.dataset import LabeledItem
from streams.bench.stream import _targets, bench_items, cached_share, latency_parts, repeated_items
from streams.service.decision_cache import normalise
from streams.wire.settings import Settings

ITEMS = [LabeledItem(f"i{k}", f"Subject: offer {k}\n\nbody {k}", k % 2) for k in range(40)]


def test_repeats_are_exactly_the_share_and_each_repeats_an_earlier_text() -> None:
    out = repeated_items(ITEMS, 0.5, seed=3)
    assert [i.item_id for i in out] == [i.item_id for i in ITEMS]
    seen: set[str] = set()
    repeats = 0
    for item in out:
        if item.text in seen:
            repeats += 1
            assert item.text != ITEMS[int(item.item_id[1:])].text
        seen.add(item.text)
    assert repeats == 20
    assert out[0] == ITEMS[0]  # the first item cannot repeat anything
    assert repeated_items(ITEMS, 0.5, seed=3) == out  # the seed decides
    assert repeated_items(ITEMS, 0.0, seed=3) == ITEMS
    with pytest.raises(ValueError, match="repeat share must be in"):
        repeated_items(ITEMS, 1.0, seed=3)


def test_bench_items_are_distinct_after_normalisation_and_fit_the_size_limit(
    tmp_path: Path,
) -> None:
    rows = [
        {"id": "a", "label": 0, "text": "Buy  NOW"},
        {"id": "b", "label": 0, "text": "buy now"},  # the same creative as a
        {"id": "c", "label": 1, "text": "x" * 500},  # over the limit below
        *({"id": f"n{k}", "label": 1, "text": f"note {k}"} for k in range(10)),
    ]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = Settings.model_validate({"worker": {"max_text_bytes": 100}})
    chosen = bench_items(settings, 12, seed=0, corpus=corpus)
    texts = [normalise(i.text) for i in chosen]
    assert len(texts) == len(set(texts)) == 11
    assert all(len(i.text) <= 100 for i in chosen)
    assert len(bench_items(settings, 4, seed=0, corpus=corpus)) == 4


def test_targets_are_the_issues_and_the_repeat_target_only_when_measured() -> None:
    figures = {
        "ratio": 0.96,
        "speedup_vs_naive": 5.9,
        "ratio_vs_plain_consumer": 0.95,
        "p99_latency_s": 0.151,
        "worker_rss_mb": 399.0,
    }
    assert _targets(figures) == {
        "ratio>=0.95": True,
        "speedup_vs_naive>=6": False,
        "ratio_vs_plain_consumer>=0.95": True,
        "p99<=0.15s": False,
        "worker_rss_mb<=400": True,
    }
    assert _targets({**figures, "repeat_speedup": 1.8})["repeat_speedup>=1.8"] is True


def _decision(
    latency: float, scoring: float, worker: str, at: float, cached: bool = False
) -> dict[str, Any]:
    return {
        "latency_s": latency,
        "scoring_s": scoring,
        "worker": worker,
        "decided_at": at,
        "cached": cached,
    }


def test_latency_is_split_into_the_batchs_model_time_and_the_time_before_it() -> None:
    """Three batches: two items of worker a at t=1 (0.3 s, 0.2 of it the model), one of worker b
    at the same instant (its own batch), 97 single items of a later."""
    decided = [_decision(0.3, 0.2, "a", 1.0), _decision(0.5, 0.2, "a", 1.0)]
    decided += [_decision(0.9, 0.1, "b", 1.0)]
    decided += [_decision(0.1, 0.05, "a", 2.0 + k, cached=k < 10) for k in range(97)]
    parts = latency_parts(decided)
    assert parts["scoring_p50_s"] == 0.05 and parts["scoring_p99_s"] == pytest.approx(0.2)
    assert parts["before_scoring_p50_s"] == 0.05
    assert parts["before_scoring_p99_s"] == pytest.approx(0.3, abs=0.01)  # b: 0.8 is the max
    assert parts["batch_items_p50"] == 1 and parts["batch_items_max"] == 2
    assert cached_share(decided) == 0.1
