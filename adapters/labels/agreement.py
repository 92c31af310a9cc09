"""Agreement between label sources: Cohen's kappa of the model against experts, and between the
experts themselves (pairwise, each against the others' consensus, and over the whole panel).
Kappa is undefined when only one label occurs in both sources: that returns None, which every
caller reads as "not enough evidence" rather than a library's 0.0 or 1.0."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

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
    "excluded_by_peeling",
    "excluded_reviewers",
    "expert_ceiling",
    "kappa",
    "multi_rater",
    "pairwise_kappas",
    "reviewer_agreement",
]


Labels = Mapping[str, Mapping[str, str]]


"""Expert labels: item_id -> {reviewer_id: label}. Labels are category names, two or more."""


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


@dataclass(frozen=True)
class PairAgreement:
    """Cohen's kappa of two reviewers on the items both labelled (None: undefined or too few)."""

    a: str
    b: str
    shared_items: int
    kappa: float | None


@dataclass(frozen=True)
class ReviewerAgreement:
    """One reviewer against the majority of the OTHER reviewers (leave-one-out).

    `labels` counts every item the reviewer labelled; `compared` the items where the others
    reached a strict majority. `agreement` (raw share) and `kappa` are None when `compared` is
    below the minimum asked for; `kappa` is also None where it is undefined (one label only).
    """

    reviewer: str
    labels: int
    compared: int
    agreement: float | None
    kappa: float | None


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


def _coded_kappa(left: Sequence[str], right: Sequence[str]) -> float | None:
    # category names -> integer codes for `kappa`; Cohen's kappa does not depend on the coding
    codes = {label: index for index, label in enumerate(sorted({*left, *right}))}
    return kappa([codes[label] for label in left], [codes[label] for label in right])


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
    pairs = []
    for a, b in combinations(_reviewers(labels), 2):
        shared = [(votes[a], votes[b]) for votes in labels.values() if a in votes and b in votes]
        value = None
        if shared and len(shared) >= min_shared:
            left, right = zip(*shared, strict=True)
            value = _coded_kappa(left, right)
        pairs.append(PairAgreement(a=a, b=b, shared_items=len(shared), kappa=value))
    return pairs


def reviewer_agreement(labels: Labels, *, min_compared: int = 10) -> list[ReviewerAgreement]:
    """Each reviewer against the strict-majority consensus of the other reviewers, per item.

    Items where the others have no strict majority (a tie, or no other vote) are skipped. With
    fewer than `min_compared` compared items, `agreement` and `kappa` are None: not enough
    evidence. Sorted by reviewer.

    >>> votes = {f"i{n}": {"ann": "v", "bob": "v", "cy": "v" if n < 6 else "b"} for n in range(10)}
    >>> votes.update({f"j{n}": {"ann": "b", "bob": "b", "cy": "b"} for n in range(10)})
    >>> rows = reviewer_agreement(votes)
    >>> [(r.reviewer, r.compared, r.agreement, round(r.kappa, 2)) for r in rows]
    [('ann', 16, 1.0, 1.0), ('bob', 16, 1.0, 1.0), ('cy', 20, 0.8, 0.6)]

    (ann's four items where bob and cy split are ties among the others: skipped.)
    """
    report = []
    for reviewer in _reviewers(labels):
        own: list[str] = []
        others: list[str] = []
        total = 0
        for item_id, votes in labels.items():
            if reviewer not in votes:
                continue
            total += 1
            label = consensus(item_id, votes, exclude={reviewer}).label
            if label is not None:
                own.append(votes[reviewer])
                others.append(label)
        enough = bool(own) and len(own) >= min_compared
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
                kappa=_coded_kappa(own, others) if enough else None,
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
    rated = [Counter(votes.values()) for votes in labels.values() if len(votes) >= 2]
    categories = sorted({label for counts in rated for label in counts})
    if len(categories) < 2:
        return None, len(rated)
    # value counts (items x categories) rather than reliability data: no NaN-as-"nan" strings
    table = np.array([[counts[label] for label in categories] for counts in rated])
    value = float(krippendorff.alpha(value_counts=table, level_of_measurement="nominal"))
    return (None if math.isnan(value) else value), len(rated)


def agreement_report(labels: Labels, *, min_shared: int = 10) -> AgreementReport:
    """Pairwise kappas, each reviewer against the others, and the panel's alpha.

    `min_shared` is both the pairwise minimum of shared items and the per-reviewer minimum of
    compared items. To take an excluded reviewer out of the ceiling, build the report again on
    labels without them.

    >>> report = agreement_report({"i1": {"ann": "v", "bob": "b"}})
    >>> report.pairs[0].kappa is None, report.multi_rater_items, report.mean_pairwise_kappa
    (True, 1, None)
    """
    pairs = pairwise_kappas(labels, min_shared=min_shared)
    alpha, items = multi_rater(labels)
    defined = [pair.kappa for pair in pairs if pair.kappa is not None]
    return AgreementReport(
        pairs=pairs,
        reviewers=reviewer_agreement(labels, min_compared=min_shared),
        multi_rater=alpha,
        multi_rater_items=items,
        mean_pairwise_kappa=float(np.mean(defined)) if defined else None,
    )


def excluded_reviewers(
    report: AgreementReport, *, threshold: float = 0.8, cleared: Container[str] = ()
) -> set[str]:
    """Reviewers whose kappa against the others' consensus is below `threshold`.

    A reviewer a person has `cleared` is never excluded. Nor is one whose kappa is None: too
    few compared items is not enough evidence, and an undefined kappa on enough items means
    one label only on both sides, i.e. perfect raw agreement, so raw agreement is no fallback.

    >>> low = ReviewerAgreement("cy", labels=50, compared=50, agreement=0.7, kappa=0.4)
    >>> few = ReviewerAgreement("dee", labels=3, compared=3, agreement=None, kappa=None)
    >>> report = AgreementReport([], [low, few], None, 0, None)
    >>> excluded_reviewers(report), excluded_reviewers(report, cleared={"cy"})
    ({'cy'}, set())

    One pass: each reviewer is measured against a consensus that still holds every other
    reviewer, an unreliable one included, which pulls the good reviewers' kappas down (three
    reviewers with 5% errors on two labels, plus one labelling at random, land near 0.81).
    `excluded_by_peeling` measures again without the worst one.
    """
    return {
        row.reviewer
        for row in report.reviewers
        if row.reviewer not in cleared and row.kappa is not None and row.kappa < threshold
    }


def _without(labels: Labels, reviewers: Container[str]) -> dict[str, dict[str, str]]:
    return {item_id: counted_votes(votes, reviewers) for item_id, votes in labels.items()}


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
    return agreement_report(_without(labels, excluded), min_shared=min_shared).mean_pairwise_kappa


def excluded_by_peeling(
    labels: Labels, *, threshold: float = 0.8, cleared: Container[str] = (), min_shared: int = 10
) -> set[str]:
    """`excluded_reviewers`, repeated: leave out the one lowest-kappa reviewer below `threshold`,
    measure the rest again without their votes, and stop when no one is below it.

    One unreliable reviewer no longer drags the others' consensus, and so their kappas, down
    with it. Ties on kappa go to the first reviewer id, so the answer is deterministic.
    (Written here because scikit-learn and krippendorff score agreement but do not select raters.)

    >>> votes = {f"i{n}": {"ann": "v", "bob": "v", "cy": "b"} for n in range(10)}
    >>> votes.update({f"j{n}": {"ann": "b", "bob": "b", "cy": "v"} for n in range(10)})
    >>> excluded_by_peeling(votes), excluded_by_peeling(votes, cleared={"cy"})
    ({'cy'}, set())
    """
    excluded: set[str] = set()
    while True:
        report = agreement_report(_without(labels, excluded), min_shared=min_shared)
        below = excluded_reviewers(report, threshold=threshold, cleared=cleared)
        if not below:
            return excluded
        scores = {row.reviewer: row.kappa for row in report.reviewers}
        excluded.add(min(below, key=lambda reviewer: (scores[reviewer], reviewer)))
