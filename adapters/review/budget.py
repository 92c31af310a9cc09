"""The review budget: how many requests each reason may send per hour and how many may be open, and
the order in which candidates are sent."""

from __future__ import annotations

import math
from collections.abc import Iterable

from adapters.review.selectors import TOLERANCE, Candidate, CurationError, checked_count

__all__ = ["ReviewBudget", "prioritise"]


class ReviewBudget:
    """Token bucket: labels per hour, and a cap on open (unanswered) requests. Pure: state is
    explicit (`tokens`, `updated_at`) and time is the `now` passed in, in seconds.

    >>> budget = ReviewBudget(labels_per_hour=120, max_open=50)   # capacity 10, starts full
    >>> budget.allow(25, open_requests=0, now=0.0)
    10
    >>> budget.allow(25, open_requests=0, now=60.0)   # one minute refills two
    2
    >>> budget.allow(25, open_requests=50, now=3600.0)   # reviewers are behind: send none
    0
    """

    def __init__(
        self,
        labels_per_hour: float,
        max_open: int,
        *,
        tokens: float | None = None,
        updated_at: float = 0.0,
    ) -> None:
        if not labels_per_hour > 0.0 or not math.isfinite(labels_per_hour):
            raise CurationError(
                f"labels_per_hour must be a positive number, got {labels_per_hour!r}"
            )
        if max_open < 0:
            raise CurationError(f"max_open must be >= 0, got {max_open!r}")
        self.labels_per_hour = float(labels_per_hour)
        self.max_open = int(max_open)
        self.capacity = max(1.0, self.labels_per_hour / 12.0)
        if tokens is not None and not tokens >= 0.0:
            raise CurationError(f"tokens must be >= 0, got {tokens!r}")
        self.tokens = self.capacity if tokens is None else min(float(tokens), self.capacity)
        self.updated_at = float(updated_at)

    def __repr__(self) -> str:
        return (
            f"ReviewBudget(labels_per_hour={self.labels_per_hour}, max_open={self.max_open}, "
            f"tokens={self.tokens}, updated_at={self.updated_at})"
        )

    def allow(self, wanted: int, *, open_requests: int, now: float) -> int:
        """How many of `wanted` requests may be sent at `now`; those tokens are spent. A `now`
        earlier than the last call refills nothing (the clock never runs backwards here)."""
        wanted = checked_count("wanted", wanted)
        open_requests = checked_count("open_requests", open_requests)
        elapsed = max(0.0, now - self.updated_at)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.labels_per_hour / 3600.0)
        self.updated_at = max(self.updated_at, float(now))
        room = max(0, self.max_open - open_requests)
        granted = min(wanted, room, math.floor(self.tokens + TOLERANCE))
        self.tokens = max(0.0, self.tokens - granted)
        return granted


def prioritise(candidates: Iterable[Candidate]) -> list[Candidate]:
    """One candidate per item id, highest priority first (stable). A boundary pair (two candidates
    naming each other) travels as one unit at the higher of its two priorities: both members stay,
    adjacent, or both go when a higher-priority candidate already claims one of them.

    >>> from adapters.review.selectors import Candidate, Reason
    >>> a = Candidate("a", Reason.BOUNDARY, 0.6, 0.7, "b")
    >>> b = Candidate("b", Reason.BOUNDARY, 0.6, 0.4, "a")
    >>> merged = prioritise([Candidate("c", Reason.AUDIT, 0.1, 0.2), a,
    ...                      Candidate("a", Reason.UNCERTAIN, 0.5, 0.7), b])
    >>> [(c.item_id, c.reason.value) for c in merged]
    [('a', 'boundary'), ('b', 'boundary'), ('c', 'audit')]
    """
    items = list(candidates)
    # Pair up BOUNDARY candidates that name each other, in input order; the rest are singles.
    waiting: dict[tuple[str, str], list[int]] = {}
    units: list[list[int]] = []
    for i, c in enumerate(items):
        mate = c.pair_item_id
        if mate is None or mate == c.item_id:
            units.append([i])
            continue
        partner = waiting.get((mate, c.item_id))
        if partner:
            units[partner.pop(0)].append(i)
        else:
            waiting.setdefault((c.item_id, mate), []).append(len(units))
            units.append([i])
    units.sort(key=lambda u: -max(items[i].priority for i in u))  # stable: first seen wins ties
    out: list[Candidate] = []
    claimed: set[str] = set()
    for unit in units:
        ids = {items[i].item_id for i in unit}
        if ids & claimed:
            continue
        claimed |= ids
        out.extend(items[i] for i in unit)
    return out
