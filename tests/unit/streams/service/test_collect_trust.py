"""Unit tests for the collector's reviewer-trust recompute (issue 11, item 4), with a small fake of
our label store: it stores the trusted panel's exclusion, the gauge shows each reviewer's kappa
against the trusted reviewers' consensus, and the panel gauges say when the panel is too small to
exclude anyone (the alert's metric)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np
import pytest
from pydantic import ValidationError

from adapters.labels.agreement import reviewer_agreement
from streams.service.collect import Collector
from streams.service.metrics import Metrics
from streams.wire.settings import ReviewSettings
from streams.wire.topics import TopicNames
from tests.unit.streams.service.test_collect import AdmitAll, FakeRoutings, FakeSink

V, B = "violating", "benign"


@dataclass
class TrustStore:
    """The part of `LabelStore` the recompute uses."""

    votes: dict[str, dict[str, str]]
    stored: set[str] | None = None
    cleared_ids: set[str] = field(default_factory=set)

    async def votes_every_policy(self) -> dict[str, dict[str, str]]:
        return self.votes

    async def cleared(self) -> set[str]:
        return self.cleared_ids

    async def set_excluded(self, reviewer_ids: set[str]) -> None:
        self.stored = set(reviewer_ids)


def _votes(reviewers: dict[str, float], items: int = 150) -> dict[str, dict[str, str]]:
    rng = np.random.default_rng(11)
    votes = {}
    for n in range(items):
        truth = V if rng.random() < 0.4 else B
        votes[f"v1/i{n}"] = {
            r: truth if rng.random() >= e else (B if truth == V else V)
            for r, e in reviewers.items()
        }
    return votes


def _recompute(store: TrustStore, **knobs: int) -> tuple[set[str], Metrics]:
    metrics = Metrics()
    collector = Collector(
        store=store,  # type: ignore[arg-type]
        admission=AdmitAll(),
        routings=FakeRoutings(),
        sink=FakeSink(),
        metrics=metrics,
        topics=TopicNames(),
        worker="collector-1",
        min_shared=25,
        **knobs,  # type: ignore[arg-type]
    )
    return asyncio.run(collector.recompute()), metrics


def _gauge(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_recompute_excludes_the_random_reviewer_and_shows_the_trusted_figures() -> None:
    votes = _votes({"alice": 0.03, "bob": 0.05, "carol": 0.05, "randy": 0.5})
    store = TrustStore(votes)
    excluded, metrics = _recompute(store)
    assert excluded == store.stored == {"randy"}
    trusted = reviewer_agreement(votes, min_compared=25, exclude={"randy"})
    for row in trusted:
        shown = _gauge(metrics, "borderline_reviewer_agreement_kappa", reviewer=row.reviewer)
        assert shown == pytest.approx(row.kappa)
    assert _gauge(metrics, "borderline_reviewer_agreement_kappa", reviewer="alice") > 0.85  # type: ignore[operator]
    assert _gauge(metrics, "borderline_reviewers_excluded") == 1
    assert _gauge(metrics, "borderline_reviewer_panel_reviewers") == 4
    assert _gauge(metrics, "borderline_reviewer_panel_short") == 0


def test_a_panel_below_the_minimum_excludes_nobody_and_raises_the_alert_metric() -> None:
    store = TrustStore(_votes({"alice": 0.03, "randy": 0.5}))
    excluded, metrics = _recompute(store)
    assert excluded == store.stored == set()
    assert _gauge(metrics, "borderline_reviewer_panel_reviewers") == 2
    assert _gauge(metrics, "borderline_reviewer_panel_short") == 1


def test_the_minimum_panel_is_the_collectors_setting() -> None:
    store = TrustStore(_votes({"alice": 0.03, "bob": 0.05, "carol": 0.05, "randy": 0.5}))
    excluded, metrics = _recompute(store, min_panel=5)
    assert excluded == set()
    assert _gauge(metrics, "borderline_reviewer_panel_short") == 1


def test_the_settings_refuse_a_minimum_panel_of_two_and_a_certain_bound() -> None:
    assert (ReviewSettings().min_panel, ReviewSettings().trust_confidence) == (3, 0.95)
    for bad in ({"min_panel": 2}, {"trust_confidence": 1.0}, {"trust_confidence": 0.4}):
        with pytest.raises(ValidationError):
            ReviewSettings(**bad)  # type: ignore[arg-type]
