"""Agreement between label sources: Cohen's kappa of the model against experts, and between the
experts themselves (pairwise, each against the others' consensus, and over the whole panel),
each kappa with its large-sample standard error. Kappa is undefined when only one label occurs
in both sources: that returns None, which every caller reads as "not enough evidence" rather
than a library's 0.0 or 1.0. An empty or blank label is no category: it counts as no vote.
Who is excluded from the panel is decided in `adapters.labels.trust`."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Collection, Container, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from statistics import NormalDist

import krippendorff
import numpy as np
from sklearn.metrics import cohen_kappa_score

from adapters.labels.consensus import consensus, counted_votes

__all__ = [
    "AgreementReport",
    "Labels",
    "PairAgreement",
    "ReviewerAgreement",
    "agreement_report",
    "excluded_reviewers",
    "expert_ceiling",
    "kappa",
    "kappa_std_error",
    "multi_rater",
    "pairwise_kappas",
    "reviewer_agreement",
]


Labels = Mapping[str, Mapping[str, str]]


"""Expert labels: item_id -> {reviewer_id: label}. Labels are category names, two or more."""


def upper_bound(value: float, std_error: float, confidence: float) -> float:
    """One-sided upper confidence bound of a kappa under its normal approximation, at most 1.

    >>> round(upper_bound(0.7, 0.05, 0.95), 4), upper_bound(0.98, 0.05, 0.95)
    (0.7822, 1.0)
    """
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence must be within [0.5, 1), got {confidence}")
    return min(1.0, value + NormalDist().inv_cdf(confidence) * std_error)


def kappa(
    a: Sequence[int] | Sequence[str] | np.ndarray,
    b: Sequence[int] | Sequence[str] | np.ndarray,
    sample_weight: Sequence[float] | np.ndarray | None = None,
) -> float | None:
    """Cohen's kappa of two labelings of the same items, or None where it is undefined.

    >>> kappa([0, 1, 1, 0], [0, 1, 0, 0])
    0.5
    >>> kappa([1, 1, 1], [1, 1, 1]) is None
    True
    """
    left, right = np.asarray(a), np.asarray(b)
    if left.shape != right.shape:
        raise ValueError(f"label arrays differ in shape: {left.shape} vs {right.shape}")
    if left.size == 0 or len(set(left.tolist()) | set(right.tolist())) < 2:
        return None
    with warnings.catch_warnings():  # the undefined case is answered below, not warned about
        warnings.simplefilter("ignore")
        value = float(cohen_kappa_score(left, right, sample_weight=sample_weight))
    return None if np.isnan(value) else value


def kappa_std_error(a: Sequence[str], b: Sequence[str]) -> float | None:
    """The large-sample standard error of Cohen's kappa of two labelings, or None where kappa
    is undefined: the non-null variance of Fleiss, Cohen & Everitt (1969), the one statsmodels'
    `cohens_kappa` and SAS report. Written here (about ten lines of arithmetic on the confusion
    table) rather than adding statsmodels and pandas to the runtime for one formula;
    tests/unit/adapters/labels/test_trust.py checks it against a bootstrap over items.

    >>> round(kappa_std_error(list("vvvvvbbbbbvb"), list("vvvvbbbbbbvv")), 4)
    0.2152
    >>> kappa_std_error(list("vv"), list("vv")) is None
    True
    """
    if len(a) != len(b):
        raise ValueError(f"label arrays differ in length: {len(a)} vs {len(b)}")
    codes = {label: index for index, label in enumerate(sorted({*a, *b}))}
    if len(codes) < 2:
        return None
    table = np.zeros((len(codes), len(codes)))
    np.add.at(table, ([codes[x] for x in a], [codes[y] for y in b]), 1.0)
    p = table / len(a)
    rows, cols = p.sum(axis=1), p.sum(axis=0)
    observed, expected = float(np.trace(p)), float(rows @ cols)
    value = (observed - expected) / (1.0 - expected)
    diagonal = np.diag(p) * (1.0 - (rows + cols) * (1.0 - value)) ** 2
    off = p * (cols[:, None] + rows[None, :]) ** 2
    off_diagonal = (1.0 - value) ** 2 * (off.sum() - np.trace(off))
    correction = (value - expected * (1.0 - value)) ** 2
    variance = (diagonal.sum() + off_diagonal - correction) / (len(a) * (1.0 - expected) ** 2)
    return math.sqrt(max(float(variance), 0.0))


@dataclass(frozen=True)
class PairAgreement:
    """Cohen's kappa of two reviewers on the items both labelled (None: undefined or too few),
    with its standard error (`kappa_std_error`; None with kappa)."""

    a: str
    b: str
    shared_items: int
    kappa: float | None
    std_error: float | None = None

    def upper(self, confidence: float = 0.95) -> float | None:
        """The one-sided upper confidence bound of `kappa` (None with it)."""
        if self.kappa is None or self.std_error is None:
            return None
        return upper_bound(self.kappa, self.std_error, confidence)


@dataclass(frozen=True)
class ReviewerAgreement:
    """One reviewer against the majority of the OTHER reviewers (leave-one-out).

    `labels` counts every item the reviewer labelled; `compared` the items where the others
    reached a strict majority. `agreement` (raw share) and `kappa` are None when `compared` is
    below the minimum asked for; `kappa` is also None where the others' consensus shows one
    label only (kappa against it is 0 or undefined whatever the reviewer does: no evidence).
    `std_error` is kappa's (`kappa_std_error`), None with it.
    """

    reviewer: str
    labels: int
    compared: int
    agreement: float | None
    kappa: float | None
    std_error: float | None = None

    def upper(self, confidence: float = 0.95) -> float | None:
        """The one-sided upper confidence bound of `kappa` (None with it).

        >>> ReviewerAgreement("cy", 200, 200, 0.9, kappa=0.78, std_error=0.04).upper() > 0.8
        True
        """
        if self.kappa is None or self.std_error is None:
            return None
        return upper_bound(self.kappa, self.std_error, confidence)


@dataclass(frozen=True)
class AgreementReport:
    """The panel's agreement.

    `multi_rater` is Krippendorff's alpha (nominal, from the `krippendorff` package) over the
    items with at least two labels, `multi_rater_items` of them; None when undefined (no such
    item, or one label only among them). `mean_pairwise_kappa` is the unweighted mean of the
    defined pairwise kappas (Light's kappa): the experts' own agreement, the ceiling for the
    model gate; None when no pair has a defined kappa.
    """

    pairs: list[PairAgreement]
    reviewers: list[ReviewerAgreement]
    multi_rater: float | None
    multi_rater_items: int
    mean_pairwise_kappa: float | None


def _reviewers(labels: Labels) -> list[str]:
    return sorted({reviewer for votes in labels.values() for reviewer in votes})


def _without(labels: Labels, reviewers: Container[str] = ()) -> dict[str, dict[str, str]]:
    # the votes of everyone not in `reviewers`, each a category: a blank label is no vote
    return {item_id: counted_votes(votes, reviewers) for item_id, votes in labels.items()}


def _coded_kappa(left: Sequence[str], right: Sequence[str]) -> tuple[float | None, float | None]:
    # category names -> integer codes for `kappa`; Cohen's kappa does not depend on the coding
    codes = {label: index for index, label in enumerate(sorted({*left, *right}))}
    value = kappa([codes[label] for label in left], [codes[label] for label in right])
    return value, (None if value is None else kappa_std_error(left, right))


def pairwise_kappas(labels: Labels, *, min_shared: int = 10) -> list[PairAgreement]:
    """Cohen's kappa (scikit-learn, via `kappa`) of every pair of reviewers on their shared items.

    Every pair of reviewers who labelled anything is listed, sorted by (a, b) with a < b; kappa
    is None when they share fewer than `min_shared` items (no overlap included) or when kappa
    is undefined on what they share (one label only).

    >>> votes = {f"i{n}": {"ann": "v", "bob": "v" if n < 6 else "b"} for n in range(10)}
    >>> votes.update({f"j{n}": {"ann": "b", "bob": "b"} for n in range(10)})
    >>> [(p.a, p.b, p.shared_items, round(p.kappa, 2)) for p in pairwise_kappas(votes)]
    [('ann', 'bob', 20, 0.6)]
    >>> pairwise_kappas(votes, min_shared=21)[0].kappa is None
    True
    """
    labels = _without(labels)
    pairs = []
    for a, b in combinations(_reviewers(labels), 2):
        shared = [(votes[a], votes[b]) for votes in labels.values() if a in votes and b in votes]
        value, error = None, None
        if shared and len(shared) >= min_shared:
            left, right = zip(*shared, strict=True)
            value, error = _coded_kappa(left, right)
        pairs.append(PairAgreement(a, b, shared_items=len(shared), kappa=value, std_error=error))
    return pairs


def reviewer_agreement(
    labels: Labels, *, min_compared: int = 10, exclude: Collection[str] = ()
) -> list[ReviewerAgreement]:
    """Each reviewer against the strict-majority consensus of the other reviewers not in
    `exclude`, per item: every reviewer, an excluded one too, is measured against the votes
    of the trusted others only.

    Items where those others have no strict majority (a tie, or no other vote) are skipped.
    With fewer than `min_compared` compared items, `agreement` and `kappa` are None: not
    enough evidence. Sorted by reviewer.

    >>> votes = {f"i{n}": {"ann": "v", "bob": "v", "cy": "v" if n < 6 else "b"} for n in range(10)}
    >>> votes.update({f"j{n}": {"ann": "b", "bob": "b", "cy": "b"} for n in range(10)})
    >>> rows = reviewer_agreement(votes)
    >>> [(r.reviewer, r.compared, r.agreement, round(r.kappa, 2)) for r in rows]
    [('ann', 16, 1.0, 1.0), ('bob', 16, 1.0, 1.0), ('cy', 20, 0.8, 0.6)]

    (ann's four items where bob and cy split are ties among the others: skipped.) Without cy
    in the consensus, ann is measured against bob alone:

    >>> [(r.reviewer, r.compared) for r in reviewer_agreement(votes, exclude={"cy"})]
    [('ann', 20), ('bob', 20), ('cy', 20)]
    """
    labels = _without(labels)
    report = []
    for reviewer in _reviewers(labels):
        own: list[str] = []
        others: list[str] = []
        total = 0
        for item_id, votes in labels.items():
            if reviewer not in votes:
                continue
            total += 1
            label = consensus(item_id, votes, exclude={reviewer, *exclude}).label
            if label is not None:
                own.append(votes[reviewer])
                others.append(label)
        enough = bool(own) and len(own) >= min_compared
        # against a consensus of one label only, kappa is 0 whatever the reviewer does (or
        # undefined): it says nothing about them, so it is no evidence either way
        informative = enough and len(set(others)) > 1
        value, error = _coded_kappa(own, others) if informative else (None, None)
        report.append(
            ReviewerAgreement(
                reviewer=reviewer,
                labels=total,
                compared=len(own),
                agreement=(
                    sum(x == y for x, y in zip(own, others, strict=True)) / len(own)
                    if enough
                    else None
                ),
                kappa=value,
                std_error=error,
            )
        )
    return report


def multi_rater(labels: Labels) -> tuple[float | None, int]:
    """Krippendorff's alpha (nominal) over the items with at least two labels, and their number.

    Alpha, from the `krippendorff` package, takes any number of reviewers per item, which is
    how review works here (Fleiss' kappa wants the same number on every item). None when no
    item has two labels, or when one label only occurs among those items (alpha is 0/0 there).

    >>> votes = {"i1": {"ann": "v", "bob": "v"}, "i2": {"ann": "b", "bob": "b", "cy": "b"},
    ...          "i3": {"ann": "v", "cy": "b"}, "i4": {"bob": "v"}}
    >>> value, items = multi_rater(votes)
    >>> round(value, 3), items
    (0.5, 3)
    >>> multi_rater({"i1": {"ann": "v", "bob": "v"}})
    (None, 1)
    """
    labels = _without(labels)
    rated = [Counter(votes.values()) for votes in labels.values() if len(votes) >= 2]
    categories = sorted({label for counts in rated for label in counts})
    if len(categories) < 2:
        return None, len(rated)
    # value counts (items x categories) rather than reliability data: no NaN-as-"nan" strings
    table = np.array([[counts[label] for label in categories] for counts in rated])
    value = float(krippendorff.alpha(value_counts=table, level_of_measurement="nominal"))
    return (None if math.isnan(value) else value), len(rated)


def agreement_report(
    labels: Labels, *, min_shared: int = 10, exclude: Collection[str] = ()
) -> AgreementReport:
    """Pairwise kappas, each reviewer against the trusted others, and the panel's alpha.

    `min_shared` is both the pairwise minimum of shared items and the per-reviewer minimum of
    compared items. Reviewers in `exclude` keep their rows and pairs, but their votes are in
    no one's consensus, nor in the alpha or the mean pairwise kappa (the ceiling): the report
    of the trusted panel, each reviewer measured against it.

    >>> report = agreement_report({"i1": {"ann": "v", "bob": "b"}})
    >>> report.pairs[0].kappa is None, report.multi_rater_items, report.mean_pairwise_kappa
    (True, 1, None)
    """
    pairs = pairwise_kappas(labels, min_shared=min_shared)
    alpha, items = multi_rater(_without(labels, exclude))
    defined = [
        pair.kappa
        for pair in pairs
        if pair.kappa is not None and pair.a not in exclude and pair.b not in exclude
    ]
    return AgreementReport(
        pairs=pairs,
        reviewers=reviewer_agreement(labels, min_compared=min_shared, exclude=exclude),
        multi_rater=alpha,
        multi_rater_items=items,
        mean_pairwise_kappa=float(np.mean(defined)) if defined else None,
    )


def excluded_reviewers(
    report: AgreementReport,
    *,
    threshold: float = 0.8,
    cleared: Container[str] = (),
    confidence: float = 0.95,
) -> set[str]:
    """Reviewers whose kappa against the others' consensus is evidently below `threshold`:
    its one-sided upper confidence bound at `confidence` (`ReviewerAgreement.upper`) is below.

    A reviewer a person has `cleared` is never excluded. Nor is one whose kappa is None: too
    few compared items is not enough evidence, and an undefined kappa on enough items means
    one label only on both sides, i.e. perfect raw agreement, so raw agreement is no fallback.

    >>> low = ReviewerAgreement("cy", labels=50, compared=50, agreement=0.7, kappa=0.4,
    ...                         std_error=0.1)
    >>> near = ReviewerAgreement("ed", labels=50, compared=50, agreement=0.9, kappa=0.75,
    ...                          std_error=0.1)
    >>> few = ReviewerAgreement("dee", labels=3, compared=3, agreement=None, kappa=None)
    >>> report = AgreementReport([], [low, near, few], None, 0, None)
    >>> excluded_reviewers(report), excluded_reviewers(report, cleared={"cy"})
    ({'cy'}, set())

    One pass: each reviewer is measured against a consensus that still holds every other
    reviewer, an unreliable one included, which pulls the good reviewers' kappas down (three
    reviewers with 5% errors on two labels, plus one labelling at random, land near 0.81).
    `adapters.labels.trust.trusted_panel` measures again without the worst one.
    """
    bounds = {row.reviewer: row.upper(confidence) for row in report.reviewers}
    return {
        reviewer
        for reviewer, upper in bounds.items()
        if reviewer not in cleared and upper is not None and upper < threshold
    }


def expert_ceiling(
    labels: Labels, excluded: Container[str] = (), *, min_shared: int = 10
) -> float | None:
    """The experts' own agreement, the ceiling for the model gate: the mean pairwise kappa of
    the reviewers not in `excluded`; None when no pair has a defined kappa.

    >>> votes = {f"i{n}": {"ann": "v", "bob": "v", "cy": "b"} for n in range(10)}
    >>> votes.update({f"j{n}": {"ann": "b", "bob": "b", "cy": "v"} for n in range(10)})
    >>> expert_ceiling(votes, {"cy"})
    1.0
    """
    pairs = pairwise_kappas(_without(labels, excluded), min_shared=min_shared)
    defined = [pair.kappa for pair in pairs if pair.kappa is not None]
    return float(np.mean(defined)) if defined else None
