"""The curator's requests say how many opinions they want (issue 11, item 5): two for audit
draws and the seeded overlap sample, one for the rest."""

from __future__ import annotations

from adapters.review.opinions import in_overlap_sample
from streams.service.curate import Curator
from tests.unit.streams.service.test_curate import POLICY, FakeLedger, _select


def test_audit_draws_ask_for_two_and_the_rest_for_one() -> None:
    curator = Curator(ledger=FakeLedger(), policy=POLICY, audit_rate=0.3, seed=5, overlap_rate=0.0)
    _ids, requests = _select(curator, [0.5] * 40 + [0.05] * 40)
    assert {r.opinions for r in requests} == {1, 2}
    assert all(r.opinions == (2 if r.audit_drawn else 1) for r in requests)


def test_the_overlap_sample_asks_for_two() -> None:
    curator = Curator(ledger=FakeLedger(), policy=POLICY, audit_rate=0.0, seed=5, overlap_rate=0.5)
    ids, requests = _select(curator, [0.5] * 40)
    assert len(requests) == len(ids)
    sampled = {i for i in ids if in_overlap_sample(i, rate=0.5, seed=5)}
    assert 0 < len(sampled) < len(ids)
    assert {r.item_id for r in requests if r.opinions == 2} == sampled
