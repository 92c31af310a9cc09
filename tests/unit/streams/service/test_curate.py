"""Unit tests for the audit marks of streams.service.curate.Curator.select: every item the audit
draws goes out marked ``audit_drawn`` with the rate in force, whatever reason it goes out under
(before, no request was marked, and a drawn item that was also uncertain went out as uncertain
only); a drawn item goes out even when the budget turns its candidate away; items not drawn are
not marked. Small fakes of the ledger and the budget."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from adapters.review.routing import RoutingPolicy
from adapters.review.window import audit_draw
from models.scorer import ScoreBatch
from streams.service.curate import Curator
from streams.wire.messages import IncomingItem, ReviewRequest

POLICY = RoutingPolicy("v1", 0.5, 0.3, 0.7)
NOW = 1_700_000_000.0


@dataclass
class FakeLedger:
    requested: set[tuple[str, str]] = field(default_factory=set)

    async def already_requested(self, policy_version: str, item_ids: list[str]) -> list[bool]:
        return [(policy_version, i) in self.requested for i in item_ids]

    async def mark_requested(self, policy_version: str, item_ids: list[str]) -> None:
        self.requested.update((policy_version, i) for i in item_ids)


class NoBudget:
    """A review budget that is spent: nothing is granted."""

    async def allow(self, policy: str, wanted: int, now: float, reason: str = "all") -> int:
        return 0


def _select(curator: Curator, p: list[float]) -> tuple[list[str], list[ReviewRequest]]:
    ids = [f"item-{i}" for i in range(len(p))]
    items = [IncomingItem(item_id=i, text=f"text {i}") for i in ids]
    probs = np.array([[1 - x, x] for x in p], dtype=np.float32)
    emb = np.eye(len(p), 4, dtype=np.float32) + 0.01
    batch = ScoreBatch(probs, emb, ("benign", "violating"), adapter_id="a1")
    return ids, asyncio.run(curator.select(items, batch, NOW, POLICY))


def test_every_drawn_item_is_marked_whatever_its_reason() -> None:
    curator = Curator(ledger=FakeLedger(), policy=POLICY, audit_rate=1.0)
    ids, requests = _select(curator, [0.5, 0.05, 0.95, 0.4])
    assert sorted(r.item_id for r in requests) == ids  # all drawn at rate 1
    assert all(r.audit_drawn and r.audit_rate == 1.0 for r in requests)
    reasons = {r.item_id: r.reason.value for r in requests}
    assert reasons["item-0"] == "uncertain" and reasons["item-1"] == "audit"


def test_only_drawn_items_are_marked() -> None:
    p = [0.5] * 40 + [0.05] * 40
    curator = Curator(ledger=FakeLedger(), policy=POLICY, audit_rate=0.3, seed=5)
    ids, requests = _select(curator, p)
    drawn = {i for i, d in zip(ids, audit_draw(ids, rate=0.3, seed=5), strict=True) if d}
    assert 0 < len(drawn) < len(ids)
    marked = {r.item_id for r in requests if r.audit_drawn}
    assert marked == drawn
    uncertain = {r.item_id for r in requests if r.reason.value == "uncertain"}
    assert uncertain == set(ids[:40])  # every in-band item still goes out
    assert all(r.audit_rate == 0.3 for r in requests)


def test_a_drawn_item_goes_out_when_the_budget_is_spent() -> None:
    ids = [f"item-{i}" for i in range(30)]
    curator = Curator(
        ledger=FakeLedger(),
        policy=POLICY,
        audit_rate=0.3,
        seed=2,
        budget=NoBudget(),  # type: ignore[arg-type]
    )
    _, requests = _select(curator, [0.5] * 30)
    drawn = {i for i, d in zip(ids, audit_draw(ids, rate=0.3, seed=2), strict=True) if d}
    assert drawn and {r.item_id for r in requests} == drawn
    assert all(r.audit_drawn and r.reason.value == "audit" for r in requests)
