"""Curation: which scored items go to expert review. Boundary pairs mined from a sliding window
(the published method: cluster each predicted class, find where the clusters overlap, send
similar items that got different labels, diverse pairs first), plus the baselines it is measured
against (top uncertainty, uncertainty+diversity, random), the audit sample, the review budget and
the labelled neighbours shown to reviewers as evidence. Pure: no I/O, no clock, seeds passed in.

Choices (the paper publishes none of them; these are ours, measured by the benchmarks):

- Distance: rows are L2-normalised and compared by Euclidean (chord) distance,
  ``sqrt(2 * (1 - cos))``. It orders neighbours exactly as cosine distance does, it is a true
  metric (so "two balls overlap" means something), and it is what KMeans minimises.
- Clusters: KMeans per predicted class (``p >= threshold`` is violating), ``k = ceil(sqrt(n/2))``
  capped at ``MAX_CLUSTERS_PER_CLASS``; any k (an explicit one too) is capped at half the distinct
  rows, so clusters have members to measure a radius from. A side with one item is one cluster of
  radius 0 (a lone item inside a cluster of the other class is a boundary case); an empty side
  means no boundary, so ``[]``.
- Overlap: a cluster's radius is the 90th percentile of its members' distances to its centroid
  (robust to a stray member). Clusters V and B overlap when ``|c_V - c_B| <= r_V + r_B``; the
  depth ``r_V + r_B - |c_V - c_B|`` ranks the overlaps and breaks ties between equally close pairs.
- Pairs: inside each overlap, cross-label pairs are matched greedily, closest first, each item
  at most once; across overlaps the same again, into a pool of the ``POOL_FACTOR * max_pairs``
  closest pairs (3x: a smaller pool stays nearer the boundary, a larger one spreads wider). The
  budget is then spent by greedy farthest-first over the pool's pair midpoints, starting from
  the closest pair: diversity, but only among confusable pairs.
  A pair's priority is ``1 - distance / 2``, in [0, 1], higher for closer pairs.
- Review budget: a token bucket refilled at ``labels_per_hour / 3600`` per second up to a capacity
  of five minutes' worth (``labels_per_hour / 12``, at least 1), starting full."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import numpy as np
from scipy.special import entr

from models.errors import BorderlineError

__all__ = [
    "Candidate",
    "CurationError",
    "Reason",
    "top_uncertain",
    "uncertain",
    "uncertainty_diversity",
    "uncertainty_scores",
]


"""The cap of the default k rule, so a large window stays cheap to cluster."""


"""Boundary pairs: diversity picks from the closest ``POOL_FACTOR * max_pairs`` pairs."""


TOLERANCE = 1e-9  # rounding slack for "touching" clusters (identical points, radius 0)


class CurationError(BorderlineError):
    """Input that curation cannot use: the message names the argument and the offending value."""


class Reason(StrEnum):
    UNCERTAIN = "uncertain"
    BOUNDARY = "boundary"
    AUDIT = "audit"
    POLICY_CHANGE = "policy_change"


@dataclass(frozen=True)
class Candidate:
    """One item proposed for expert review. `priority` is in [0, 1], higher first; a boundary
    candidate names the other member of its pair in `pair_item_id`."""

    item_id: str
    reason: Reason
    priority: float
    p_violating: float
    pair_item_id: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.priority <= 1.0:
            raise CurationError(f"priority {self.priority!r} of {self.item_id!r} is not in [0, 1]")
        if not 0.0 <= self.p_violating <= 1.0:
            raise CurationError(
                f"p_violating {self.p_violating!r} of {self.item_id!r} is not in [0, 1]"
            )


def checked_probabilities(p_violating: np.ndarray, n: int) -> np.ndarray:
    p = np.asarray(p_violating, dtype=np.float64)
    if p.ndim != 1 or p.shape[0] != n:
        raise CurationError(f"p_violating has shape {p.shape}, expected ({n},) for {n} item ids")
    bad = ~((p >= 0.0) & (p <= 1.0))  # also catches NaN
    if bad.any():
        raise CurationError(f"p_violating {float(p[bad][0])!r} is not a probability in [0, 1]")
    return p


def unit_rows(embeddings: np.ndarray, n: int) -> np.ndarray:
    """Embeddings as float64 rows of length 1 (a no-op for the scorer's normalised output)."""
    x = np.asarray(embeddings, dtype=np.float64)
    if n == 0 and x.size == 0:
        return x.reshape(0, x.shape[-1] if x.ndim == 2 else 0)
    if x.ndim != 2 or x.shape[0] != n:
        raise CurationError(f"embeddings have shape {x.shape}, expected ({n}, dim)")
    if not np.isfinite(x).all():
        raise CurationError("embeddings contain NaN or infinite values")
    norms = np.linalg.norm(x, axis=1)
    if (norms == 0.0).any():
        raise CurationError(f"embedding row {int(np.argmin(norms))} is all zeros")
    unit: np.ndarray = x / norms[:, None]
    return unit


def checked_count(name: str, value: int) -> int:
    if value < 0:
        raise CurationError(f"{name} must be >= 0, got {value!r}")
    return int(value)


def uncertainty_scores(
    p_violating: np.ndarray, mode: Literal["margin", "entropy"] = "margin"
) -> np.ndarray:
    """How unsure the model is of each item, in [0, 1], higher is less sure.

    ``margin`` is ``1 - |2p - 1|``; ``entropy`` is the binary entropy in bits.

    >>> uncertainty_scores(np.array([0.5, 0.9, 1.0])).round(3).tolist()
    [1.0, 0.2, 0.0]
    >>> uncertainty_scores(np.array([0.5, 0.9, 1.0]), "entropy").round(3).tolist()
    [1.0, 0.469, 0.0]
    """
    p = np.asarray(p_violating, dtype=np.float64)
    p = checked_probabilities(p, p.shape[0] if p.ndim == 1 else 0)
    if mode == "margin":
        return np.clip(1.0 - np.abs(2.0 * p - 1.0), 0.0, 1.0)
    if mode == "entropy":
        return np.asarray((entr(p) + entr(1.0 - p)) / math.log(2.0), dtype=np.float64)
    raise CurationError(f"unknown uncertainty mode {mode!r}: use 'margin' or 'entropy'")


def _uncertain_candidate(item_id: str, p: float) -> Candidate:
    priority = min(1.0, max(0.0, 1.0 - abs(2.0 * p - 1.0)))  # the margin score
    return Candidate(item_id, Reason.UNCERTAIN, priority, p)


def uncertain(
    item_ids: Sequence[str], p_violating: np.ndarray, *, low: float, high: float
) -> list[Candidate]:
    """The items with ``low <= p <= high`` (edges included), least sure first (stable).

    >>> found = uncertain(["a", "b", "c"], np.array([0.1, 0.7, 0.45]), low=0.3, high=0.7)
    >>> [(c.item_id, round(c.priority, 2)) for c in found]
    [('c', 0.9), ('b', 0.6)]
    """
    p = checked_probabilities(p_violating, len(item_ids))
    if not 0.0 <= low <= high <= 1.0:
        raise CurationError(f"uncertainty band [{low!r}, {high!r}] must lie within [0, 1]")
    inside = np.flatnonzero((p >= low) & (p <= high)).tolist()
    found = [_uncertain_candidate(item_ids[i], float(p[i])) for i in inside]
    return sorted(found, key=lambda c: -c.priority)


def top_uncertain(
    item_ids: Sequence[str], p_violating: np.ndarray, *, budget: int
) -> list[Candidate]:
    """The `budget` least sure items (margin), least sure first; ties keep input order.

    >>> [c.item_id for c in top_uncertain(["a", "b", "c"], np.array([0.9, 0.4, 0.6]), budget=2)]
    ['b', 'c']
    """
    p = checked_probabilities(p_violating, len(item_ids))
    chosen = _most_uncertain(p, checked_count("budget", budget))
    return [_uncertain_candidate(item_ids[i], float(p[i])) for i in chosen]


def _most_uncertain(p: np.ndarray, count: int) -> np.ndarray:
    order = np.argsort(-uncertainty_scores(p), kind="stable")
    return order[:count]


def farthest_first(points: np.ndarray, count: int) -> list[int]:
    """Greedy farthest-first traversal from row 0: each pick is the row farthest from all the
    picks before it (ties go to the lower row). Written by hand: scikit-learn has no
    farthest-point sampling."""
    if count <= 0 or points.shape[0] == 0:
        return []
    chosen = [0]
    nearest = np.linalg.norm(points - points[0], axis=1)
    nearest[0] = -np.inf
    while len(chosen) < min(count, points.shape[0]):
        pick = int(np.argmax(nearest))
        chosen.append(pick)
        nearest = np.minimum(nearest, np.linalg.norm(points - points[pick], axis=1))
        nearest[chosen] = -np.inf
    return chosen


def uncertainty_diversity(
    item_ids: Sequence[str],
    embeddings: np.ndarray,
    p_violating: np.ndarray,
    *,
    budget: int,
    pool_factor: int = 5,
    seed: int = 0,
) -> list[Candidate]:
    """The "uncertainty+diversity" baseline: from the ``budget * pool_factor`` least sure items,
    `budget` picked by farthest-first over their embeddings, starting from the least sure.
    Deterministic; `seed` is accepted for a uniform signature with the other selectors.

    >>> x = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]])
    >>> picked = uncertainty_diversity(["a", "b", "c"], x, np.array([0.5, 0.5, 0.4]), budget=2)
    >>> [c.item_id for c in picked]
    ['a', 'c']
    """
    del seed  # farthest-first from the least sure item involves no randomness
    p = checked_probabilities(p_violating, len(item_ids))
    x = unit_rows(embeddings, len(item_ids))
    if pool_factor < 1:
        raise CurationError(f"pool_factor must be >= 1, got {pool_factor!r}")
    budget = checked_count("budget", budget)
    pool = _most_uncertain(p, budget * pool_factor)
    picks = pool[farthest_first(x[pool], budget)]
    return [_uncertain_candidate(item_ids[i], float(p[i])) for i in picks]
