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
  of five minutes' worth (``labels_per_hour / 12``, at least 1), starting full.
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import numpy as np
from scipy.spatial.distance import cdist
from scipy.special import entr
from sklearn.cluster import KMeans
from sklearn.neighbors import NearestNeighbors

from models.errors import BorderlineError

__all__ = [
    "AUDIT_PRIORITY",
    "MAX_CLUSTERS_PER_CLASS",
    "POOL_FACTOR",
    "RADIUS_PERCENTILE",
    "Candidate",
    "CurationError",
    "CurationWindow",
    "Evidence",
    "Reason",
    "ReviewBudget",
    "audit_sample",
    "boundary_pairs",
    "near_examples",
    "nearest_labelled",
    "prioritise",
    "random_sample",
    "top_uncertain",
    "uncertain",
    "uncertainty_diversity",
    "uncertainty_scores",
]

MAX_CLUSTERS_PER_CLASS = 64
"""The cap of the default k rule, so a large window stays cheap to cluster."""
POOL_FACTOR = 3
"""Boundary pairs: diversity picks from the closest ``POOL_FACTOR * max_pairs`` pairs."""
RADIUS_PERCENTILE = 90.0
AUDIT_PRIORITY = 0.1
_KMEANS_INITS = 4
_TOLERANCE = 1e-9  # rounding slack for "touching" clusters (identical points, radius 0)


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


@dataclass(frozen=True)
class Evidence:
    """A labelled item shown next to a review request: its label and its cosine similarity."""

    item_id: str
    label: str
    similarity: float


# --- input checks ---------------------------------------------------------------------------------


def _probabilities(p_violating: np.ndarray, n: int) -> np.ndarray:
    p = np.asarray(p_violating, dtype=np.float64)
    if p.ndim != 1 or p.shape[0] != n:
        raise CurationError(f"p_violating has shape {p.shape}, expected ({n},) for {n} item ids")
    bad = ~((p >= 0.0) & (p <= 1.0))  # also catches NaN
    if bad.any():
        raise CurationError(f"p_violating {float(p[bad][0])!r} is not a probability in [0, 1]")
    return p


def _unit_rows(embeddings: np.ndarray, n: int) -> np.ndarray:
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
    return x / norms[:, None]


def _count(name: str, value: int) -> int:
    if value < 0:
        raise CurationError(f"{name} must be >= 0, got {value!r}")
    return int(value)


def _fraction(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise CurationError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


# --- uncertainty ----------------------------------------------------------------------------------


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
    p = _probabilities(p, p.shape[0] if p.ndim == 1 else 0)
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
    p = _probabilities(p_violating, len(item_ids))
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
    p = _probabilities(p_violating, len(item_ids))
    chosen = _most_uncertain(p, _count("budget", budget))
    return [_uncertain_candidate(item_ids[i], float(p[i])) for i in chosen]


def _most_uncertain(p: np.ndarray, count: int) -> np.ndarray:
    order = np.argsort(-uncertainty_scores(p), kind="stable")
    return order[:count]


def _farthest_first(points: np.ndarray, count: int) -> list[int]:
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
    p = _probabilities(p_violating, len(item_ids))
    x = _unit_rows(embeddings, len(item_ids))
    if pool_factor < 1:
        raise CurationError(f"pool_factor must be >= 1, got {pool_factor!r}")
    budget = _count("budget", budget)
    pool = _most_uncertain(p, budget * pool_factor)
    picks = pool[_farthest_first(x[pool], budget)]
    return [_uncertain_candidate(item_ids[i], float(p[i])) for i in picks]


# --- random ---------------------------------------------------------------------------------------


def random_sample(
    item_ids: Sequence[str], p_violating: np.ndarray, *, budget: int, seed: int
) -> list[Candidate]:
    """`budget` items drawn uniformly without replacement (all of them when fewer), in input
    order, reason AUDIT, priority 0.1. The same seed draws the same items.

    >>> len(random_sample(list("abcdef"), np.full(6, 0.2), budget=4, seed=1))
    4
    """
    p = _probabilities(p_violating, len(item_ids))
    count = min(_count("budget", budget), len(item_ids))
    drawn = np.sort(np.random.default_rng(seed).choice(len(item_ids), size=count, replace=False))
    return [Candidate(item_ids[i], Reason.AUDIT, AUDIT_PRIORITY, float(p[i])) for i in drawn]


def audit_sample(
    item_ids: Sequence[str], p_violating: np.ndarray, *, rate: float, seed: int
) -> list[Candidate]:
    """A uniform sample of ``round(rate * n)`` items (at least one when ``rate > 0`` and ``n > 0``):
    unbiased ground truth for the evaluation split, whatever the model thinks.

    >>> len(audit_sample([str(i) for i in range(100)], np.zeros(100), rate=0.05, seed=3))
    5
    >>> len(audit_sample(["a", "b"], np.zeros(2), rate=0.01, seed=3))
    1
    """
    n = len(item_ids)
    count = round(_fraction("rate", rate) * n)
    if rate > 0.0 and n > 0:
        count = max(count, 1)
    return random_sample(item_ids, p_violating, budget=count, seed=seed)


# --- boundary pairs (the published method) --------------------------------------------------------


@dataclass(frozen=True)
class _Cluster:
    members: np.ndarray  # row indices into the full embedding matrix
    centroid: np.ndarray
    radius: float


def _cluster_side(
    x: np.ndarray, rows: np.ndarray, clusters_per_class: int | None, seed: int
) -> list[_Cluster]:
    side = x[rows]
    wanted = clusters_per_class or min(
        MAX_CLUSTERS_PER_CLASS, max(1, math.ceil(math.sqrt(rows.size / 2)))
    )
    # at most half as many clusters as distinct rows: a cluster needs two members for a radius
    k = min(wanted, max(1, np.unique(side, axis=0).shape[0] // 2))
    km = KMeans(n_clusters=k, n_init=_KMEANS_INITS, random_state=seed).fit(side)
    clusters = []
    for label, centroid in enumerate(km.cluster_centers_):
        members = rows[km.labels_ == label]
        if members.size == 0:
            continue
        spread = np.linalg.norm(x[members] - centroid, axis=1)
        clusters.append(
            _Cluster(members, centroid, float(np.percentile(spread, RADIUS_PERCENTILE)))
        )
    return clusters


def _overlaps(violating: list[_Cluster], benign: list[_Cluster]) -> list[tuple[int, int]]:
    """(violating, benign) cluster index pairs whose balls overlap, deepest overlap first."""
    gaps = cdist([c.centroid for c in violating], [c.centroid for c in benign])
    radii = np.add.outer([c.radius for c in violating], [c.radius for c in benign])
    depth = radii - gaps
    vi, bj = np.nonzero(depth >= -_TOLERANCE)
    order = np.lexsort((bj, vi, -depth[vi, bj]))
    return [(int(vi[o]), int(bj[o])) for o in order]


def _closest_first_matching(
    distances: np.ndarray, left: Sequence[str], right: Sequence[str], limit: int
) -> list[tuple[int, int]]:
    """(row, column) pairs of `distances`, closest first, skipping any whose row or column id is
    taken already, at most `limit`. Written by hand: scipy's `linear_sum_assignment` finds the
    matching of least total distance, which may give up the closest pairs to get it."""
    order = np.argsort(distances, axis=None, kind="stable")
    rows, cols = np.unravel_index(order, distances.shape)
    most = min(limit, *distances.shape)
    taken: set[str] = set()
    matched: list[tuple[int, int]] = []
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        if len(matched) >= most:
            break
        a, b = left[r], right[c]
        if a in taken or b in taken or a == b:
            continue
        taken.update((a, b))
        matched.append((r, c))
    return matched


def _pair_pool(
    x: np.ndarray,
    item_ids: Sequence[str],
    violating: list[_Cluster],
    benign: list[_Cluster],
    overlaps: list[tuple[int, int]],
    size: int,
) -> list[tuple[int, int, float]]:
    """(violating row, benign row, distance): the closest cross-label pairs of each overlap, then
    of all overlaps together (deeper overlap first on equal distance), each item id once, at most
    `size` of them."""
    found: list[tuple[float, int, int, int]] = []  # distance, overlap rank, violating, benign
    for rank, (i, j) in enumerate(overlaps):
        v, b = violating[i].members, benign[j].members
        d = cdist(x[v], x[b])
        v_ids, b_ids = [item_ids[r] for r in v.tolist()], [item_ids[r] for r in b.tolist()]
        for r, c in _closest_first_matching(d, v_ids, b_ids, size):
            found.append((float(d[r, c]), rank, int(v[r]), int(b[c])))
    found.sort()
    pool: list[tuple[int, int, float]] = []
    used: set[str] = set()
    for distance, _, v_row, b_row in found:
        if len(pool) == size:
            break
        a, b_id = item_ids[v_row], item_ids[b_row]
        if a in used or b_id in used:
            continue
        used.update((a, b_id))
        pool.append((v_row, b_row, distance))
    return pool


def boundary_pairs(
    item_ids: Sequence[str],
    embeddings: np.ndarray,
    p_violating: np.ndarray,
    *,
    threshold: float = 0.5,
    max_pairs: int,
    clusters_per_class: int | None = None,
    seed: int = 0,
) -> list[Candidate]:
    """Pairs of similar items the model labelled differently, where the clusters of the two
    predicted classes overlap (see the module's Choices). Each pair gives two BOUNDARY candidates,
    violating member first, each naming the other; no item id is in two pairs. Pairs come in
    selection order: the closest first, then each the farthest from those before it.
    Deterministic for a seed (it seeds KMeans).

    >>> x = np.array([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [0.0, 1.0]])
    >>> pairs = boundary_pairs(list("abcd"), x, np.array([0.1, 0.3, 0.6, 0.9]), max_pairs=1)
    >>> [(c.item_id, c.pair_item_id, round(c.priority, 3)) for c in pairs]
    [('c', 'b', 0.859), ('b', 'c', 0.859)]
    """
    n = len(item_ids)
    p = _probabilities(p_violating, n)
    x = _unit_rows(embeddings, n)
    max_pairs = _count("max_pairs", max_pairs)
    if clusters_per_class is not None and clusters_per_class < 1:
        raise CurationError(f"clusters_per_class must be >= 1, got {clusters_per_class!r}")
    flagged = p >= threshold
    v_rows, b_rows = np.flatnonzero(flagged), np.flatnonzero(~flagged)
    if max_pairs == 0 or v_rows.size == 0 or b_rows.size == 0:
        return []
    violating = _cluster_side(x, v_rows, clusters_per_class, seed)
    benign = _cluster_side(x, b_rows, clusters_per_class, seed)
    overlaps = _overlaps(violating, benign)
    pool = _pair_pool(x, item_ids, violating, benign, overlaps, POOL_FACTOR * max_pairs)
    if not pool:
        return []
    midpoints = np.array([(x[v] + x[b]) / 2.0 for v, b, _ in pool])
    out: list[Candidate] = []
    for k in _farthest_first(midpoints, max_pairs):
        v, b, distance = pool[k]
        priority = min(1.0, max(0.0, 1.0 - distance / 2.0))
        v_id, b_id = item_ids[v], item_ids[b]
        out.append(Candidate(v_id, Reason.BOUNDARY, priority, float(p[v]), b_id))
        out.append(Candidate(b_id, Reason.BOUNDARY, priority, float(p[b]), v_id))
    return out


# --- the stream window ----------------------------------------------------------------------------


class CurationWindow:
    """A sliding window over recent scored items, for boundary mining on a stream.

    A ring buffer of `size` items (read it back as `.size`): the newest replace the oldest; an id
    already in the window is ignored when added again (at-least-once delivery redelivers).

    >>> w = CurationWindow(size=2, dim=2)
    >>> w.add(["a", "b", "a", "c"], np.eye(2)[[0, 1, 0, 1]], np.array([0.1, 0.9, 0.1, 0.8]))
    >>> w.snapshot()[0], len(w)
    (['b', 'c'], 2)
    """

    def __init__(self, size: int, dim: int) -> None:
        if size < 1 or dim < 1:
            raise CurationError(f"window size and dim must be >= 1, got size={size}, dim={dim}")
        self.size = size
        self._ids: list[str | None] = [None] * size
        self._embeddings = np.zeros((size, dim), dtype=np.float32)
        self._p = np.zeros(size, dtype=np.float64)
        self._slot: dict[str, int] = {}
        self._next = 0

    def add(self, item_ids: Sequence[str], embeddings: np.ndarray, p_violating: np.ndarray) -> None:
        n = len(item_ids)
        p = _probabilities(p_violating, n)
        x = np.asarray(embeddings, dtype=np.float32)
        if n and x.shape != (n, self._embeddings.shape[1]):
            raise CurationError(
                f"embeddings have shape {x.shape}, expected ({n}, {self._embeddings.shape[1]})"
            )
        if n:  # refuse bad rows here, where the caller can dead-letter them, not at mining time
            _unit_rows(x, n)
        for i, item_id in enumerate(item_ids):
            if item_id in self._slot:
                continue
            evicted = self._ids[self._next]
            if evicted is not None:
                del self._slot[evicted]
            self._ids[self._next] = item_id
            self._embeddings[self._next] = x[i]
            self._p[self._next] = p[i]
            self._slot[item_id] = self._next
            self._next = (self._next + 1) % len(self._ids)

    def __len__(self) -> int:
        return len(self._slot)

    def snapshot(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Copies of the ids, embeddings and probabilities, oldest first."""
        size = len(self._ids)
        order = [(self._next + k) % size for k in range(size)]
        rows = [s for s in order if self._ids[s] is not None]
        ids = [item_id for s in rows if (item_id := self._ids[s]) is not None]
        return ids, self._embeddings[rows].copy(), self._p[rows].copy()

    def mine(
        self, *, max_pairs: int, audit_rate: float, seed: int, exclude: Container[str] = ()
    ) -> list[Candidate]:
        """Boundary pairs over the window, then an audit sample of it, leaving out ids in
        `exclude` (already requested). The audit is drawn over the whole window, so every item
        has the same chance; a drawn item already in a pair is not repeated."""
        ids, x, p = self.snapshot()
        keep = [i for i, item_id in enumerate(ids) if item_id not in exclude]
        ids = [ids[i] for i in keep]
        x, p = x[keep], p[keep]
        pairs = boundary_pairs(ids, x, p, max_pairs=max_pairs, seed=seed)
        paired = {c.item_id for c in pairs}
        audit = audit_sample(ids, p, rate=audit_rate, seed=seed)
        return pairs + [c for c in audit if c.item_id not in paired]


# --- evidence for reviewers -----------------------------------------------------------------------


def nearest_labelled(
    query: np.ndarray,
    labelled_ids: Sequence[str],
    labelled_embeddings: np.ndarray,
    labels: Sequence[str],
    *,
    k: int = 3,
) -> list[list[Evidence]]:
    """For each query row, the `k` most similar labelled items by cosine similarity, most similar
    first; empty rows when nothing is labelled yet.

    >>> lab = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    >>> labels = ["ok", "bad", "ok"]
    >>> rows = nearest_labelled(np.array([[0.0, 2.0]]), ["x", "y", "z"], lab, labels, k=2)
    >>> [(e.item_id, e.label, round(e.similarity, 2)) for e in rows[0]]
    [('y', 'bad', 1.0), ('z', 'ok', 0.8)]
    """
    if k < 1:
        raise CurationError(f"k must be >= 1, got {k!r}")
    q = np.asarray(query, dtype=np.float64)
    if q.ndim != 2:
        raise CurationError(f"query has shape {q.shape}, expected (rows, dim)")
    if len(labels) != len(labelled_ids):
        raise CurationError(f"{len(labels)} labels for {len(labelled_ids)} labelled ids")
    if not labelled_ids:
        return [[] for _ in range(q.shape[0])]
    lab = np.asarray(labelled_embeddings, dtype=np.float64)
    if lab.shape != (len(labelled_ids), q.shape[1]):
        raise CurationError(
            f"labelled_embeddings have shape {lab.shape}, expected ({len(labelled_ids)}, "
            f"{q.shape[1]})"
        )
    if q.shape[0] == 0:
        return []
    index = NearestNeighbors(metric="cosine", algorithm="brute").fit(lab)
    distances, rows = index.kneighbors(q, n_neighbors=min(k, len(labelled_ids)))
    return [
        [
            Evidence(labelled_ids[r], labels[r], float(np.clip(1.0 - d, -1.0, 1.0)))
            for d, r in zip(row_d, row_r, strict=True)
        ]
        for row_d, row_r in zip(distances, rows, strict=True)
    ]


# --- the review budget ----------------------------------------------------------------------------


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
        wanted = _count("wanted", wanted)
        open_requests = _count("open_requests", open_requests)
        elapsed = max(0.0, now - self.updated_at)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.labels_per_hour / 3600.0)
        self.updated_at = max(self.updated_at, float(now))
        room = max(0, self.max_open - open_requests)
        granted = min(wanted, room, math.floor(self.tokens + _TOLERANCE))
        self.tokens = max(0.0, self.tokens - granted)
        return granted


# --- merging ------------------------------------------------------------------------------------


def prioritise(candidates: Iterable[Candidate]) -> list[Candidate]:
    """One candidate per item id, highest priority first (stable). A boundary pair (two candidates
    naming each other) travels as one unit at the higher of its two priorities: both members stay,
    adjacent, or both go when a higher-priority candidate already claims one of them.

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


def near_examples(
    item_ids: Sequence[str],
    embeddings: np.ndarray,
    p_violating: np.ndarray,
    examples: np.ndarray,
    *,
    budget: int,
    min_similarity: float = 0.5,
) -> list[Candidate]:
    """After a policy change: the items most similar (cosine) to the policy's examples of what
    changed, at least ``min_similarity``, most similar first; at most ``budget``. These are often
    items the old model calls benign with confidence, which no uncertainty measure would pick.

    >>> e = np.eye(3, dtype=np.float32)
    >>> [c.item_id for c in near_examples(["a", "b", "c"], e, np.array([0.1, 0.2, 0.9]),
    ...                                   e[[1]], budget=2)]
    ['b']
    """
    n = len(item_ids)
    if n == 0 or budget <= 0 or len(examples) == 0:
        return []
    rows = _unit_rows(embeddings, n)
    ex = np.asarray(examples, dtype=np.float64)
    ex = ex / np.clip(np.linalg.norm(ex, axis=1, keepdims=True), 1e-12, None)
    similarity = (rows @ ex.T).max(axis=1)
    p = _probabilities(p_violating, n)
    order = np.argsort(-similarity, kind="stable")
    out = []
    for i in order[:budget]:
        if similarity[i] < min_similarity:
            break
        out.append(
            Candidate(
                item_ids[i], Reason.POLICY_CHANGE, float(np.clip(similarity[i], 0, 1)), float(p[i])
            )
        )
    return out
