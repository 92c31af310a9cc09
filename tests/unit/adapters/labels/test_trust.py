"""Unit tests for reviewer trust (adapters.labels.trust, issue 11 item 4): kappa's standard error
equals statsmodels' and a bootstrap's; exclusion needs the upper confidence bound below the
threshold; peeling ties never go by reviewer id; fine pairwise kappas protect; a minimum panel;
shown figures are measured against the trusted reviewers only; an empty label is no vote. The
panels are seeded simulations."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from adapters.labels.agreement import (
    PairAgreement,
    ReviewerAgreement,
    agreement_report,
    expert_ceiling,
    kappa_std_error,
    multi_rater,
    pairwise_kappas,
    reviewer_agreement,
    upper_bound,
)
from adapters.labels.consensus import consensus, needs_another_opinion
from adapters.labels.trust import (
    MIN_PANEL,
    excluded_by_peeling,
    first_to_peel,
    mean_pairwise,
    trusted_panel,
)
from adapters.offline.simulation import DEFAULT_PANEL, choose_reviewers, parse_panel
from tests.unit.adapters.labels.test_agreement_stats import ACCURATE, BINARY, _panel

V, B = "violating", "benign"
CAREFUL = ("alice", "bob", "carol")


def _flip(truth: str) -> str:
    return B if truth == V else V


def _demo_panel(seed: int, items: int, prevalence: float = 0.2) -> dict[str, dict[str, str]]:
    """As `borderline demo` labels: the default simulated panel (alice 3%, bob and carol 5%
    errors, randy at random), two reviewers per item, a third when the two disagree."""
    panel = parse_panel(DEFAULT_PANEL)
    rng = np.random.default_rng(seed)
    labels = {}
    for n in range(items):
        truth = V if rng.random() < prevalence else B
        votes = {
            r.reviewer_id: r.answer(truth, rng=rng, labels=(B, V))
            for r in choose_reviewers(panel, count=2, rng=rng)
        }
        if len(set(votes.values())) > 1:
            (third,) = choose_reviewers(panel, count=1, rng=rng, exclude=list(votes))
            votes[third.reviewer_id] = third.answer(truth, rng=rng, labels=(B, V))
        labels[f"item-{n}"] = votes
    return labels


def _demo_run(
    seed: int, items: int, prevalence: float = 0.2
) -> tuple[dict[str, dict[str, str]], int]:
    """As the collector runs the demo: another opinion while the trusted votes disagree (the
    excluded reviewers' votes not counted), exclusion recomputed every 50 labels. The labels,
    and at how many recomputes a careful reviewer was excluded."""
    panel = parse_panel(DEFAULT_PANEL)
    rng = np.random.default_rng(seed)
    labels: dict[str, dict[str, str]] = {}
    count, careful_out, excluded = 0, 0, frozenset[str]()
    for n in range(items):
        truth = V if rng.random() < prevalence else B
        votes = {
            r.reviewer_id: r.answer(truth, rng=rng, labels=(B, V))
            for r in choose_reviewers(panel, count=2, rng=rng)
        }
        while needs_another_opinion(votes, exclude=excluded) and len(votes) < len(panel):
            (more,) = choose_reviewers(panel, count=1, rng=rng, exclude=list(votes))
            votes[more.reviewer_id] = more.answer(truth, rng=rng, labels=(B, V))
        labels[f"item-{n}"] = votes
        if (count + len(votes)) // 50 > count // 50:
            excluded = trusted_panel(labels, min_shared=25).excluded
            careful_out += bool(excluded & set(CAREFUL))
        count += len(votes)
    return labels, careful_out


TEN = {"r01": 0.02, "r02": 0.03, "r03": 0.04, "r04": 0.05, "r05": 0.05}
TEN |= {"r06": 0.06, "r07": 0.07, "r08": 0.08, "r09": 0.10, "r10": 0.5}


def _ten_panel(
    seed: int, *, items: int = 300, per_item: int | None = 4
) -> dict[str, dict[str, str]]:
    """Ten reviewers, mostly good with varied error rates, one at random; a quarter of the
    items violate; `per_item` of them (None: all ten) label each item."""
    rng = np.random.default_rng(seed)
    labels = {}
    for n in range(items):
        truth = V if rng.random() < 0.25 else B
        chosen = list(TEN) if per_item is None else rng.choice(list(TEN), per_item, replace=False)
        labels[f"item-{n}"] = {
            str(r): truth if rng.random() >= TEN[str(r)] else _flip(truth) for r in chosen
        }
    return labels


def _votes_from_table(table: Sequence[Sequence[int]]) -> tuple[list[str], list[str]]:
    left: list[str] = []
    right: list[str] = []
    for i, row in enumerate(table):
        for j, count in enumerate(row):
            left += [f"c{i}"] * count
            right += [f"c{j}"] * count
    return left, right


# --- the interval -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "kappa", "std_error"),
    [  # statsmodels.stats.inter_rater.cohens_kappa(table): .kappa, .std_kappa (0.14.x)
        ([[40, 5], [8, 47]], 0.7389558232931727, 0.06739813048473413),
        ([[20, 3, 1], [4, 30, 2], [0, 5, 35]], 0.7705018359853121, 0.05457134845264126),
        ([[90, 10], [2, 3]], 0.28409090909090906, 0.14468488603004934),
        ([[61, 2], [6, 25]], 0.8009528851244044, 0.06681904868013555),
    ],
)
def test_std_error_equals_statsmodels(
    table: list[list[int]], kappa: float, std_error: float
) -> None:
    left, right = _votes_from_table(table)
    assert cohen_kappa_score(left, right) == pytest.approx(kappa, abs=1e-12)
    assert kappa_std_error(left, right) == pytest.approx(std_error, abs=1e-12)


def test_std_error_is_undefined_with_kappa_and_refuses_unequal_lengths() -> None:
    assert kappa_std_error([V, V], [V, V]) is None
    assert kappa_std_error([], []) is None
    with pytest.raises(ValueError, match="differ in length: 2 vs 1"):
        kappa_std_error([V, B], [V])


@pytest.mark.parametrize("seed", [0, 1])
def test_upper_bound_agrees_with_a_bootstrap_over_items(seed: int) -> None:
    # the analytic one-sided 95% bound against the 95th percentile of a seeded bootstrap
    # (items resampled, scikit-learn's kappa on each draw), for a careful reviewer
    labels = _demo_panel(seed, 400)
    rows = reviewer_agreement(labels, min_compared=25, exclude={"randy"})
    row = next(r for r in rows if r.reviewer == "bob")
    pairs = [
        (votes["bob"], consensus(i, votes, exclude={"bob", "randy"}).label)
        for i, votes in labels.items()
        if "bob" in votes
    ]
    own, others = zip(*[(a, b) for a, b in pairs if b is not None], strict=True)
    assert row.compared == len(own)
    assert row.kappa == pytest.approx(cohen_kappa_score(own, others), abs=1e-12)
    rng = np.random.default_rng(seed)
    own_a, others_a = np.array(own), np.array(others)
    draws = [
        cohen_kappa_score(own_a[idx], others_a[idx])
        for idx in (rng.integers(len(own), size=len(own)) for _ in range(400))
    ]
    assert row.std_error == pytest.approx(float(np.std(draws)), rel=0.2)
    assert row.upper() == pytest.approx(float(np.quantile(draws, 0.95)), abs=0.03)


def test_upper_bound_is_capped_and_checks_its_confidence() -> None:
    assert upper_bound(0.98, 0.05, 0.95) == 1.0
    assert upper_bound(0.7, 0.05, 0.5) == pytest.approx(0.7)
    for bad in (0.4, 1.0):
        with pytest.raises(ValueError, match="confidence must be within"):
            upper_bound(0.7, 0.05, bad)
    assert ReviewerAgreement("a", 5, 5, None, None).upper() is None
    assert PairAgreement("a", "b", 5, None).upper() is None
    assert PairAgreement("a", "b", 50, 0.7, 0.1).upper() == pytest.approx(0.7 + 0.16449, abs=1e-4)


# --- exclusion on the upper bound -------------------------------------------------------------


@pytest.mark.parametrize("per_item", [2, 3])
def test_a_careful_reviewer_is_not_excluded_on_noise(per_item: int) -> None:
    # issue 11: three reviewers with 5% errors and one at random, 200 items: on the point
    # estimate a careful one was excluded in 3 (three labels per item) to 8 (two) of 8 seeded
    # runs on main; the upper bound excludes only the random one, though on the same data a
    # careful one's point estimate is still below 0.8 in some runs
    runs = [_panel(seed, items=200, categories=BINARY, per_item=per_item) for seed in range(8)]
    point_below = 0
    for labels in runs:
        trust = trusted_panel(labels)
        assert trust.excluded == {"random"}
        rows = {r.reviewer: r for r in trust.reviewers}
        assert all(rows[a].upper() >= 0.8 for a in ACCURATE)  # type: ignore[operator]
        point_below += any((rows[a].kappa or 1.0) < 0.8 for a in ACCURATE)
    assert point_below >= 2


def test_the_demo_panel_keeps_its_careful_reviewers_and_shows_them_as_such() -> None:
    # issue 11: in `borderline demo --items 500` bob (5% errors) was excluded and the shown
    # figures (alice 0.589, bob 0.479, carol 0.627) held randy's votes in the consensus
    for seed in range(4):
        labels, careful_out = _demo_run(seed, 500)
        assert careful_out == 0  # at no recompute along the way
        trust = trusted_panel(labels, min_shared=25)
        assert trust.excluded == {"randy"} and not trust.short
        shown = {r.reviewer: r.kappa for r in trust.reviewers}
        assert all(shown[c] is not None and shown[c] >= 0.75 for c in CAREFUL), shown
        assert shown["randy"] is not None and shown["randy"] < 0.3
        assert trust.reviewers == reviewer_agreement(labels, min_compared=25, exclude={"randy"})


def test_shown_figures_with_the_random_reviewer_in_the_consensus_are_lower() -> None:
    labels, _ = _demo_run(0, 500)
    with_randy = {r.reviewer: r.kappa for r in reviewer_agreement(labels, min_compared=25)}
    trust = {r.reviewer: r.kappa for r in trusted_panel(labels, min_shared=25).reviewers}
    assert all(trust[c] > with_randy[c] + 0.1 for c in CAREFUL), (trust, with_randy)  # type: ignore[operator]


def test_a_ten_reviewer_panel_keeps_its_good_reviewers() -> None:
    # issue 11: on ten raters peeling left 3 of 10 (here: seed 3, four labels per item, the
    # point estimate peeled r03-r10); now only the random one, and r09 (10% errors: kappa
    # about 0.75 at this violating share) where every item carries all ten labels
    for seed in range(4):
        for per_item in (4, 3):
            assert excluded_by_peeling(_ten_panel(seed, per_item=per_item), min_shared=25) == {
                "r10"
            }
        assert {"r10"} <= excluded_by_peeling(_ten_panel(seed, per_item=None)) <= {"r09", "r10"}


def test_a_reviewer_well_below_is_still_excluded() -> None:
    # the bound is no amnesty: 20% errors (kappa about 0.6) on 300 items goes
    rng = np.random.default_rng(0)
    labels = {}
    for n in range(300):
        truth = V if rng.random() < 0.4 else B
        labels[f"i{n}"] = {
            r: truth if rng.random() >= e else _flip(truth)
            for r, e in (("a", 0.03), ("b", 0.04), ("c", 0.05), ("sloppy", 0.2))
        }
    assert excluded_by_peeling(labels, min_shared=25) == {"sloppy"}


# --- peeling order ----------------------------------------------------------------------------


def test_a_constant_reviewer_goes_and_the_careful_two_stay() -> None:
    # issue 11: two careful reviewers (pairwise about 0.85) and one who always answers
    # "violating": all three scored 0.0 and the careful two were excluded by id order
    rng = np.random.default_rng(3)
    labels = {}
    for n in range(200):
        truth = V if rng.random() < 0.5 else B
        labels[f"i{n}"] = {
            "aaron": truth if rng.random() >= 0.04 else _flip(truth),
            "abby": truth if rng.random() >= 0.04 else _flip(truth),
            "zed": V,
        }
    (pair,) = [p for p in pairwise_kappas(labels) if {p.a, p.b} == {"aaron", "abby"}]
    assert pair.kappa is not None and 0.8 < pair.kappa < 0.9
    start = {r.reviewer: r.kappa for r in reviewer_agreement(labels)}
    assert start == {"aaron": None, "abby": None, "zed": 0.0}  # no evidence on the careful two
    trust = trusted_panel(labels)
    assert trust.excluded == {"zed"}
    assert all(r.kappa is not None and r.kappa > 0.8 for r in trust.reviewers[:2])


def test_peel_order_lowest_bound_then_mean_pairwise_then_all_tied() -> None:
    def row(name: str, kappa: float, se: float) -> ReviewerAgreement:
        return ReviewerAgreement(name, 90, 90, 0.5, kappa=kappa, std_error=se)

    pairs = [PairAgreement("a", "b", 90, 0.85), PairAgreement("a", "c", 90, 0.1)]
    pairs += [PairAgreement("b", "c", 90, 0.0), PairAgreement("c", "d", 5, None)]
    everyone = {"a", "b", "c", "d"}
    rows = [row("a", 0.5, 0.1), row("b", 0.2, 0.1), row("c", 0.5, 0.1), row("d", 0.5, 0.1)]
    assert first_to_peel({"a", "b", "c"}, rows, pairs, everyone) == {"b"}  # lowest bound
    # a, c tie on the bound: c has the lower mean pairwise kappa (0.05 vs 0.475), whatever
    # the ids; d has no defined pair, so no evidence against it, and goes last
    assert first_to_peel({"a", "c", "d"}, rows, pairs, everyone) == {"c"}
    renamed = [PairAgreement("a", "b", 90, 0.0), PairAgreement("a", "c", 90, 0.1)]
    renamed += [PairAgreement("b", "c", 90, 0.85)]
    assert first_to_peel({"a", "c"}, rows, renamed, everyone) == {"a"}
    assert first_to_peel({"a", "d"}, rows, pairs, everyone) == {"a"}
    assert first_to_peel({"d"}, rows, pairs, everyone) == {"d"}
    same = [PairAgreement("a", "c", 90, 0.3)]
    assert first_to_peel({"a", "c"}, rows, same, everyone) == {"a", "c"}  # tied: both
    assert first_to_peel(set(), rows, pairs, everyone) == set()
    assert mean_pairwise(pairs, "a", {"b"}) == pytest.approx(0.85)


def test_two_constant_reviewers_tied_on_everything_go_together() -> None:
    rng = np.random.default_rng(5)
    labels = {}
    for n in range(150):
        truth = V if rng.random() < 0.5 else B
        votes = {r: truth if rng.random() >= 0.03 else _flip(truth) for r in ("a", "b", "c")}
        labels[f"i{n}"] = {**votes, "k1": V, "k2": V}
    assert excluded_by_peeling(labels) == {"k1", "k2"}


def test_fine_pairwise_kappas_keep_a_reviewer_the_consensus_finds_low() -> None:
    # ann labels 40 items with bob and 40 with cy, each pair at kappa 0.6: the 80 pooled
    # items narrow ann's interval below 0.8 (upper about 0.75), while each pair's 40 leave
    # room for 0.8 (upper about 0.81): her pairs are fine, so she is not peeled
    labels = {}
    for partner in ("bob", "cy"):
        left, right = _votes_from_table([[16, 4], [4, 16]])
        for n, (x, y) in enumerate(zip(left, right, strict=True)):
            labels[f"{partner}-{n}"] = {"ann": x, partner: y}
    rows = {r.reviewer: r for r in reviewer_agreement(labels)}
    assert (
        rows["ann"].upper()
        < 0.8
        < min(  # type: ignore[operator]
            p.upper()
            for p in pairwise_kappas(labels)
            if p.kappa is not None  # type: ignore[type-var]
        )
    )
    trust = trusted_panel(labels)
    assert trust.excluded == frozenset() and not trust.short


def test_a_reviewer_peeled_against_a_dragged_consensus_comes_back() -> None:
    # 70 items of the demo's panel: carol, measured against a consensus randy still drags,
    # has the lowest bound and is peeled first; once randy is out, she is fine and returns
    labels = _demo_panel(3, 70)
    first = {r.reviewer: r.upper() for r in reviewer_agreement(labels, min_compared=25)}
    assert min((u, r) for r, u in first.items() if u is not None)[1] == "carol"
    assert first["carol"] < 0.8  # type: ignore[operator]
    assert excluded_by_peeling(labels, min_shared=25) == {"randy"}


# --- the minimum panel ------------------------------------------------------------------------


def test_below_the_minimum_panel_nobody_is_excluded_and_it_says_so() -> None:
    labels = {
        i: {r: v for r, v in votes.items() if r in ("acc1", "random")}
        for i, votes in _panel(0, categories=BINARY).items()
    }
    trust = trusted_panel(labels)
    assert trust.excluded == frozenset() and trust.short and trust.panel == 2
    assert trust.held == {"acc1", "random"}  # both evidently below against each other
    full = _panel(0, categories=BINARY)
    assert trusted_panel(full, min_panel=5).short and not trusted_panel(full, min_panel=5).excluded
    empty = trusted_panel({})
    assert (empty.panel, empty.short, empty.excluded) == (0, False, frozenset())
    with pytest.raises(ValueError, match=f"min_panel must be at least {MIN_PANEL}, got 2"):
        trusted_panel(full, min_panel=2)


def test_peeling_stops_at_the_minimum_with_someone_still_below() -> None:
    # one careful reviewer and two at random: one random goes; the other is still below
    # against the careful one, but two reviewers cannot tell which of them is wrong
    rng = np.random.default_rng(2)
    labels = {}
    for n in range(200):
        truth = V if rng.random() < 0.5 else B
        labels[f"i{n}"] = {
            "care": truth if rng.random() >= 0.03 else _flip(truth),
            "rand1": V if rng.random() < 0.5 else B,
            "rand2": V if rng.random() < 0.5 else B,
        }
    trust = trusted_panel(labels)
    assert len(trust.excluded) == 1 and trust.excluded < {"rand1", "rand2"}
    assert trust.short and trust.held and trust.held <= {"care", "rand1", "rand2"}


def test_a_full_tie_in_a_small_panel_excludes_nobody() -> None:
    # three reviewers in perfect symmetry (every pattern in its three rotations), all below:
    # tied on everything, peeling them all would leave no one
    patterns = [(V, B, B), (B, V, V), (V, V, B), (B, B, V), (V, V, V), (B, B, B)]
    labels = {}
    for n, pattern in enumerate(patterns * 6):
        for shift in range(3):
            rotated = pattern[shift:] + pattern[:shift]
            labels[f"i{n}-{shift}"] = dict(zip(("a", "b", "c"), rotated, strict=True))
    trust = trusted_panel(labels)
    assert trust.excluded == frozenset() and trust.short and trust.held == {"a", "b", "c"}


# --- what is counted --------------------------------------------------------------------------


def test_an_empty_label_is_no_vote() -> None:
    labels = _panel(1, categories=BINARY, per_item=3)
    blanked = {
        i: {**votes, "ghost": "", "acc1": votes.get("acc1", " ")} for i, votes in labels.items()
    }
    assert pairwise_kappas(blanked) == pairwise_kappas(labels)
    assert reviewer_agreement(blanked) == reviewer_agreement(labels)
    assert multi_rater(blanked) == multi_rater(labels)
    assert trusted_panel(blanked).panel == 4
    assert consensus("i", {"ann": V, "bob": "", "cy": ""}).label == V
    assert needs_another_opinion({"ann": ""})  # answered nothing: ask someone
    assert not needs_another_opinion({"ann": V, "bob": ""})


def test_the_report_of_the_trusted_panel() -> None:
    labels = _demo_panel(1, 300)
    report = agreement_report(labels, min_shared=25, exclude={"randy"})
    assert len(report.pairs) == 6  # randy's pairs are still shown
    trusted_pairs = [p.kappa for p in report.pairs if "randy" not in (p.a, p.b) and p.kappa]
    assert report.mean_pairwise_kappa == pytest.approx(np.mean(trusted_pairs))
    assert report.mean_pairwise_kappa == expert_ceiling(labels, {"randy"}, min_shared=25)
    without = {i: {r: v for r, v in votes.items() if r != "randy"} for i, votes in labels.items()}
    assert (report.multi_rater, report.multi_rater_items) == multi_rater(without)
    assert report.reviewers == reviewer_agreement(labels, min_compared=25, exclude={"randy"})
