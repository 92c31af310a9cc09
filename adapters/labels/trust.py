"""Which reviewers the loop trusts: a reviewer is excluded from consensus and training only when
the evidence says their kappa against the trusted others is below the threshold, one at a time,
worst first, and only by a panel large enough to tell. Every shown figure (`Trust.reviewers`) is
measured against the consensus of the trusted reviewers alone.
(Written here: scikit-learn and krippendorff score agreement but do not select raters.)"""

from __future__ import annotations

from collections.abc import Collection, Container, Sequence
from dataclasses import dataclass

import numpy as np

from adapters.labels.agreement import (
    AgreementReport,
    Labels,
    PairAgreement,
    ReviewerAgreement,
    excluded_reviewers,
    pairwise_kappas,
    reviewer_agreement,
)
from adapters.labels.consensus import counted_votes

__all__ = [
    "MIN_PANEL",
    "Trust",
    "excluded_by_peeling",
    "first_to_peel",
    "mean_pairwise",
    "trusted_panel",
]

MIN_PANEL = 3
"""Fewer reviewers than this cannot single one of them out: with two, either may be wrong."""

_TIE = 12
"""Decimals to which two upper bounds (or mean pairwise kappas) count as a tie."""


@dataclass(frozen=True)
class Trust:
    """Who is excluded, and every reviewer against the consensus of the trusted others.

    `panel` counts the reviewers who gave a label. `short` is True when the panel is below the
    minimum, so nobody could be excluded, or when peeling stopped at the minimum while a
    reviewer was still evidently below the threshold: the alert's condition. `held` names
    those reviewers (empty when the panel was short from the start).
    """

    excluded: frozenset[str]
    reviewers: list[ReviewerAgreement]
    panel: int
    short: bool
    held: frozenset[str] = frozenset()


def mean_pairwise(
    pairs: Sequence[PairAgreement], reviewer: str, among: Container[str]
) -> float | None:
    """The mean of `reviewer`'s defined pairwise kappas with the reviewers in `among`.

    >>> pairs = [PairAgreement("a", "b", 30, 0.9), PairAgreement("a", "c", 30, 0.1),
    ...          PairAgreement("b", "c", 30, None)]
    >>> mean_pairwise(pairs, "a", {"b", "c"}), mean_pairwise(pairs, "c", {"a", "b"})
    (0.5, 0.1)
    >>> mean_pairwise(pairs, "c", {"b"}) is None
    True
    """
    values = [
        pair.kappa
        for pair in pairs
        if pair.kappa is not None
        and reviewer in (pair.a, pair.b)
        and (pair.b if pair.a == reviewer else pair.a) in among
    ]
    return float(np.mean(values)) if values else None


def first_to_peel(
    below: Collection[str],
    rows: Sequence[ReviewerAgreement],
    pairs: Sequence[PairAgreement],
    trusted: Container[str],
    confidence: float = 0.95,
) -> set[str]:
    """Of the reviewers `below` the threshold, the ones to exclude next: the lowest upper bound;
    a tie goes to the lowest mean pairwise kappa with the `trusted` others (no defined pair: no
    evidence against them, so last); still tied, all of them. Never the reviewer id.

    >>> rows = [ReviewerAgreement(r, 90, 90, 0.5, kappa=0.0, std_error=0.0) for r in "abc"]
    >>> pairs = [PairAgreement("a", "b", 90, 0.85), PairAgreement("a", "c", 90, 0.0),
    ...          PairAgreement("b", "c", 90, 0.0)]
    >>> first_to_peel({"a", "b", "c"}, rows, pairs, trusted={"a", "b", "c"})
    {'c'}
    """
    bounds = {row.reviewer: row.upper(confidence) for row in rows}

    def key(reviewer: str) -> tuple[float, float]:
        upper, mean = bounds[reviewer], mean_pairwise(pairs, reviewer, trusted)
        return (
            round(upper if upper is not None else 1.0, _TIE),
            round(mean, _TIE) if mean is not None else np.inf,
        )

    if not below:
        return set()
    lowest = min(key(reviewer) for reviewer in below)
    return {reviewer for reviewer in below if key(reviewer) == lowest}


@dataclass(frozen=True)
class _Panel:
    """The reviewers of a set of labels and the rule they are judged by."""

    labels: dict[str, dict[str, str]]
    members: list[str]
    pairs: list[PairAgreement]
    threshold: float
    cleared: Container[str]
    min_shared: int
    min_panel: int
    confidence: float

    def rows(self, excluded: set[str]) -> list[ReviewerAgreement]:
        return reviewer_agreement(self.labels, min_compared=self.min_shared, exclude=excluded)

    def below(self, rows: Sequence[ReviewerAgreement], trusted: set[str]) -> set[str]:
        """Reviewers evidently below the threshold against the consensus of the trusted
        others, and not saved by fine pairwise kappas with every one of those."""
        report = AgreementReport([], list(rows), None, 0, None)
        low = excluded_reviewers(
            report, threshold=self.threshold, cleared=self.cleared, confidence=self.confidence
        )
        return {reviewer for reviewer in low if not self._pairs_fine(reviewer, trusted)}

    def _pairs_fine(self, reviewer: str, trusted: set[str]) -> bool:
        # every defined pairwise kappa with the other trusted reviewers is not evidently below
        # the threshold: the low figure against the consensus is the consensus's fault
        bounds = [
            pair.upper(self.confidence)
            for pair in self.pairs
            if pair.kappa is not None
            and reviewer in (pair.a, pair.b)
            and (pair.b if pair.a == reviewer else pair.a) in trusted - {reviewer}
        ]
        return bool(bounds) and all(b is not None and b >= self.threshold for b in bounds)

    def peel(self, excluded: set[str]) -> tuple[set[str], list[ReviewerAgreement], set[str], bool]:
        """Exclude the worst evidently below, measure again, until no one is or the panel is
        too small to tell who is wrong: (excluded, rows, still below, too small)."""
        while True:
            rows = self.rows(excluded)
            trusted = {reviewer for reviewer in self.members if reviewer not in excluded}
            below = self.below(rows, trusted) & trusted
            worst = first_to_peel(below, rows, self.pairs, trusted, self.confidence)
            # too few from the start, or one more peel would leave fewer than two trusted (a
            # tie of several at the end of a small panel)
            small = len(trusted) < self.min_panel or len(trusted) - len(worst) < MIN_PANEL - 1
            if not below or small:
                return excluded, rows, below, small
            excluded = excluded | worst


def trusted_panel(
    labels: Labels,
    *,
    threshold: float = 0.8,
    cleared: Container[str] = (),
    min_shared: int = 10,
    min_panel: int = MIN_PANEL,
    confidence: float = 0.95,
) -> Trust:
    """Peel the panel: measure every reviewer against the consensus of the trusted others,
    exclude the worst whose kappa's upper confidence bound is below `threshold`, and measure
    again without their votes, until no one is evidently below it.

    A reviewer a person has `cleared` is never excluded, nor one whose kappa is undefined or
    rests on fewer than `min_shared` items (`excluded_reviewers`), nor one whose pairwise
    kappas with every other trusted reviewer are fine (upper bound at least `threshold`).
    Nobody is excluded while fewer than `min_panel` reviewers are still trusted.

    Two careful reviewers and one who answers "violating" whatever the item: the careful two
    are measured against a consensus the constant one makes constant, which is no evidence
    (kappa None); the constant one scores 0.0 with no doubt and goes.

    >>> truth = ["violating" if n % 3 == 0 else "benign" for n in range(60)]
    >>> votes = {f"i{n}": {"ann": t, "bob": t if n % 20 else "benign", "cy": "violating"}
    ...          for n, t in enumerate(truth)}
    >>> trust = trusted_panel(votes)
    >>> sorted(trust.excluded), [round(r.kappa, 2) for r in trust.reviewers], trust.short
    (['cy'], [0.96, 0.96, 0.0], False)
    >>> trusted_panel(votes, min_panel=4).excluded, trusted_panel(votes, min_panel=4).short
    (frozenset(), True)
    """
    if min_panel < MIN_PANEL:
        raise ValueError(f"min_panel must be at least {MIN_PANEL}, got {min_panel}")
    cast = {item_id: counted_votes(votes, ()) for item_id, votes in labels.items()}
    members = sorted({reviewer for votes in cast.values() for reviewer in votes})
    panel = _Panel(
        labels=cast,
        members=members,
        pairs=pairwise_kappas(cast, min_shared=min_shared),
        threshold=threshold,
        cleared=cleared,
        min_shared=min_shared,
        min_panel=min_panel,
        confidence=confidence,
    )
    excluded: set[str] = set()
    for _ in range(len(members) + 1):
        excluded, rows, below, small = panel.peel(excluded)
        # early on, a reviewer can be peeled against a consensus a worse one still dragged:
        # whom the trusted panel no longer finds below comes back, and the panel is peeled again
        trusted = {reviewer for reviewer in members if reviewer not in excluded}
        back = excluded - panel.below(rows, trusted)
        if not back:
            break
        excluded -= back
    short = bool(members) and small and (bool(below) or not excluded)
    return Trust(
        excluded=frozenset(excluded),
        reviewers=rows,
        panel=len(members),
        short=short,
        held=frozenset(below) if short else frozenset(),
    )


def excluded_by_peeling(
    labels: Labels,
    *,
    threshold: float = 0.8,
    cleared: Container[str] = (),
    min_shared: int = 10,
    min_panel: int = MIN_PANEL,
    confidence: float = 0.95,
) -> set[str]:
    """The reviewers `trusted_panel` excludes.

    >>> votes = {f"i{n}": {"ann": "v", "bob": "v", "cy": "b"} for n in range(10)}
    >>> votes.update({f"j{n}": {"ann": "b", "bob": "b", "cy": "v"} for n in range(10)})
    >>> excluded_by_peeling(votes), excluded_by_peeling(votes, cleared={"cy"})
    ({'cy'}, set())
    """
    return set(
        trusted_panel(
            labels,
            threshold=threshold,
            cleared=cleared,
            min_shared=min_shared,
            min_panel=min_panel,
            confidence=confidence,
        ).excluded
    )
