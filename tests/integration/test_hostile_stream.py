"""Hostile input through a real worker on the real broker: 1,000+ messages of 30+ kinds, the three
that used to crash-loop every worker among them (10,000-deep JSON, a lone surrogate escape, an
item of 800 KB). Every message is either decided or dead-lettered with its reason and its original
bytes (or their prefix, size and sha256); the worker never exits; nothing is dropped silently."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections import Counter
from typing import Any

import pytest

from streams.bench.hostile import DECIDED, KINDS, hostile_messages
from streams.demo.replay import replay_raw
from streams.service.reader import read_topic

from .conftest import Stack

pytestmark = pytest.mark.integration

PER_KIND = 30


def _messages() -> list[tuple[str, bytes, bytes]]:
    """(kind, key, value) for every message; item ids are unique across kinds."""
    return hostile_messages(PER_KIND)


def _whole_sha(letter: dict[str, Any]) -> str:
    original = base64.b64decode(letter["value_b64"])
    if letter.get("value_truncated"):
        return str(letter["value_sha256"])
    return hashlib.sha256(original).hexdigest()


def test_a_thousand_hostile_messages_cost_dead_letters_never_the_worker(stack: Stack) -> None:
    assert len(KINDS) >= 25
    worker = stack.start_worker("hostile", max_text_bytes=4000)
    messages = _messages()
    assert len(messages) >= 1000
    expected_dead = Counter(
        hashlib.sha256(v).hexdigest() for kind, _, v in messages if KINDS[kind][1] != DECIDED
    )
    expected_reason = {
        hashlib.sha256(v).hexdigest(): KINDS[kind][1]
        for kind, _, v in messages
        if KINDS[kind][1] != DECIDED
    }
    decided_ids = {json.loads(v)["item_id"] for kind, _, v in messages if KINDS[kind][1] == DECIDED}
    asyncio.run(
        replay_raw(stack.bootstrap_servers, stack.topics.items, [(k, v) for _, k, v in messages])
    )

    def dead_complete(letters: list[dict[str, Any]]) -> bool:
        seen = Counter(_whole_sha(m) for m in letters)
        return all(seen[sha] >= n for sha, n in expected_dead.items())

    dead = asyncio.run(
        read_topic(
            stack.bootstrap_servers, stack.topics.items_dlq, until=dead_complete, timeout_s=240
        )
    )
    decisions = asyncio.run(
        read_topic(
            stack.bootstrap_servers,
            stack.topics.decisions,
            until=lambda msgs: decided_ids <= {m["item_id"] for m in msgs},
            timeout_s=120,
        )
    )

    seen = Counter(_whole_sha(m) for m in dead)
    missing = {sha: n - seen[sha] for sha, n in expected_dead.items() if seen[sha] < n}
    assert not missing, (
        f"{sum(missing.values())} hostile messages neither decided nor dead-lettered"
    )
    unexpected = [
        (m["reason"], m["detail"][:200]) for m in dead if _whole_sha(m) not in expected_reason
    ]
    assert not unexpected, f"dead-lettered though they should be decided: {unexpected[:5]}"
    for letter in dead:
        sha = _whole_sha(letter)
        assert letter["reason"] == expected_reason[sha], (letter["reason"], letter["detail"])
        assert letter["source_topic"] == stack.topics.items
        assert letter["offset"] is not None and letter["detail"]
        assert len(json.dumps(letter)) < 1_000_000  # fits the broker's limit
    assert decided_ids <= {d["item_id"] for d in decisions}
    # at-least-once allows a redelivered duplicate after a rebalance, not a flood of them
    assert len(dead) <= 1.02 * sum(expected_dead.values())

    assert worker.process.poll() is None, "the worker exited"
    log = worker.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
