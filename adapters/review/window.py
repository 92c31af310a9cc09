"""The mining window: the latest scored items (ids, probabilities, embeddings) over which boundary
pairs and diversity are computed, with what was already requested."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Container, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import cdist
from sklearn.cluster import KMeans

from adapters.review.selectors import (
    TOLERANCE,
    Candidate,
    CurationError,
    Reason,
    checked_count,
    checked_probabilities,
    farthest_first,
    unit_rows,
)

__all__ = [
    "AUDIT_PRIORITY",
    "MAX_CLUSTERS_PER_CLASS",
    "POOL_FACTOR",
    "RADIUS_PERCENTILE",
    "CurationWindow",
    "audit_draw",
    "audit_sample",
    "boundary_pairs",
    "random_sample",
]


MAX_CLUSTERS_PER_CLASS = 64


POOL_FACTOR = 3


RADIUS_PERCENTILE = 90.0


AUDIT_PRIORITY = 0.1


_KMEANS_INITS = 4


def _fraction(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise CurationError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def random_sample(
    item_ids: Sequence[str], p_violating: np.ndarray, *, budget: int, seed: int
) -> list[Candidate]:
    """`budget` items drawn uniformly without replacement (all of them when fewer), in input
    order, reason AUDIT, priority 0.1. The same seed draws the same items.

    >>> len(random_sample(list("abcdef"), np.full(6, 0.2), budget=4, seed=1))
    4
    """
    p = checked_probabilities(p_violating, len(item_ids))
    count = min(checked_count("budget", budget), len(item_ids))
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


def audit_draw(item_ids: Sequence[str], *, rate: float, seed: int) -> list[bool]:
    """Whether each item is in the audit sample: drawn independently with probability ``rate``,
    by a uniform number made from sha256(seed, item id). Every scored item gets exactly one draw
    with a known probability whatever the model thinks of it (Poisson sampling), and a redelivered
    item is drawn the same way again. What the live kappa, the gate and rollback are estimated on.

    >>> drawn = audit_draw([str(i) for i in range(1000)], rate=0.1, seed=3)
    >>> 80 < sum(drawn) < 120, drawn == audit_draw([str(i) for i in range(1000)], rate=0.1, seed=3)
    (True, True)
    >>> audit_draw(["a"], rate=0.0, seed=3), audit_draw(["a"], rate=1.0, seed=3)
    ([False], [True])
    """
    rate = _fraction("rate", rate)
    out = []
    for item_id in item_ids:
        digest = hashlib.sha256(f"audit\x00{seed}\x00{item_id}".encode()).digest()
        out.append(int.from_bytes(digest[:8], "big") / 2.0**64 < rate)
    return out


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
    vi, bj = np.nonzero(depth >= -TOLERANCE)
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
    p = checked_probabilities(p_violating, n)
    x = unit_rows(embeddings, n)
    max_pairs = checked_count("max_pairs", max_pairs)
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
    for k in farthest_first(midpoints, max_pairs):
        v, b, distance = pool[k]
        priority = min(1.0, max(0.0, 1.0 - distance / 2.0))
        v_id, b_id = item_ids[v], item_ids[b]
        out.append(Candidate(v_id, Reason.BOUNDARY, priority, float(p[v]), b_id))
        out.append(Candidate(b_id, Reason.BOUNDARY, priority, float(p[b]), v_id))
    return out


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
        p = checked_probabilities(p_violating, n)
        x = np.asarray(embeddings, dtype=np.float32)
        if n and x.shape != (n, self._embeddings.shape[1]):
            raise CurationError(
                f"embeddings have shape {x.shape}, expected ({n}, {self._embeddings.shape[1]})"
            )
        if n:  # refuse bad rows here, where the caller can dead-letter them, not at mining time
            unit_rows(x, n)
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
