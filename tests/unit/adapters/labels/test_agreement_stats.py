"""Unit tests for the expert-agreement statistics in adapters.agreement: pairwise kappas equal
scikit-learn's, the panel figure equals the krippendorff package's, every undefined case is None
on purpose, an unreliable reviewer is found, and the train/eval split never moves an item."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import combinations

import krippendorff
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from adapters.labels.agreement import (
    AgreementReport,
    ReviewerAgreement,
    agreement_report,
    excluded_reviewers,
    multi_rater,
    pairwise_kappas,
    reviewer_agreement,
)
from adapters.labels.consensus import Consensus, consensus, needs_another_opinion, split_of
from adapters.labels.trust import excluded_by_peeling

BINARY = ("violating", "benign")
THREE = ("violating", "borderline", "benign")
ACCURATE = ("acc1", "acc2", "acc3")


def _panel(
    seed: int,
    *,
    items: int = 200,
    categories: Sequence[str] = BINARY,
    error: float = 0.05,
    per_item: int | None = None,
) -> dict[str, dict[str, str]]:
    """Three accurate reviewers (each label wrong with probability `error`, a different category
    chosen uniformly) and one reviewer labelling uniformly at random. `per_item` reviewers,
    drawn at random, label each item; None: all four label every item."""
    rng = np.random.default_rng(seed)
    reviewers = [*ACCURATE, "random"]
    labels: dict[str, dict[str, str]] = {}
    for n in range(items):
        truth = categories[int(rng.integers(len(categories)))]
        chosen = reviewers if per_item is None else rng.choice(reviewers, per_item, replace=False)
        votes = {}
        for reviewer in map(str, chosen):
            if reviewer == "random":
                votes[reviewer] = categories[int(rng.integers(len(categories)))]
            elif rng.random() < error:
                wrong = [c for c in categories if c != truth]
                votes[reviewer] = wrong[int(rng.integers(len(wrong)))]
            else:
                votes[reviewer] = truth
        labels[f"item-{n}"] = votes
    return labels


# --- pairwise ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "categories"), [(0, BINARY), (1, THREE), (2, THREE)])
def test_pairwise_equals_sklearn_on_shared_items(seed: int, categories: Sequence[str]) -> None:
    labels = _panel(seed, categories=categories, per_item=3)
    pairs = pairwise_kappas(labels)
    assert [(p.a, p.b) for p in pairs] == list(combinations(sorted([*ACCURATE, "random"]), 2))
    for pair in pairs:
        shared = [v for v in labels.values() if pair.a in v and pair.b in v]
        assert pair.shared_items == len(shared) > 50
        expected = cohen_kappa_score([v[pair.a] for v in shared], [v[pair.b] for v in shared])
        assert pair.kappa == pytest.approx(expected, abs=1e-12)
    accurate = [p.kappa for p in pairs if "random" not in (p.a, p.b)]
    assert all(k is not None and k > 0.7 for k in accurate)  # real, non-trivial figures


def test_pairwise_one_label_only_is_undefined() -> None:
    labels = {f"i{n}": {"ann": "benign", "bob": "benign"} for n in range(30)}
    (pair,) = pairwise_kappas(labels)
    assert (pair.shared_items, pair.kappa) == (30, None)  # sklearn would say nan here


def test_pairwise_no_overlap_is_undefined() -> None:
    labels = {f"a{n}": {"ann": BINARY[n % 2]} for n in range(20)}
    labels.update({f"b{n}": {"bob": BINARY[n % 2]} for n in range(20)})
    (pair,) = pairwise_kappas(labels, min_shared=0)
    assert (pair.a, pair.b, pair.shared_items, pair.kappa) == ("ann", "bob", 0, None)


def test_pairwise_below_min_shared_is_undefined() -> None:
    labels = {f"i{n}": {"ann": BINARY[n % 2], "bob": BINARY[n % 2]} for n in range(9)}
    assert pairwise_kappas(labels)[0].kappa is None  # 9 shared < 10
    assert pairwise_kappas(labels, min_shared=9)[0].kappa == pytest.approx(1.0)


def test_pairwise_one_constant_reviewer_is_defined() -> None:
    labels = {f"i{n}": {"ann": "benign", "bob": BINARY[n % 2]} for n in range(20)}
    (pair,) = pairwise_kappas(labels)
    assert pair.kappa == pytest.approx(0.0)  # defined: chance-level, not "undefined"


# --- multi-rater ------------------------------------------------------------------------------

# Krippendorff's worked example (the krippendorff package documents alpha = 0.691358 for it):
# three coders, fifteen units, missing ratings as NaN.
_TABLE = [
    [np.nan, np.nan, np.nan, np.nan, np.nan, 3, 4, 1, 2, 1, 1, 3, 3, np.nan, 3],
    [1, np.nan, 2, 1, 3, 3, 4, 3, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan],
    [np.nan, np.nan, 2, 1, 3, 4, 4, np.nan, 2, 1, 1, 3, 3, np.nan, 4],
]
_NAMES = {1: "benign", 2: "spam", 3: "harassment", 4: "violating"}


def _table_labels() -> dict[str, dict[str, str]]:
    labels: dict[str, dict[str, str]] = {}
    for coder, row in enumerate(_TABLE):
        for unit, value in enumerate(row):
            if not np.isnan(value):
                labels.setdefault(f"u{unit}", {})[f"c{coder}"] = _NAMES[int(value)]
    return labels


def test_multi_rater_equals_krippendorff_on_hand_built_table() -> None:
    value, items = multi_rater(_table_labels())
    expected = krippendorff.alpha(reliability_data=_TABLE, level_of_measurement="nominal")
    assert value == pytest.approx(expected, abs=1e-12)
    assert value == pytest.approx(0.691358, abs=1e-6)
    assert items == 12  # u1 has one rating; u2 and u14 none


@pytest.mark.parametrize("seed", [0, 1])
def test_multi_rater_equals_krippendorff_on_random_panel(seed: int) -> None:
    labels = _panel(seed, categories=THREE, per_item=2)
    reviewers = sorted({r for votes in labels.values() for r in votes})
    codes = {c: float(i) for i, c in enumerate(THREE)}
    data = [[codes[v[r]] if r in v else np.nan for v in labels.values()] for r in reviewers]
    value, items = multi_rater(labels)
    assert items == 200
    assert value == pytest.approx(
        krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"), abs=1e-12
    )


@pytest.mark.parametrize(
    "labels",
    [{}, {"i1": {"ann": "benign"}, "i2": {"bob": "violating"}, "i3": {}}],
    ids=["empty", "all-single"],
)
def test_multi_rater_without_two_labels_on_any_item_is_undefined(
    labels: dict[str, dict[str, str]],
) -> None:
    assert multi_rater(labels) == (None, 0)


def test_multi_rater_one_label_only_is_undefined() -> None:
    labels = {f"i{n}": {"ann": "benign", "bob": "benign", "cy": "benign"} for n in range(5)}
    labels["lone"] = {"ann": "violating"}  # a second label, but on no pairable item
    assert multi_rater(labels) == (None, 5)


# --- consensus and routing --------------------------------------------------------------------


def test_consensus_majority() -> None:
    votes = {"ann": "violating", "bob": "violating", "cy": "benign"}
    assert consensus("i1", votes) == Consensus("i1", "violating", 3, 2, False)
    assert consensus("i1", {"ann": "benign"}) == Consensus("i1", "benign", 1, 1, True)


@pytest.mark.parametrize(
    "votes",
    [
        {"ann": "violating", "bob": "benign"},
        {"ann": "v", "bob": "v", "cy": "b", "dee": "b"},
        {"ann": "v", "bob": "v", "cy": "b", "dee": "s"},  # a plurality short of half
        {},
    ],
    ids=["tie-2", "tie-4", "plurality", "no-votes"],
)
def test_consensus_without_strict_majority_is_none(votes: dict[str, str]) -> None:
    result = consensus("i1", votes)
    assert (result.label, result.agreeing, result.unanimous) == (None, 0, False)
    assert result.votes == len(votes)


def test_consensus_leaves_excluded_reviewers_out() -> None:
    votes = {"ann": "violating", "bob": "benign", "cy": "benign"}
    assert consensus("i1", votes, exclude={"bob", "cy"}) == Consensus("i1", "violating", 1, 1, True)
    assert consensus("i1", votes, exclude=votes).votes == 0


@pytest.mark.parametrize(
    ("votes", "exclude", "min_votes", "expected"),
    [
        ({"ann": "v", "bob": "b"}, (), 2, True),  # split, no majority
        ({"ann": "v", "bob": "b", "cy": "b"}, (), 2, False),  # clear majority
        ({"ann": "v", "bob": "b", "cy": "b"}, (), 4, True),  # disagreement, too few votes
        ({"ann": "v", "bob": "v"}, (), 4, False),  # agreeing votes are settled
        ({"ann": "v"}, (), 2, False),  # a single vote, nothing against it
        ({"ann": "v", "bob": "b", "cy": "s"}, (), 2, True),  # three-way split
        ({"ann": "v", "bob": "b"}, {"bob"}, 2, False),  # the dissent was excluded
        ({"bob": "b"}, {"bob"}, 2, True),  # only an excluded reviewer looked at it
        ({}, (), 2, False),  # not reviewed yet: routing's call, not "another" opinion
    ],
)
def test_needs_another_opinion(
    votes: dict[str, str], exclude: set[str] | tuple[()], min_votes: int, expected: bool
) -> None:
    assert needs_another_opinion(votes, exclude=exclude, min_votes=min_votes) is expected


def test_needs_another_opinion_rejects_min_votes_below_one() -> None:
    with pytest.raises(ValueError, match="min_votes"):
        needs_another_opinion({"ann": "v"}, min_votes=0)


# --- reviewers against the others -------------------------------------------------------------


@pytest.mark.parametrize(("seed", "per_item"), [(0, None), (3, 3)])
def test_reviewer_agreement_is_kappa_against_the_others_majority(
    seed: int, per_item: int | None
) -> None:
    labels = _panel(seed, categories=THREE, per_item=per_item)
    rows = reviewer_agreement(labels)
    assert [r.reviewer for r in rows] == sorted([*ACCURATE, "random"])
    for row in rows:
        own, ref = [], []
        for votes in labels.values():
            if row.reviewer not in votes:
                continue
            others = Counter(v for r, v in votes.items() if r != row.reviewer)
            top = others.most_common(1)
            if top and 2 * top[0][1] > sum(others.values()):
                own.append(votes[row.reviewer])
                ref.append(top[0][0])
        assert row.labels == sum(row.reviewer in v for v in labels.values())
        assert row.compared == len(own)
        assert row.agreement == pytest.approx(np.mean(np.array(own) == np.array(ref)))
        assert row.kappa == pytest.approx(cohen_kappa_score(own, ref), abs=1e-12)


def test_reviewer_agreement_skips_ties_and_needs_min_compared() -> None:
    votes = {"ann": "violating", "bob": "violating"}
    labels = {f"i{n}": {**votes, "cy": BINARY[n % 2]} for n in range(12)}
    rows = {r.reviewer: r for r in reviewer_agreement(labels, min_compared=10)}
    assert rows["ann"].labels == 12
    assert rows["ann"].compared == 6  # bob and cy split on the other six
    assert (rows["ann"].agreement, rows["ann"].kappa) == (None, None)  # 6 < 10
    assert rows["cy"].compared == 12
    assert rows["cy"].agreement == pytest.approx(0.5)
    # the others' consensus is constant: kappa would be 0 whatever cy did, so no evidence
    # (issue 11: it was 0.0, and with an SE of 0 a careful reviewer was excluded on it)
    assert rows["cy"].kappa is None


def test_reviewer_alone_has_nothing_to_compare() -> None:
    (row,) = reviewer_agreement({f"i{n}": {"ann": BINARY[n % 2]} for n in range(20)})
    assert row == ReviewerAgreement("ann", labels=20, compared=0, agreement=None, kappa=None)


# --- the report and exclusion -----------------------------------------------------------------


def _kappas(report: AgreementReport) -> dict[str, float]:
    kappas = {}
    for row in report.reviewers:
        assert row.kappa is not None, row
        kappas[row.reviewer] = row.kappa
    return kappas


def test_report_collects_the_figures() -> None:
    labels = _panel(4, categories=THREE)
    report = agreement_report(labels)
    assert report.pairs == pairwise_kappas(labels)
    assert report.reviewers == reviewer_agreement(labels)
    assert (report.multi_rater, report.multi_rater_items) == multi_rater(labels)
    defined = [p.kappa for p in report.pairs if p.kappa is not None]
    assert len(defined) == 6
    assert report.mean_pairwise_kappa == pytest.approx(np.mean(defined))


def test_report_of_undefined_pairs_has_no_ceiling() -> None:
    report = agreement_report({f"i{n}": {"ann": "v", "bob": "v"} for n in range(30)})
    assert report.mean_pairwise_kappa is None
    assert (report.multi_rater, report.multi_rater_items) == (None, 30)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_reviewer_is_excluded_and_accurate_ones_are_not(seed: int) -> None:
    # three categories, everyone labels every item: one pass is enough here
    report = agreement_report(_panel(seed, categories=THREE))
    kappas = _kappas(report)
    assert kappas["random"] < 0.3
    assert all(kappas[a] > 0.8 for a in ACCURATE)
    assert excluded_reviewers(report) == {"random"}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_peeling_finds_the_random_reviewer_on_two_labels(seed: int) -> None:
    labels = _panel(seed, categories=BINARY)
    assert excluded_by_peeling(labels) == {"random"}
    kept = {i: {r: v for r, v in votes.items() if r != "random"} for i, votes in labels.items()}
    assert all(k >= 0.8 for k in _kappas(agreement_report(kept)).values())


def test_one_pass_underrates_good_reviewers_beside_a_random_one() -> None:
    # why peeling exists: on two labels the random reviewer's votes drag the consensus that
    # the accurate reviewers are measured against, and their kappas with it, towards 0.8
    labels = _panel(0, categories=BINARY)
    kept = {i: {r: v for r, v in votes.items() if r != "random"} for i, votes in labels.items()}
    before, after = _kappas(agreement_report(labels)), _kappas(agreement_report(kept))
    assert all(after[reviewer] > before[reviewer] + 0.03 for reviewer in ACCURATE)


def test_cleared_reviewers_are_never_excluded() -> None:
    labels = _panel(0, categories=THREE)
    report = agreement_report(labels)
    assert excluded_reviewers(report, cleared={"random"}) == set()
    assert excluded_reviewers(report, threshold=1.01, cleared={"random", *ACCURATE}) == set()
    assert excluded_by_peeling(labels, cleared={"random"}) == set()
    assert excluded_by_peeling(_panel(0, categories=BINARY), cleared={"random"}) <= set(ACCURATE)


def test_too_little_evidence_is_never_excluded() -> None:
    labels = _panel(0, categories=THREE, items=9)  # fewer than min_shared=10 items each
    report = agreement_report(labels)
    assert all(r.kappa is None for r in report.reviewers)
    assert excluded_reviewers(report, threshold=1.01) == set()
    assert excluded_by_peeling(labels, threshold=1.01) == set()
    rows = [ReviewerAgreement("dee", labels=40, compared=40, agreement=1.0, kappa=None)]
    assert excluded_reviewers(AgreementReport([], rows, None, 0, None), threshold=1.01) == set()


# --- the split --------------------------------------------------------------------------------


def test_split_never_changes_for_a_given_id() -> None:
    # fixed forever: changing these values reshuffles train and eval for every stored item
    assert [split_of(f"item-{n}") for n in range(1, 7)] == [
        "train",
        "eval",
        "eval",
        "eval",
        "train",
        "train",
    ]
    assert split_of("00000000-0000-0000-0000-000000000000") == "train"
    assert split_of("a3f9c2") == "train"
    assert split_of("a3f9c2", salt="other") == "eval"


def test_split_shares_about_eval_share() -> None:
    ids = [f"item-{n}" for n in range(10_000)]
    for share in (0.2, 0.4, 0.7):
        evals = sum(split_of(i, eval_share=share) == "eval" for i in ids)
        assert evals / len(ids) == pytest.approx(share, abs=0.02)  # about 4 standard deviations


def test_split_grows_eval_without_moving_it() -> None:
    ids = [f"item-{n}" for n in range(2_000)]
    small = {i for i in ids if split_of(i, eval_share=0.3) == "eval"}
    large = {i for i in ids if split_of(i, eval_share=0.4) == "eval"}
    assert small < large
    assert all(split_of(i, eval_share=0.0) == "train" for i in ids[:200])
    assert all(split_of(i, eval_share=1.0) == "eval" for i in ids[:200])


@pytest.mark.parametrize("share", [-0.1, 1.5, float("nan")])
def test_split_rejects_shares_outside_zero_one(share: float) -> None:
    with pytest.raises(ValueError, match="eval_share"):
        split_of("item-1", eval_share=share)
